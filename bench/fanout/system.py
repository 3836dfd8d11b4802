"""The system under test: the real stack on free ports, one database per service, and the
footprint of its processes read from /proc."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from backhaul_devstack.kafka_broker import free_port
from backhaul_devstack.postgres import PostgresCluster
from backhaul_devstack.stack import SERVICES, Stack
from bench.fanout import statements

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class BenchStack(Stack):
    """`Stack` with a DATABASE_URL of its own for each service (Stack.extra_env is shared)."""

    database_urls: dict[str, str] = field(default_factory=dict)

    def service_env(self, name: str) -> dict[str, str]:
        env = super().service_env(name)
        if name in self.database_urls:
            env["DATABASE_URL"] = self.database_urls[name]
        return env

    def database_url(self, name: str) -> str:
        return self.database_urls.get(
            name, f"sqlite+aiosqlite:///{self.root / 'data' / f'{name}.db'}"
        )


def _distinct_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@dataclass
class System:
    """Kafka, the mail sink, the five services and (for `postgresql`) a throwaway cluster."""

    database: str  # "sqlite" or "postgresql"
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="backhaul-bench-")))
    log_level: str = "INFO"
    layout: str = "combined"  # or "split": API and worker processes, as deployed
    stack: BenchStack | None = None
    postgres: PostgresCluster | None = None
    monolith_url: str = ""

    def start(self, say: object = print) -> BenchStack:
        tell = say if callable(say) else (lambda _m: None)
        urls: dict[str, str] = {}
        if self.database == "postgresql":
            tell("starting PostgreSQL ...")
            self.postgres = PostgresCluster(settings=statements.SETTINGS)
            self.postgres.start()
            statements.prepare(self.postgres)
            for name in SERVICES:
                urls[name] = self.postgres.create_database(f"bench_{name}")
            self.monolith_url = self.postgres.create_database("bench_monolith")
        else:
            self.monolith_url = f"sqlite+aiosqlite:///{self.root / 'data' / 'monolith.db'}"
        ports = _distinct_ports(len(SERVICES) + 3)
        self.stack = BenchStack(
            root=self.root,
            kafka_port=ports[0],
            smtp_port=ports[1],
            mail_http_port=ports[2],
            ports=dict(zip(SERVICES, ports[3:], strict=True)),
            topic_prefix="bench.",
            extra_env={"LOG_LEVEL": self.log_level, "KAFKA_TOPIC_PARTITIONS": "6"},
            database_urls=urls,
            layout=self.layout,
        )
        try:
            self.stack.start(timeout=180, on_progress=tell)
        except BaseException:
            self.stop()
            raise
        return self.stack

    def stop_services(self) -> None:
        if self.stack is not None:
            for service in [*self.stack.services.values(), *self.stack.replicas]:
                service.stop()

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        if self.postgres is not None:
            self.postgres.destroy()

    def pids(self) -> dict[str, int]:
        assert self.stack is not None
        out = {
            name: s.process.pid for name, s in self.stack.services.items() if s.process is not None
        }
        for replica in self.stack.replicas:  # the workers of a split layout
            if replica.process is not None:
                out[f"{replica.name} {replica.role}"] = replica.process.pid
        broker = self.stack.broker
        if broker is not None and broker.process is not None:
            out["kafka"] = broker.process.pid
        if self.postgres is not None:
            pid_file = self.postgres.data_dir / "pgdata" / "postmaster.pid"
            if pid_file.exists():
                out["postgresql"] = int(pid_file.read_text().split()[0])
        return out


# -- /proc -----------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def process_tree(pid: int, tree: dict[int, list[int]] | None = None) -> list[int]:
    """The process and its descendants (PostgreSQL's backends, a service's helpers)."""
    tree = tree if tree is not None else _children()
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(tree.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes (fields 14 and 15 of /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    """Resident memory (second field of /proc/<pid>/statm, in pages)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


def pss_bytes(pids: list[int]) -> int:
    """Proportional set size: shared pages (PostgreSQL's shared buffers) split between the
    processes that map them, so a cluster of backends is not counted once per backend."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


@dataclass
class Footprint:
    """Samples each component's RSS and CPU; phases are named windows between marks."""

    roots: dict[str, int]
    alone: set[str] = field(default_factory=set)  # the process itself, not its children
    proportional: set[str] = field(default_factory=lambda: {"postgresql"})
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    marks: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)

    def _trees(self) -> dict[str, list[int]]:
        tree = _children()
        return {
            name: [pid] if name in self.alone else process_tree(pid, tree)
            for name, pid in self.roots.items()
        }

    def sample(self) -> dict[str, int]:
        rss = {
            name: (pss_bytes if name in self.proportional else rss_bytes)(pids)
            for name, pids in self._trees().items()
        }
        self.samples.append((time.time(), rss))
        return rss

    def mark(self, name: str) -> dict[str, float]:
        cpu = {name_: cpu_seconds(pids) for name_, pids in self._trees().items()}
        self.marks[name] = (time.time(), cpu)
        return cpu

    def cpu_between(self, start: str, end: str) -> dict[str, float]:
        (_, a), (_, b) = self.marks[start], self.marks[end]
        return {name: round(b[name] - a.get(name, 0.0), 2) for name in b}

    def peak_rss_between(self, start: float, end: float) -> dict[str, int]:
        peak: dict[str, int] = {}
        for at, rss in self.samples:
            if start <= at <= end:
                for name, value in rss.items():
                    peak[name] = max(peak.get(name, 0), value)
        return peak
