"""A restartable Backhaul for fault tests: its own Kafka, five service processes, a storm
of disconnects and status changes, and the exactly-once checks after it.

Nothing here is mocked: processes are SIGKILLed and restarted, the broker is SIGKILLed and
restarted, and every check reads the services' own APIs, the SMTP sink and Kafka.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from backhaul_devstack.kafka_broker import KafkaBroker, free_port
from backhaul_devstack.postgres import PostgresCluster
from backhaul_devstack.smtp_sink import read_messages, read_repeats
from backhaul_devstack.stack import SERVICES, ServiceProcess, Stack


def _token() -> str:
    try:
        from backhaul_devstack.__main__ import development_token

        return development_token("chaos@isp")
    except ImportError:  # before bearer tokens existed
        return "none"


AUTH = {"Authorization": f"Bearer {_token()}"}
STORM_SIZE = int(os.environ.get("RELIABILITY_N", "2000"))


@dataclass
class Figures:
    scenario: str
    database: str = "sqlite"
    accounts: int = 0
    disconnects: int = 0
    status_changes: int = 0
    kills: int = 0
    replica_starts: int = 0
    replica_stops: int = 0
    replica_events: int = 0  # events the extra replicas handled before they were stopped
    rebalances: int = 0  # new partition assignments of the services' first processes
    database_outages: int = 0
    database_outage_seconds: float = 0.0
    events: int = 0
    lost: int = 0
    duplicated: int = 0
    dead_letters: int = 0
    # The notifications service's EMAIL_UNKNOWN_OUTCOME, and the repeats the mail sink
    # dropped (with `drop_repeats`: resends of a message it already held).
    email_unknown_outcome: str = "close"
    email_repeats_dropped: int = 0
    storm_seconds: float = 0.0
    recovery_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class Cluster:
    """Kafka plus the five services, each a process that can be killed and restarted.

    `database="postgresql"` puts the services' databases on PostgreSQL (one database per
    service, created before they start); the services in `own_postgres` get a PostgreSQL
    cluster of their own, which `stop_database` can take down without touching the others.
    `service_env` adds settings for one service's processes (replicas and restarts too);
    `drop_repeats` makes the mail sink a relay that stores a repeated message only once.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        database: str = "sqlite",
        own_postgres: tuple[str, ...] = (),
        service_env: dict[str, dict[str, str]] | None = None,
        drop_repeats: bool = False,
    ) -> None:
        if database not in ("sqlite", "postgresql"):
            raise ValueError(f"unknown database {database!r}")
        if own_postgres and database != "postgresql":
            raise ValueError("own_postgres needs database='postgresql'")
        self.root = root or Path(tempfile.mkdtemp(prefix="backhaul-chaos-"))
        self.database = database
        self.own_postgres = own_postgres
        self.service_env = service_env or {}
        self.drop_repeats = drop_repeats
        self.broker = KafkaBroker(port=free_port(), data_dir=self.root / "kafka")
        self.stack: Stack | None = None
        self.postgres: dict[str, PostgresCluster] = {}  # "shared" and one per own_postgres
        self.kills = 0
        self.replica_starts = 0
        self.replica_stops = 0
        self.replica_events = 0
        self.replica_stops_forced = 0  # SIGTERMs that had to become SIGKILLs after 15 s

    def start(self) -> None:
        self.broker.start()
        self.stack = Stack(
            root=self.root,
            kafka_bootstrap=self.broker.bootstrap_servers,
            ports={name: free_port() for name in SERVICES},
            smtp_port=free_port(),
            mail_http_port=free_port(),
            extra_env={"LOG_LEVEL": "WARNING", "SCHEDULER_POLL_INTERVAL_SECONDS": "0.2"},
            service_extra_env=self.service_env,
            drop_repeats=self.drop_repeats,
            database_urls=self._create_databases(),
        )
        self.stack.start(timeout=180)

    def _create_databases(self) -> dict[str, str]:
        """One PostgreSQL database per service, on the shared cluster or the service's own."""
        if self.database != "postgresql":
            return {}
        urls: dict[str, str] = {}
        for name in SERVICES:
            key = name if name in self.own_postgres else "shared"
            if key not in self.postgres:
                self.postgres[key] = PostgresCluster()
                self.postgres[key].start()
            urls[name] = self.postgres[key].create_database(name)
        return urls

    def stop(self) -> None:
        try:
            if self.stack is not None:
                self.stack.stop()
            self.broker.stop()
        finally:
            for cluster in self.postgres.values():
                cluster.destroy()

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    def url(self, service: str) -> str:
        assert self.stack is not None
        return self.stack.url(service)

    @property
    def mail_dir(self) -> Path:
        assert self.stack is not None
        return self.stack.mail_dir

    @property
    def email_unknown_outcome(self) -> str:
        """The notifications processes' EMAIL_UNKNOWN_OUTCOME (the service's default: close)."""
        return self.service_env.get("notifications", {}).get("EMAIL_UNKNOWN_OUTCOME", "close")

    def kill(self, service: str) -> None:
        assert self.stack is not None
        self.stack.services[service].kill()
        self.kills += 1

    def restart(self, service: str, timeout: float = 120) -> None:
        assert self.stack is not None
        old = self.stack.services[service]
        fresh = ServiceProcess(old.name, old.port, old.env, old.log_path, old.role)
        fresh.start()
        self.stack.services[service] = fresh
        fresh.wait_ready(timeout)

    def start_replica(self, service: str, timeout: float = 120) -> ServiceProcess:
        """One more worker of `service` in its consumer group (its own port, the same
        database), ready: it has joined the group, so the group has rebalanced."""
        assert self.stack is not None
        replica = self.stack.start_replica(service, role="worker")
        self.replica_starts += 1
        replica.wait_ready(timeout)
        self._timeline(f"ready {replica.log_path.name}")
        return replica

    def stop_replica(self, replica: ServiceProcess, *, kill: bool) -> None:
        """SIGKILL (the group notices at the session timeout) or SIGTERM (it leaves the group
        at once); either way its partitions move to the other members. What it handled
        first is added to `replica_events`."""
        assert self.stack is not None
        self.replica_events += handled_events(replica.url)
        self._timeline(f"{'SIGKILL' if kill else 'SIGTERM'} {replica.log_path.name}")
        if kill:
            replica.kill()
        else:
            replica.stop()
            assert replica.process is not None
            if replica.process.returncode == -signal.SIGKILL:
                self.replica_stops_forced += 1
        self._timeline(f"gone {replica.log_path.name}")
        self.stack.replicas.remove(replica)
        self.replica_stops += 1

    def _timeline(self, what: str) -> None:
        """logs/replicas.log: when each replica was ready, signalled and gone (UTC), to set
        beside the services' logs."""
        with (self.root / "logs" / "replicas.log").open("a") as out:
            out.write(f"{datetime.now(UTC):%H:%M:%S.%f} {what}\n")

    def rebalances(self, services: list[str]) -> int:
        """Partition assignments the first process of each service received after its
        first one (the consumer client logs each), i.e. the rebalances it went through."""
        assert self.stack is not None
        seen = 0
        for service in services:
            log = self.stack.services[service].log_path
            assigned = log.read_text(errors="replace").count("assigned to partitions")
            seen += max(assigned - 1, 0)
        return seen

    def database_of(self, service: str) -> PostgresCluster:
        if service not in self.postgres:
            raise ValueError(f"{service} has no PostgreSQL cluster of its own")
        return self.postgres[service]

    def stop_database(self, service: str) -> None:
        """Take `service`'s own PostgreSQL down: a fast shutdown ends every session and
        refuses new ones; the data directory stays for `start_database`."""
        self.database_of(service).stop(mode="fast")

    def start_database(self, service: str) -> None:
        self.database_of(service).start()

    def kill_kafka(self) -> None:
        self.broker.kill()
        self.kills += 1

    def restart_kafka(self) -> None:
        self.broker.process = None
        self.broker.start()


def handled_events(url: str) -> int:
    """How many events the process at `url` has handled (its own /metrics), 0 if it does
    not answer."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("backhaul_events_total{") and 'outcome="handled"' in line
        )
    )


async def call(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    ok: tuple[int, ...] = (200, 201),
    json: Any = None,
    attempts: int = 60,
) -> httpx.Response:
    """A request that rides out restarts: connection errors and 5xx are retried."""
    for attempt in range(attempts):
        try:
            response = await http.request(method, url, json=json)
        except httpx.TransportError:
            await asyncio.sleep(min(0.2 * (attempt + 1), 2))
            continue
        if response.status_code in ok:
            return response
        if response.status_code >= 500 or (response.status_code == 404 and attempt < 30):
            # 404: the service has not heard of the account yet (events still flowing)
            await asyncio.sleep(min(0.2 * (attempt + 1), 2))
            continue
        raise AssertionError(f"{method} {url} -> {response.status_code}: {response.text}")
    raise AssertionError(f"{method} {url}: no answer after {attempts} attempts")


async def bounded(jobs: list[Callable[[], Awaitable[Any]]], concurrency: int = 16) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


@dataclass
class Population:
    disconnect: list[int]
    block: list[int]
    addresses: dict[int, str]
    blocked_status: int
    blocked_list: int
    active_list: int


async def populate(cluster: Cluster, http: httpx.AsyncClient, size: int) -> Population:
    """`size` active accounts with a primary contact; half also get an IP on the lists."""
    accounts, provisioning = cluster.url("accounts"), cluster.url("provisioning")
    blocked = (
        await call(
            http,
            "POST",
            f"{accounts}/account-statuses",
            json={
                "name": f"Blocked {uuid.uuid4().hex[:6]}",
                "activates_account": False,
                "colour": "#000000",
            },
        )
    ).json()["id"]
    pool = (
        await call(
            http,
            "POST",
            f"{provisioning}/ip-pools",
            json={"name": "chaos", "cidr": "10.128.0.0/16"},
        )
    ).json()["id"]
    blocked_list = (
        await call(
            http,
            "POST",
            f"{provisioning}/address-lists",
            json={"name": "blocked", "rule": {"status_ids": [blocked]}},
        )
    ).json()["id"]
    active_list = (
        await call(
            http,
            "POST",
            f"{provisioning}/address-lists",
            json={"name": "active", "rule": {"activating": True}},
        )
    ).json()["id"]

    async def create(i: int) -> int:
        body = {
            "name": f"Chaos {i}",
            "status_id": 2,
            "primary_contact": {"name": f"C{i}", "email": f"chaos{i}@example.com"},
        }
        return int((await call(http, "POST", f"{accounts}/accounts", json=body)).json()["id"])

    ids = await bounded([lambda i=i: create(i) for i in range(size)])
    disconnect, block = ids[: size // 2], ids[size // 2 :]

    async def assign(account_id: int) -> tuple[int, str]:
        response = await call(
            http,
            "POST",
            f"{provisioning}/accounts/{account_id}/ip-assignments",
            json={"pool_id": pool},
        )
        return account_id, response.json()["address"]

    addresses = dict(await bounded([lambda a=a: assign(a) for a in block]))
    return Population(disconnect, block, addresses, blocked, blocked_list, active_list)


async def storm(cluster: Cluster, http: httpx.AsyncClient, population: Population) -> float:
    """Disconnect half and block the other half, as fast as the system accepts."""
    accounts = cluster.url("accounts")
    started = time.monotonic()

    async def disconnect(account_id: int) -> None:
        await call(
            http, "POST", f"{accounts}/accounts/{account_id}/disconnect", json={}, ok=(201, 409)
        )  # 409: an earlier try committed before its answer was lost

    async def block(account_id: int) -> None:
        await call(
            http,
            "POST",
            f"{accounts}/accounts/{account_id}/status",
            json={"status_id": population.blocked_status, "reason": "chaos"},
        )

    jobs: list[Callable[[], Awaitable[Any]]] = [
        lambda a=a: disconnect(a) for a in population.disconnect
    ]
    jobs += [lambda a=a: block(a) for a in population.block]
    random.shuffle(jobs)
    await bounded(jobs)
    return time.monotonic() - started


async def wait_until_complete(
    cluster: Cluster, http: httpx.AsyncClient, population: Population, timeout: float = 600
) -> float:
    """Seconds until every disconnect's progress is complete and every IP is on its list."""
    accounts, provisioning = cluster.url("accounts"), cluster.url("provisioning")
    started = time.monotonic()
    pending = set(population.disconnect)
    while pending and time.monotonic() - started < timeout:

        async def done(account_id: int) -> int | None:
            rows = (
                await call(http, "GET", f"{accounts}/accounts/{account_id}/disconnections")
            ).json()
            return account_id if rows and rows[0]["progress"] == "complete" else None

        finished = await bounded([lambda a=a: done(a) for a in sorted(pending)])
        pending -= {a for a in finished if a is not None}
        if pending:
            await asyncio.sleep(1)
    wanted = set(population.addresses.values())
    while time.monotonic() - started < timeout:
        entries = (
            await call(
                http, "GET", f"{provisioning}/address-lists/{population.blocked_list}/entries"
            )
        ).json()
        if wanted <= {e["address"] for e in entries}:
            break
        await asyncio.sleep(1)
    return time.monotonic() - started


async def verify(
    cluster: Cluster, http: httpx.AsyncClient, population: Population, figures: Figures
) -> None:
    """Exactly once: one final invoice, one network release, one email per disconnect; every
    blocked account's IP on the blocked list and off the active one; no dead letters."""
    accounts, billing = cluster.url("accounts"), cluster.url("billing")
    notifications, provisioning = cluster.url("notifications"), cluster.url("provisioning")
    lost: list[str] = []
    duplicated: list[str] = []
    # Everything is complete by now, so the sink holds every message that will ever arrive.
    messages = read_messages(cluster.mail_dir)
    stored: dict[str, int] = {}
    for message in messages:
        stored[str(message["message_id"])] = stored.get(str(message["message_id"]), 0) + 1

    async def check(account_id: int) -> None:
        progress = (
            await call(http, "GET", f"{accounts}/accounts/{account_id}/disconnections")
        ).json()
        if len(progress) != 1:
            (lost if not progress else duplicated).append(
                f"{account_id}: {len(progress)} disconnections"
            )
            return
        steps = {s["step"]: s["state"] for s in progress[0]["steps"]}
        if set(steps.values()) != {"done"}:
            lost.append(f"{account_id}: steps {steps}")
        invoices = (await call(http, "GET", f"{billing}/accounts/{account_id}/invoices")).json()
        finals = [i for i in invoices if i["final"]]
        if len(finals) != 1:
            (lost if not finals else duplicated).append(
                f"{account_id}: {len(finals)} final invoices"
            )
        emails = (await call(http, "GET", f"{notifications}/accounts/{account_id}/emails")).json()
        notices = [e for e in emails if e["trigger_event_type"] == "AccountDisconnected"]
        if len(notices) > 1:
            duplicated.append(f"{account_id}: {len(notices)} notices {notices}")
        elif not notices or notices[0]["state"] != "sent":  # none, or one never delivered
            lost.append(
                f"{account_id}: notice "
                + (
                    f"{notices[0]['state']} (queued {notices[0]['queued_at']}): "
                    f"{notices[0]['reject_reason']}"
                    if notices
                    else "none"
                )
            )
        else:  # sent: the sink must hold exactly one copy
            copies = stored.get(notices[0]["message_id"], 0)
            if copies != 1:
                (lost if not copies else duplicated).append(
                    f"{account_id}: notice {notices[0]['message_id']} stored {copies} times"
                )

    await bounded([lambda a=a: check(a) for a in population.disconnect])

    blocked = {
        e["address"]
        for e in (
            await call(
                http, "GET", f"{provisioning}/address-lists/{population.blocked_list}/entries"
            )
        ).json()
    }
    active = {
        e["address"]
        for e in (
            await call(
                http, "GET", f"{provisioning}/address-lists/{population.active_list}/entries"
            )
        ).json()
    }
    for account_id, address in population.addresses.items():
        if address not in blocked or address in active:
            lost.append(
                f"{account_id}: {address} blocked={address in blocked} active={address in active}"
            )

    mail: dict[str, int] = {}
    for message in messages:
        key = f"{message['to']}|{message['subject']}"
        mail[key] = mail.get(key, 0) + 1
    duplicated += [f"mail {k} x{n}" for k, n in mail.items() if n > 1]
    # Resends the sink recognised and did not store: each would otherwise be a second mail.
    repeats = read_repeats(cluster.mail_dir)
    figures.email_unknown_outcome = cluster.email_unknown_outcome
    figures.email_repeats_dropped = len(repeats)

    # Counted once per account (or mail), however many of its checks failed.
    figures.lost = len({entry.split(":", 1)[0] for entry in lost})
    figures.duplicated = len({entry.split(":", 1)[0] for entry in duplicated})
    figures.dead_letters = await dead_letter_count(cluster.bootstrap)
    figures.events = await event_count(cluster.bootstrap)
    figures.notes += (lost + duplicated)[:20]
    figures.notes += [
        f"the mail sink dropped a repeat of {r['to']} {r['message_id']} ({r['received_at']})"
        for r in repeats[:10]
    ]


async def _end_offsets(bootstrap: str, select: Callable[[str], bool]) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        topics = [t for t in await admin.list_topics() if select(t)]
        partitions = [
            TopicPartition(t, p)
            for t in topics
            for p in (consumer.partitions_for_topic(t) or await _partitions(consumer, t))
        ]
        ends = await consumer.end_offsets(partitions) if partitions else {}
        begins = await consumer.beginning_offsets(partitions) if partitions else {}
        return sum(ends[tp] - begins[tp] for tp in partitions)
    finally:
        await consumer.stop()
        await admin.close()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def dead_letter_count(bootstrap: str) -> int:
    return await _end_offsets(bootstrap, lambda t: t.endswith(".dlq"))


async def event_count(bootstrap: str) -> int:
    return await _end_offsets(bootstrap, lambda t: t.endswith(".v1"))


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=30,
        headers=AUTH,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )
