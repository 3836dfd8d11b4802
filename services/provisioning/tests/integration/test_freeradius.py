"""The RADIUS tables against a real FreeRADIUS (Debian's, rlm_sql on PostgreSQL) and radclient.

The test starts its own FreeRADIUS on free ports in a temporary directory, reading the
provisioning database that the service writes. It is skipped only when the Debian packages
(freeradius, freeradius-postgresql, freeradius-utils) are not installed.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from backhaul_kit.testing import running
from provisioning.bootstrap import bootstrap
from provisioning.config import ProvisioningSettings

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

FREERADIUS = shutil.which("freeradius") or shutil.which("radiusd")
RADCLIENT = shutil.which("radclient")
QUERIES = Path("/etc/freeradius/3.0/mods-config/sql/main/postgresql/queries.conf")
DRIVER = Path("/usr/lib/freeradius/rlm_sql_postgresql.so")
SECRET = "backhaul-test"

missing = [
    what
    for what, present in (
        ("freeradius", FREERADIUS),
        ("radclient (freeradius-utils)", RADCLIENT),
        ("rlm_sql_postgresql (freeradius-postgresql)", DRIVER.exists()),
        ("the PostgreSQL queries.conf", QUERIES.exists()),
    )
    if not present
]
requires_freeradius = pytest.mark.skipif(
    bool(missing), reason=f"FreeRADIUS is not installed: missing {', '.join(missing)}"
)

RADIUSD_CONF = """
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {root}/log
raddbdir = {root}
radacctdir = {root}/radacct
name = freeradius
confdir = ${{raddbdir}}
modconfdir = ${{confdir}}/mods-config
run_dir = {root}/run
db_dir = {root}
libdir = /usr/lib/freeradius
pidfile = ${{run_dir}}/radiusd.pid
max_request_time = 10
cleanup_delay = 1
max_requests = 256
hostname_lookups = no

log {{
    destination = stdout
    auth = yes
}}

security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = no
}}

thread pool {{
    start_servers = 1
    max_servers = 2
    min_spare_servers = 1
    max_spare_servers = 1
    max_requests_per_server = 0
}}

client backhaul_test {{
    ipaddr = 127.0.0.1
    secret = {secret}
}}

modules {{
    # queries.conf uses %{{tolower:...}}, which rlm_expr provides.
    expr {{
    }}
    pap {{
        normalise = yes
    }}
    sql {{
        driver = "rlm_sql_postgresql"
        dialect = "postgresql"
        server = "{host}"
        port = {port}
        login = "{user}"
        password = "{password}"
        radius_db = "{database}"
        read_groups = yes
        read_clients = no
        acct_table1 = "radacct"
        acct_table2 = "radacct"
        postauth_table = "radpostauth"
        authcheck_table = "radcheck"
        groupcheck_table = "radgroupcheck"
        authreply_table = "radreply"
        groupreply_table = "radgroupreply"
        usergroup_table = "radusergroup"
        delete_stale_sessions = yes
        client_table = "nas"
        group_attribute = "SQL-Group"
        pool {{
            start = 1
            min = 1
            max = 2
            spare = 1
            uses = 0
            retry_delay = 1
            lifetime = 0
            idle_timeout = 60
        }}
        $INCLUDE ${{modconfdir}}/sql/main/postgresql/queries.conf
    }}
}}

server backhaul {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {auth_port}
    }}
    authorize {{
        sql
        pap
    }}
    authenticate {{
        Auth-Type PAP {{
            pap
        }}
    }}
    post-auth {{
    }}
}}
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FreeRadius:
    """A FreeRADIUS process of the test's own, and radclient to ask it."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.port = _free_udp_port()
        url = make_url(database_url)
        (root / "log").mkdir(parents=True)
        (root / "run").mkdir()
        (root / "radacct").mkdir()
        (root / "mods-config/sql/main/postgresql").mkdir(parents=True)
        shutil.copy(QUERIES, root / "mods-config/sql/main/postgresql/queries.conf")
        (root / "dictionary").write_text("")
        (root / "radiusd.conf").write_text(
            RADIUSD_CONF.format(
                root=root,
                secret=SECRET,
                host=url.host or "127.0.0.1",
                port=url.port or 5432,
                user=url.username or "postgres",
                password=url.password or "",
                database=url.database,
                auth_port=self.port,
            )
        )
        self.log = root / "radiusd.out"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        assert FREERADIUS is not None
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(  # noqa: ASYNC220 - a daemon the test owns
                [FREERADIUS, "-X", "-d", str(self.root)], stdout=out, stderr=subprocess.STDOUT
            )
        for _ in range(100):
            if "Ready to process requests" in self.log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                break
            await asyncio.sleep(0.1)
        raise AssertionError(f"FreeRADIUS did not start:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    async def authenticate(self, username: str, password: str) -> tuple[str, dict[str, str]]:
        """Send an Access-Request; returns the reply's code and its attributes."""
        assert RADCLIENT is not None
        process = await asyncio.create_subprocess_exec(
            RADCLIENT,
            "-x",
            "-r",
            "1",
            "-t",
            "5",
            f"127.0.0.1:{self.port}",
            "auth",
            SECRET,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        request = f'User-Name = "{username}", User-Password = "{password}"\n'
        output, _ = await process.communicate(request.encode())
        text = output.decode(errors="replace")
        code = (
            "Access-Accept"
            if "Received Access-Accept" in text
            else ("Access-Reject" if "Received Access-Reject" in text else "no answer")
        )
        attributes: dict[str, str] = {}
        received = text.split("Received Access-", 1)[-1] if "Received Access-" in text else ""
        for line in received.splitlines()[1:]:
            name, sep, value = line.strip().partition(" = ")
            if sep:
                attributes[name] = value.strip('"')
        return code, attributes


@asynccontextmanager
async def freeradius(root: Path, database_url: str) -> AsyncIterator[FreeRadius]:
    server = FreeRadius(root, database_url)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@requires_freeradius
async def test_freeradius_follows_status_and_disconnect(
    postgres_database, kafka_bootstrap, topic_prefix, tmp_path, ev
):
    database_url = postgres_database()
    settings = ProvisioningSettings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        kafka_topic_partitions=2,
    )
    runtime = bootstrap(settings)
    async with running(runtime) as client:
        await ev.deliver(runtime, ev.created(50, ev.ACTIVE))
        await ev.deliver(runtime, ev.service_added(50, 500, ev.data_service(20, 100_000, 20_000)))
        suspended = await client.post(
            "/radius-groups",
            json={
                "name": "suspended",
                "rule": {"status_ids": [ev.SUSPENDED.id]},
                "attributes": [{"attribute": "Mikrotik-Rate-Limit", "value": "64k/64k"}],
            },
        )
        assert suspended.status_code == 201, suspended.text
        pool = await client.post("/ip-pools", json={"name": "pppoe", "cidr": "100.64.0.0/24"})
        radius = await client.post(
            "/accounts/50/radius-accounts", json={"username": "ada@isp", "password": "s3cret"}
        )
        assert radius.status_code == 201, radius.text
        assigned = await client.post(
            "/accounts/50/ip-assignments",
            json={
                "pool_id": pool.json()["id"],
                "assignee": {"kind": "radius_account", "radius_account_id": radius.json()["id"]},
            },
        )
        assert assigned.status_code == 201, assigned.text

        async with freeradius(tmp_path / "raddb", database_url) as server:
            code, reply = await server.authenticate("ada@isp", "s3cret")
            assert code == "Access-Accept", server.log.read_text()[-3000:]
            assert reply["Framed-IP-Address"] == "100.64.0.1"
            assert reply["Mikrotik-Rate-Limit"] == "20000k/100000k"
            assert reply["WISPr-Bandwidth-Max-Down"] == "100000000"

            wrong, _ = await server.authenticate("ada@isp", "guess")
            assert wrong == "Access-Reject"

            await ev.deliver(runtime, ev.status_changed(50, ev.ACTIVE, ev.SUSPENDED))
            code, reply = await server.authenticate("ada@isp", "s3cret")
            assert code == "Access-Accept"
            assert reply["Mikrotik-Rate-Limit"] == "64k/64k"
            assert reply["Framed-IP-Address"] == "100.64.0.1"
            assert "WISPr-Bandwidth-Max-Down" not in reply

            await ev.deliver(runtime, ev.disconnected(50, previous=ev.SUSPENDED))
            code, reply = await server.authenticate("ada@isp", "s3cret")
            assert code == "Access-Reject"
            assert "Framed-IP-Address" not in reply
