"""Alembic, once for every service: each service's env.py calls `run_env`.

A service's revisions live in `<service>/migrations/versions`; the outbox and inbox tables
are the kit's, on the branch labelled `messaging` in `backhaul_kit/messaging/versions`.
`alembic_config` puts both folders in `version_locations`, so every service runs the kit's
branch beside its own, and a database is brought to `heads` (one head per branch).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Literal

from alembic import command, context
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from backhaul_kit.db import UtcDateTime
from backhaul_kit.messaging.tables import messaging_metadata

MESSAGING_VERSIONS = Path(__file__).resolve().parent / "messaging" / "versions"
"""The kit's revisions: the outbox and inbox tables (branch label `messaging`)."""

MESSAGING_BRANCH = "messaging"


def _option(value: str) -> str:
    return value.replace("%", "%%")  # ConfigParser interpolation


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    """The Alembic configuration of the service whose scripts are in `migrations_dir`: its
    own revisions and the kit's `messaging` branch."""
    config = Config()
    config.set_main_option("script_location", _option(str(migrations_dir)))
    config.set_main_option("path_separator", "newline")
    config.set_main_option(
        "version_locations",
        _option("\n".join(str(path) for path in (migrations_dir / "versions", MESSAGING_VERSIONS))),
    )
    config.set_main_option("sqlalchemy.url", _option(database_url))
    return config


def service_head(config: Config) -> str:
    """The head of the service's own branch (the one revisions in its folder end at)."""
    script = ScriptDirectory.from_config(config)
    own = Path(script.dir, "versions").resolve()
    heads = [
        head
        for head in script.get_heads()
        if Path(script.get_revision(head).path).resolve().parent == own
    ]
    if len(heads) != 1:
        raise RuntimeError(f"expected one head in {own}, found {heads}")
    return heads[0]


def make_revision(migrations_dir: Path, database_url: str, message: str) -> None:
    """Autogenerate the service's next revision (on its own branch, in its own folder)
    against `database_url`, which must be at `heads`."""
    config = alembic_config(migrations_dir, database_url)
    command.revision(
        config,
        message=message,
        autogenerate=True,
        head=service_head(config),
        version_path=str(migrations_dir / "versions"),
    )


def upgrade(migrations_dir: Path, database_url: str, revision: str = "heads") -> None:
    """Bring a database to `revision`. Synchronous: call it outside a running event loop."""
    if database_url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(database_url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(migrations_dir, database_url), revision)


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Write the kit's column types as the plain SQLAlchemy types they store as, so
    migrations never import application code."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _not_messaging(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Autogenerate leaves the outbox and inbox alone: they are the kit's branch's, not the
    service's (a service revision must neither create nor drop them)."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table not in messaging_metadata.tables


def run_env(service_metadata: MetaData) -> None:
    """The body of a service's migrations/env.py."""
    targets = service_metadata
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("no database: set DATABASE_URL")
    batch = url.startswith("sqlite")

    if context.is_offline_mode():
        context.configure(
            url=url, target_metadata=targets, render_as_batch=batch, literal_binds=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    def migrate(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=targets,
            render_as_batch=batch,
            compare_type=True,
            render_item=_render_item,
            include_object=_not_messaging,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = async_engine_from_config(
            {"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool
        )
        async with engine.connect() as connection:
            await connection.run_sync(migrate)
        await engine.dispose()

    asyncio.run(run())
