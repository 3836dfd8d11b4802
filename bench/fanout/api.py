"""HTTP to the services: the token, bounded concurrency, and the accounts' setup."""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def auth_headers() -> dict[str, str]:
    """A development bearer token, from whichever helper this checkout has.

    Without either helper the APIs have no authentication yet; the header is then harmless.
    """
    token: str | None = None
    try:
        helper = importlib.import_module("backhaul_devstack.__main__").development_token
        token = str(helper())
    except (ImportError, AttributeError, TypeError):
        try:
            issue = importlib.import_module("backhaul_kit.auth").issue_token
            secret = importlib.import_module("backhaul_kit.config").DEV_JWT_SECRET
            token = str(issue(secret))
        except (ImportError, AttributeError, TypeError):
            token = "no-auth-in-this-checkout"  # noqa: S105 - not a secret
    return {"Authorization": f"Bearer {token}", "X-Actor": "bench@backhaul"}


def client(base_url: str, concurrency: int = 64) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=base_url, headers=auth_headers(), timeout=60, limits=limits)


class Refused(RuntimeError):
    pass


def ok(response: httpx.Response, *expected: int) -> Any:
    if response.status_code not in (expected or (200,)):
        raise Refused(
            f"{response.request.method} {response.request.url}: "
            f"{response.status_code} {response.text[:300]}"
        )
    return response.json()


async def bounded(
    items: Iterable[T], work: Callable[[T], Awaitable[Any]], concurrency: int
) -> tuple[list[Any], list[str]]:
    """Run `work` on every item with at most `concurrency` in flight; results and errors."""
    iterator = iter(items)
    results: list[Any] = []
    errors: list[str] = []

    async def worker() -> None:
        for item in iterator:
            try:
                results.append(await work(item))
            except Exception as exc:  # counted and reported, the run goes on
                errors.append(repr(exc)[:300])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, errors


async def post_until_known(
    http: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    deadline_s: float = 120.0,
    retries: list[int] | None = None,
) -> Any:
    """POST until the service knows the account (it learns of it from an event); each
    answer that it does not yet is counted in `retries[0]`."""
    deadline = time.monotonic() + deadline_s
    pause = 0.05
    while True:
        try:
            response = await http.post(url, json=body)
        except httpx.TransportError:  # a keep-alive connection the server just closed
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(pause)
            continue
        if response.status_code == 201:
            return response.json()
        if response.status_code not in (404, 409, 422) or time.monotonic() > deadline:
            return ok(response, 201)
        if retries is not None:
            retries[0] += 1
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


@dataclass
class Urls:
    accounts: str
    billing: str
    provisioning: str
    notifications: str
    scheduler: str


@dataclass
class Fixture:
    """What every benchmark account needs: a status to start in, a service, a pool, a list."""

    active_status_id: int
    service_id: int
    pool_id: int
    active_list_id: int
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    addresses: dict[int, str] = field(default_factory=dict)
    serviced: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


async def prepare(urls: Urls, total_accounts: int) -> Fixture:
    async with client(urls.accounts) as accounts:
        statuses = ok(await accounts.get("/account-statuses"))
    active = next(s for s in statuses if s["name"] == "Active")
    tag = uuid.uuid4().hex[:6]
    async with client(urls.billing) as billing:
        service = ok(
            await billing.post(
                "/services",
                json={
                    "name": f"Fibre 500 bench {tag}",
                    "kind": "recurring",
                    "price": "49.99",
                    "currency": "USD",
                },
            ),
            201,
        )
    cidr = "100.64.0.0/16" if total_accounts < 60_000 else "100.64.0.0/10"
    async with client(urls.provisioning) as provisioning:
        pool = ok(
            await provisioning.post("/ip-pools", json={"name": f"bench {tag}", "cidr": cidr}),
            201,
        )
        active_list = ok(
            await provisioning.post(
                "/address-lists",
                json={"name": f"bench-active-{tag}", "rule": {"activating": True}},
            ),
            201,
        )
    return Fixture(active["id"], service["id"], pool["id"], active_list["id"])


async def create_accounts(
    urls: Urls,
    fixture: Fixture,
    ids: list[int],
    concurrency: int,
    say: Callable[[str], None],
    *,
    staged: bool = False,
) -> None:
    """Each account with a serviceable address and a primary contact, then a service and an IP.

    Pipelined by default, as an onboarding application would do it: `concurrency` accounts
    at a time, each created, then given its service and its IP at once (billing and
    provisioning answer 404 until AccountCreated reaches them; those answers are retried
    and counted). `staged`: all accounts, then all services, then all IPs, each stage with
    `concurrency` in flight (the earlier benchmark's way; it leaves two APIs idle).
    """
    retries = {"add_service": [0], "assign_ip": [0]}

    async with (
        client(urls.accounts, concurrency) as accounts,
        client(urls.billing, concurrency) as billing,
        client(urls.provisioning, concurrency) as provisioning,
    ):

        async def create(account_id: int) -> None:
            for attempt in range(5):
                try:
                    response = await accounts.post(
                        "/accounts", json=_account_body(account_id, fixture.active_status_id)
                    )
                except httpx.TransportError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2)
                    continue
                if response.status_code == 409 and attempt:  # the lost answer was a 201
                    return
                ok(response, 201)
                return

        async def add_service(account_id: int) -> None:
            await post_until_known(
                billing,
                f"/accounts/{account_id}/services",
                {"service_id": fixture.service_id, "quantity": 1},
                retries=retries["add_service"],
            )
            fixture.serviced.add(account_id)

        async def assign_ip(account_id: int) -> None:
            body = await post_until_known(
                provisioning,
                f"/accounts/{account_id}/ip-assignments",
                {"pool_id": fixture.pool_id},
                retries=retries["assign_ip"],
            )
            fixture.addresses[account_id] = body["address"]

        def record(stage: str, count: int, errors: list[str], elapsed: float) -> None:
            previous = fixture.stages.get(stage, {"seconds": 0.0, "count": 0, "errors": 0})
            fixture.stages[stage] = {
                "seconds": round(previous["seconds"] + elapsed, 2),
                "count": previous["count"] + count - len(errors),
                "errors": previous["errors"] + len(errors),
                "not_yet_known_retries": retries.get(stage, [0])[0],
            }
            fixture.errors.extend(errors[:5])
            first_error = f", errors: {errors[0]}" if errors else ""
            say(
                f"  {stage}: {count - len(errors)}/{count} in {elapsed:.1f} s "
                f"({count / max(elapsed, 1e-9):.0f}/s){first_error}"
            )

        if not staged:

            async def onboard(account_id: int) -> None:
                await create(account_id)
                await asyncio.gather(add_service(account_id), assign_ip(account_id))

            started = time.monotonic()
            _, errors = await bounded(ids, onboard, concurrency)
            record("pipelined", len(ids), errors, time.monotonic() - started)
            for stage in retries:
                fixture.stages[stage] = {"not_yet_known_retries": retries[stage][0]}
            return

        for stage, work in (
            ("create_account", create),
            ("add_service", add_service),
            ("assign_ip", assign_ip),
        ):
            started = time.monotonic()
            _, errors = await bounded(ids, work, concurrency)
            record(stage, len(ids), errors, time.monotonic() - started)


def _account_body(account_id: int, status_id: int) -> dict[str, Any]:
    return {
        "id": account_id,
        "name": f"Bench Customer {account_id}",
        "status_id": status_id,
        "serviceable_address": {
            "line1": f"{account_id} Bench Street",
            "city": "Springfield",
            "postal_code": "99999",
            "country": "US",
        },
        "primary_contact": {
            "name": f"Customer {account_id}",
            "email": f"customer{account_id}@bench.example",
        },
    }
