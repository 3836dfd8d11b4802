"""Database statements per disconnect, per service, on PostgreSQL (pg_stat_statements).

Each statement is at least one round trip from the service to the server, and the
profiles say round trips, not computation, dominate the services' CPU. The cluster is
started with the extension loaded; the benchmark's own queries (its progress poller, this
module) run as another role, `bench`, so only the services' statements are counted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from backhaul_devstack.postgres import PostgresCluster

SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "top",
    "pg_stat_statements.track_utility": "on",
    "pg_stat_statements.max": "5000",
}
OBSERVER = "bench"


def prepare(cluster: PostgresCluster) -> None:
    cluster.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    cluster.psql(f"CREATE ROLE {OBSERVER} LOGIN SUPERUSER")


def as_observer(url: str) -> str:
    """`url` as the benchmark's own role, whose statements are not counted."""
    return make_url(url).set(username=OBSERVER).render_as_string(hide_password=False)


async def _run(admin_url: str, sql: str) -> list[Any]:
    engine = create_async_engine(as_observer(admin_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            return list(await connection.execute(text(sql)))
    finally:
        await engine.dispose()


async def reset(admin_url: str) -> None:
    await _run(admin_url, "SELECT pg_stat_statements_reset()")


async def per_disconnect(
    admin_url: str, databases: dict[str, str], disconnects: int, top: int = 8
) -> dict[str, Any]:
    """For each service (`databases`: service -> database name), the statements it ran per
    disconnect since `reset`, in all and for its most frequent ones."""
    rows = await _run(
        admin_url,
        "SELECT d.datname, s.query, s.calls FROM pg_stat_statements s"
        " JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.userid"
        f" WHERE r.rolname <> '{OBSERVER}'",
    )
    by_database: dict[str, list[tuple[str, int]]] = {}
    for datname, query, calls in rows:
        by_database.setdefault(datname, []).append((" ".join(query.split())[:120], int(calls)))
    n = max(disconnects, 1)
    out: dict[str, Any] = {}
    for service, datname in databases.items():
        found = sorted(by_database.get(datname, []), key=lambda row: -row[1])
        out[service] = {
            "statements": round(sum(calls for _, calls in found) / n, 2),
            "top": [{"query": q, "per_disconnect": round(c / n, 2)} for q, c in found[:top]],
        }
    out["all_services"] = round(sum(v["statements"] for v in out.values()), 2)
    return out
