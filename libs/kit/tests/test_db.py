"""The database wrapper: SQLite transactions queue in-process; a busy database is a 503."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError

from backhaul_kit.db import Database, DatabaseBusy
from backhaul_kit.http import install_error_handlers
from backhaul_kit.messaging.outbox import Outbox
from backhaul_kit.unit_of_work import UnitOfWork

from .conftest import effects, effects_metadata


@pytest.fixture
async def sqlite(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/kit.db")
    async with database.engine.begin() as connection:
        await connection.run_sync(effects_metadata.create_all)
    yield database
    await database.dispose()


async def test_concurrent_sqlite_transactions_queue_and_all_commit(sqlite):
    outbox = Outbox("kit-test")

    async def write(n: int) -> None:
        async with UnitOfWork(sqlite, outbox) as uow:
            await uow.session.execute(insert(effects).values(account_id=n, status="x"))
            await asyncio.sleep(0)  # let the others try to get in meanwhile

    await asyncio.gather(*(write(n) for n in range(60)))

    async with sqlite.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(effects)) == 60


async def test_a_transaction_that_waits_too_long_for_the_lock_is_refused(sqlite):
    sqlite.lock_timeout = 0.5
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with sqlite.transaction() as session:
            await session.execute(insert(effects).values(account_id=1, status="held"))
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    with pytest.raises(DatabaseBusy, match="stayed locked"):
        async with sqlite.transaction() as session:
            await session.execute(insert(effects).values(account_id=2, status="late"))
    release.set()
    await holder
    async with sqlite.transaction() as session:
        rows = (await session.execute(select(effects.c.status))).scalars().all()
    assert rows == ["held"]


@pytest.mark.parametrize(
    "error",
    [
        DatabaseBusy("the database stayed locked for 30 s; nothing was applied"),
        OperationalError("INSERT ...", {}, Exception("connection refused")),
    ],
)
async def test_a_busy_or_unreachable_database_is_a_503_to_retry(error):
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/things")
    async def make() -> None:
        raise error

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/things")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "unavailable"
    assert "not applied" in response.json()["message"]


async def test_savepoints_are_named_by_depth_and_still_roll_back_alone(database_url, tmp_path):
    """Nested units of work reuse the names sp_1, sp_2 (one prepared statement each, not
    one per savepoint) and an inner rollback still undoes only the inner block."""
    from sqlalchemy import event

    database = Database(database_url)
    async with database.engine.begin() as connection:
        await connection.run_sync(effects_metadata.create_all)
    statements: list[str] = []
    event.listen(
        database.engine.sync_engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: statements.append(statement),
    )
    outbox = Outbox("kit-test")
    try:
        async with UnitOfWork(database, outbox) as uow:
            for n in range(3):
                async with uow:
                    await uow.session.execute(insert(effects).values(account_id=n, status="kept"))
                with pytest.raises(ValueError, match="refused"):
                    async with uow:
                        await uow.session.execute(
                            insert(effects).values(account_id=n, status="undone")
                        )
                        async with uow:
                            await uow.session.execute(
                                insert(effects).values(account_id=n, status="inner")
                            )
                        raise ValueError("refused")
        async with database.transaction() as session:
            rows = (await session.execute(select(effects.c.status))).scalars().all()
        savepoints = {s for s in statements if "SAVEPOINT" in s.upper()}
    finally:
        await database.dispose()

    assert rows == ["kept", "kept", "kept"]
    assert savepoints == {
        "SAVEPOINT sp_1",
        "RELEASE SAVEPOINT sp_1",
        "ROLLBACK TO SAVEPOINT sp_1",
        "SAVEPOINT sp_2",
        "RELEASE SAVEPOINT sp_2",
    }


async def test_before_commit_hooks_run_once_last_and_go_with_a_rollback(sqlite):
    """A hook runs once, after the outermost block's work and inside its transaction; one
    registered in a rolled-back savepoint is dropped; one that raises rolls it all back."""
    outbox = Outbox("kit-test")
    calls: list[str] = []

    async def last(uow: UnitOfWork) -> None:
        calls.append("last")
        await uow.session.execute(insert(effects).values(account_id=0, status="last"))

    async def dropped(uow: UnitOfWork) -> None:
        calls.append("dropped")

    async with UnitOfWork(sqlite, outbox) as uow:
        for n in range(3):
            uow.before_commit(last)
            await uow.session.execute(insert(effects).values(account_id=n, status="work"))
        with pytest.raises(ValueError, match="refused"):
            async with uow:
                uow.before_commit(dropped)
                raise ValueError("refused")
        assert calls == []

    async def failing(uow: UnitOfWork) -> None:
        await uow.session.execute(insert(effects).values(account_id=9, status="undone"))
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        async with UnitOfWork(sqlite, outbox) as uow:
            await uow.session.execute(insert(effects).values(account_id=9, status="undone"))
            uow.before_commit(failing)

    async with sqlite.transaction() as session:
        rows = (await session.execute(select(effects.c.status))).scalars().all()
    assert calls == ["last"]
    assert rows == ["work", "work", "work", "last"]


@pytest.mark.postgres
async def test_pooled_postgres_connections_are_pinged_only_back_from_idle(
    postgres_database, monkeypatch
):
    """A connection handed back moments ago is used without a ping (three round trips on
    asyncpg); one that idled is pinged, and a dead one is replaced before any work."""
    from backhaul_kit import db as kit_db

    database = Database(postgres_database(), pool_size=1)
    pings: list[object] = []
    dialect = database.engine.sync_engine.dialect
    real_ping = dialect.do_ping

    def counting_ping(dbapi_connection):
        pings.append(dbapi_connection)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counting_ping)

    async def backend_pid() -> int:
        async with database.transaction() as session:
            return int((await session.execute(func.pg_backend_pid())).scalar_one())

    first = await backend_pid()
    for _ in range(5):
        assert await backend_pid() == first
    assert pings == []  # back from use moments ago each time

    monkeypatch.setattr(kit_db, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert await backend_pid() == first
    assert len(pings) == 1  # idle long enough: pinged, alive, kept

    # the server drops the pooled connection (a restart, an idle cut): the ping finds it
    # dead and the work runs on a new connection instead of failing
    killer = Database(database.url)
    async with killer.transaction() as session:
        await session.execute(select(func.pg_terminate_backend(first)))
    await killer.dispose()
    await asyncio.sleep(0.2)
    assert await backend_pid() != first
    assert len(pings) == 2
    await database.dispose()
