"""A throwaway PostgreSQL cluster from Debian's binaries, for tests without Docker.

`make test` installs the `postgresql` package when `initdb` is missing. The cluster runs as
an unprivileged user when started by root (PostgreSQL refuses to run as root), listens on
127.0.0.1 only, and trusts local connections: it is for tests, never for data.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from backhaul_devstack.kafka_broker import free_port, port_open


async def create_database(admin_url: str, prefix: str = "test") -> str:
    """A fresh, empty database `<prefix>_<random>` on the server of `admin_url`; its URL."""
    import uuid

    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def find_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    raise RuntimeError(f"{name} not found: install Debian's postgresql package (make test does)")


@dataclass
class PostgresCluster:
    port: int = field(default_factory=free_port)
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="backhaul-pg-")))
    user: str | None = None
    # extra server settings, e.g. {"shared_preload_libraries": "pg_stat_statements"}
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.user is None and os.geteuid() == 0:
            self.user = "postgres" if _user_exists("postgres") else "nobody"

    @property
    def admin_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.data_dir, self.user, self.user)
        pgdata = self.data_dir / "pgdata"
        if not pgdata.exists():
            subprocess.run(  # noqa: S603 - fixed command
                [
                    find_bin("initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                user=self.user,
                group=self.user,
            )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port}"
            f" -c unix_socket_directories='{self.data_dir}'"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        ) + "".join(f" -c {key}={value}" for key, value in self.settings.items())
        subprocess.run(  # noqa: S603 - fixed command
            [
                find_bin("pg_ctl"),
                "-D",
                str(pgdata),
                "-o",
                options,
                "-l",
                str(self.data_dir / "postgres.log"),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            user=self.user,
            group=self.user,
        )
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not start")
            time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: roll back and disconnect every session; `immediate`: a
        crash, recovered at the next start). The data directory stays: `start()` brings the
        same cluster back on the same port; `destroy()` removes it."""
        pgdata = self.data_dir / "pgdata"
        if pgdata.exists():
            subprocess.run(  # noqa: S603 - fixed command
                [find_bin("pg_ctl"), "-D", str(pgdata), "-m", mode, "-w", "stop"],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                user=self.user,
                group=self.user,
            )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Create a database and return its SQLAlchemy async URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> None:
        """Run `sql` as the superuser (set-up statements; results are not read)."""
        subprocess.run(  # noqa: S603 - fixed command
            [
                find_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
