"""The storms: statuses into a blocked status, disconnects as fast as accepted, and a paced
disconnect run for latency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.fanout.api import Urls, bounded, client, ok


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)

    return {
        "count": len(ordered),
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(ordered[-1], 1),
        "mean": round(sum(ordered) / len(ordered), 1),
    }


def sustained_rate(times: list[float], low: float = 0.1, high: float = 0.9) -> float:
    """Completions per second between the 10th and the 90th percentile of completion."""
    ordered = sorted(times)
    if len(ordered) < 10:
        span = ordered[-1] - ordered[0] if len(ordered) > 1 else 0.0
        return len(ordered) / span if span > 0 else 0.0
    a, b = int(low * len(ordered)), int(high * len(ordered)) - 1
    span = ordered[b] - ordered[a]
    return (b - a) / span if span > 0 else 0.0


# -- accounts' own record of the fan-out -------------------------------------------------------


def _epoch(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


@dataclass
class Progress:
    """Accounts' disconnection steps, read from its database by aggregate queries.

    One COUNT a second while a storm runs (not one request per account), and one read of
    the steps' timestamps afterwards: the time accounts recorded each step is when the
    disconnect became "complete" in its progress view.
    """

    url: str
    engine: AsyncEngine | None = None

    async def __aenter__(self) -> Progress:
        self.engine = create_async_engine(self.url)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.engine is not None:
            await self.engine.dispose()

    async def counts(self) -> dict[str, int]:
        assert self.engine is not None
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT state, count(*) FROM disconnection_steps GROUP BY state")
            )
            return {state: int(n) for state, n in rows.all()}

    async def finished(self, ids: list[str]) -> dict[str, tuple[float | None, dict[str, str]]]:
        """Per disconnection: when its last step was recorded (None if not all done)."""
        assert self.engine is not None
        wanted = set(ids)
        out: dict[str, tuple[float | None, dict[str, str]]] = {}
        by: dict[str, list[tuple[str, str, Any]]] = {}
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT disconnection_id, step, state, updated_at FROM disconnection_steps")
            )
            for disconnection_id, step, state, updated_at in rows.all():
                key = str(disconnection_id).replace("-", "")
                by.setdefault(key, []).append((step, state, updated_at))
        for did in wanted:
            steps = by.get(did.replace("-", ""), [])
            states = {step: state for step, state, _ in steps}
            done = bool(steps) and all(state == "done" for _, state, _ in steps)
            out[did] = (max(_epoch(at) for _, _, at in steps) if done else None, states)
        return out


async def wait_complete(
    progress: Progress,
    expected_steps: int,
    baseline: dict[str, int],
    timeout: float,
    say: Callable[[str], None],
) -> float:
    started = time.monotonic()
    last_report = started
    while True:
        counts = await progress.counts()
        done = counts.get("done", 0) - baseline.get("done", 0)
        failed = counts.get("failed", 0) - baseline.get("failed", 0)
        if done + failed >= expected_steps:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{done}/{expected_steps} steps done after {timeout:.0f} s")
        if time.monotonic() - last_report > 10:
            say(f"  steps done {done}/{expected_steps}, failed {failed}")
            last_report = time.monotonic()
        await asyncio.sleep(1.0)


# -- disconnects -------------------------------------------------------------------------------


@dataclass
class Disconnects:
    requested: dict[int, float] = field(default_factory=dict)
    responded: dict[int, float] = field(default_factory=dict)
    disconnection: dict[int, str] = field(default_factory=dict)
    steps: int = 3
    errors: list[str] = field(default_factory=list)


async def disconnect_all(
    urls: Urls, ids: list[int], concurrency: int, on_accepted: Callable[[int], None] | None = None
) -> Disconnects:
    """As fast as accounts accepts: `concurrency` requests always in flight."""
    result = Disconnects()
    async with client(urls.accounts, concurrency) as accounts:

        async def one(account_id: int) -> None:
            result.requested[account_id] = time.time()
            body = ok(await accounts.post(f"/accounts/{account_id}/disconnect", json={}), 201)
            result.responded[account_id] = time.time()
            result.disconnection[account_id] = body["id"]
            result.steps = len(body.get("steps") or []) or 3
            if on_accepted is not None:
                on_accepted(len(result.responded))

        _, result.errors = await bounded(ids, one, concurrency)
    return result


async def disconnect_paced(urls: Urls, ids: list[int], rate: float) -> Disconnects:
    """Open loop: request i leaves at start + i / rate whatever the answers do."""
    result = Disconnects()
    async with client(urls.accounts, 256) as accounts:
        gate = asyncio.Semaphore(512)

        async def one(account_id: int) -> None:
            async with gate:
                try:
                    result.requested[account_id] = time.time()
                    response = await accounts.post(f"/accounts/{account_id}/disconnect", json={})
                    body = ok(response, 201)
                    result.responded[account_id] = time.time()
                    result.disconnection[account_id] = body["id"]
                    result.steps = len(body.get("steps") or []) or 3
                except Exception as exc:
                    result.errors.append(repr(exc)[:300])

        tasks = []
        started = time.monotonic()
        for index, account_id in enumerate(ids):
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(account_id)))
        await asyncio.gather(*tasks)
    return result


# -- status storm ------------------------------------------------------------------------------


async def status_storm(
    urls: Urls,
    ids: list[int],
    active_list_id: int,
    concurrency: int,
    say: Callable[[str], None],
    poll_interval: float = 0.1,
) -> dict[str, Any]:
    """Every account into a blocked status; a router follows the changes feed until each
    account's address has left the active list and joined the blocked one."""
    async with client(urls.accounts) as accounts:
        created = await accounts.post(
            "/account-statuses",
            json={"name": "Blocked", "activates_account": False, "colour": "#B71C1C"},
        )
        if created.status_code == 201:
            blocked = created.json()
        else:
            statuses = ok(await accounts.get("/account-statuses"))
            blocked = next(s for s in statuses if s["name"] == "Blocked")
    async with client(urls.provisioning) as provisioning:
        blocked_list = ok(
            await provisioning.post(
                "/address-lists",
                json={"name": "bench-blocked", "rule": {"status_ids": [blocked["id"]]}},
            ),
            201,
        )
        cursor = 0
        while True:  # the router starts where the feed is now
            page = ok(
                await provisioning.get(
                    "/address-lists/changes", params={"since": cursor, "limit": 10000}
                )
            )
            cursor = page["cursor"]
            if not page["changes"]:
                break

        wanted = set(ids)
        added: dict[int, float] = {}
        removed: dict[int, float] = {}
        polls = 0

        async def router(deadline: float) -> None:
            nonlocal cursor, polls
            while (len(added) < len(wanted) or len(removed) < len(wanted)) and (
                time.monotonic() < deadline
            ):
                page = ok(
                    await provisioning.get(
                        "/address-lists/changes", params={"since": cursor, "limit": 10000}
                    )
                )
                polls += 1
                seen = time.time()
                for change in page["changes"]:
                    account = change.get("account_id")
                    if account not in wanted:
                        continue
                    if change["address_list_id"] == blocked_list["id"] and (
                        change["action"] == "add"
                    ):
                        added.setdefault(account, seen)
                    elif change["address_list_id"] == active_list_id and (
                        change["action"] == "remove"
                    ):
                        removed.setdefault(account, seen)
                cursor = page["cursor"]
                if len(page["changes"]) < 10000:
                    await asyncio.sleep(poll_interval)

        deadline = time.monotonic() + 300 + len(ids) * 0.5
        watcher = asyncio.create_task(router(deadline))
        responded: dict[int, float] = {}
        started = time.time()
        async with client(urls.accounts, concurrency) as accounts:

            async def change(account_id: int) -> None:
                for attempt in range(5):  # the same status again is a no-op
                    try:
                        response = await accounts.post(
                            f"/accounts/{account_id}/status",
                            json={"status_id": blocked["id"], "reason": "bench: delinquent"},
                        )
                    except httpx.TransportError:
                        if attempt == 4:
                            raise
                        await asyncio.sleep(0.2)
                        continue
                    ok(response)
                    responded[account_id] = time.time()
                    return

            _, errors = await bounded(ids, change, concurrency)
        accepted = time.time()
        say(
            f"  {len(responded)} status changes accepted in {accepted - started:.1f} s "
            f"({len(responded) / max(accepted - started, 1e-9):.0f}/s)"
        )
        await watcher
    visible = {a: max(added[a], removed[a]) for a in wanted if a in added and a in removed}
    latencies = [(visible[a] - responded[a]) * 1000 for a in visible if a in responded]
    last = max(visible.values()) if visible else time.time()
    return {
        "status_changes": len(ids),
        "accepted": len(responded),
        "errors": len(errors),
        "error_samples": errors[:3],
        "accept_seconds": round(accepted - started, 2),
        "accept_per_s": round(len(responded) / max(accepted - started, 1e-9), 1),
        "all_visible_seconds": round(last - started, 2),
        "visible": len(visible),
        "visible_per_s": round(len(visible) / max(last - started, 1e-9), 1),
        "latency_ms": percentiles(latencies),
        "router_poll_interval_s": poll_interval,
        "router_polls": polls,
        "blocked_status_id": blocked["id"],
        "_curve": sorted(v - started for v in visible.values()),
    }
