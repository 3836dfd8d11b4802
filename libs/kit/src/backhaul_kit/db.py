"""The async SQLAlchemy engine and transactions: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import DateTime, Index, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC when it comes back.

    PostgreSQL keeps the offset (timestamptz); SQLite stores text without one, so a plain
    DateTime(timezone=True) reads back naive there. Naive values are refused on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: use a timezone-aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def partial_index(name: str, *columns: str, where: str, unique: bool = False) -> Index:
    """An index over the rows matching `where`, on PostgreSQL and SQLite alike (the clause
    must be valid SQL on both)."""
    return Index(
        name,
        *columns,
        unique=unique,
        postgresql_where=text(where),
        sqlite_where=text(where),
    )


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


_SAVEPOINTS = "backhaul_savepoints"


def _name_savepoints_by_depth(engine: AsyncEngine) -> None:
    """Name savepoints by their depth (sp_1, sp_2, ...) instead of SQLAlchemy's ever-growing
    sequence (sa_savepoint_1, _2, ... _500 in a consumer batch of 500 events).

    Every distinct statement text is a new prepared statement: on PostgreSQL (asyncpg) an
    extra round trip each time and the eviction of the statements that matter from the
    per-connection cache; on SQLite a cache miss too. By depth, the three savepoint
    statements are always the same few. Reusing a name is safe: a newer savepoint of the
    same name hides the older one, and SQLAlchemy releases and rolls back in LIFO order.
    """
    dialect = engine.sync_engine.dialect

    def stack(connection: Any) -> list[str]:
        return cast(list[str], connection.info.setdefault(_SAVEPOINTS, []))

    def do_savepoint(connection: Any, name: str) -> None:
        names = stack(connection)
        names.append(name)
        connection.exec_driver_sql(f"SAVEPOINT sp_{len(names)}")

    def _pop(connection: Any, name: str) -> int:
        names = stack(connection)
        depth = names.index(name) + 1
        del names[depth - 1 :]
        return depth

    def do_release_savepoint(connection: Any, name: str) -> None:
        connection.exec_driver_sql(f"RELEASE SAVEPOINT sp_{_pop(connection, name)}")

    def do_rollback_to_savepoint(connection: Any, name: str) -> None:
        connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT sp_{_pop(connection, name)}")

    dialect.do_savepoint = do_savepoint  # type: ignore[method-assign]
    dialect.do_release_savepoint = do_release_savepoint  # type: ignore[method-assign]
    dialect.do_rollback_to_savepoint = do_rollback_to_savepoint  # type: ignore[method-assign]

    @event.listens_for(engine.sync_engine, "begin")
    def _fresh_stack(connection: Any) -> None:
        connection.info[_SAVEPOINTS] = []


_CHECKED_IN_AT = "backhaul_checked_in_at"
PING_AFTER_IDLE_SECONDS = 2.0


def _ping_connections_back_from_idle(engine: AsyncEngine) -> None:
    """Ping a pooled connection before use only if it sat idle for a while.

    SQLAlchemy's `pool_pre_ping` pings on every checkout, and with asyncpg a ping is three
    round trips (BEGIN, an empty statement, ROLLBACK): on a busy consumer or API that was
    more round trips than the work itself. A connection handed back moments ago is as
    alive as the ping would find it; one that idled is where a database restart or a
    firewall's idle cut shows, so only those are pinged. A connection that dies within
    the idle window fails its statement instead: SQLAlchemy then invalidates the whole
    pool, the consumer replays its batch and the API answers 503 with Retry-After.
    """
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _remember_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return  # just connected, or back from use moments ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError(f"pooled connection is dead: {error}") from error
        if not alive:
            raise DisconnectionError("pooled connection is dead")


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An engine tuned for the backend.

    SQLite: WAL, a busy timeout, foreign keys, and BEGIN IMMEDIATE so a transaction takes
    the write lock up front instead of failing with SQLITE_BUSY when it upgrades from a read.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, echo=echo)
        _ping_connections_back_from_idle(engine)
        _name_savepoints_by_depth(engine)
        return engine
    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    _name_savepoints_by_depth(engine)
    return engine


class DatabaseBusy(TimeoutError):
    """The database's write lock stayed taken for longer than the wait allows."""


class Database:
    """One service's database: its engine and the transactions handlers run in."""

    def __init__(self, url: str, *, pool_size: int = 10, lock_timeout: float = 30.0) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one write lock per file and every transaction here takes it (BEGIN
        # IMMEDIATE). Sessions of this process queue for it on this lock, in order, instead
        # of in SQLite's busy handler, which polls with sleeps of up to 100 ms each.
        self._writer = asyncio.Lock() if self.is_sqlite else None
        self.lock_timeout = lock_timeout

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    @asynccontextmanager
    async def sessions(self) -> AsyncIterator[AsyncSession]:
        """A session (it begins its transaction on first use). Open one at a time per task:
        on SQLite a second one in the same task would wait for the first."""
        if self._writer is None:
            async with self._sessions() as session:
                yield session
            return
        # asyncio.timeout, not wait_for: Python 3.11's wait_for runs the acquire as a task of
        # its own and, cancelled as it completes, either swallows the cancellation (a worker
        # that never stops) or leaves the lock held by nobody.
        try:
            async with asyncio.timeout(self.lock_timeout):
                await self._writer.acquire()
        except TimeoutError:
            raise DatabaseBusy(
                f"the database stayed locked for {self.lock_timeout:g} s; nothing was applied"
            ) from None
        try:
            async with self._sessions() as session:
                yield session
        finally:
            self._writer.release()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits when the block ends and rolls back if it raises."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
