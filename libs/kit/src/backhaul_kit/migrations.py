"""Alembic, once for every service: each service's env.py calls `run_env`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Literal

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from backhaul_kit.db import UtcDateTime
from backhaul_kit.messaging.tables import messaging_metadata


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(migrations_dir: Path, database_url: str, revision: str = "head") -> None:
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


def run_env(service_metadata: MetaData) -> None:
    """The body of a service's migrations/env.py."""
    targets = [service_metadata, messaging_metadata]
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
