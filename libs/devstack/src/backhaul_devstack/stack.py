"""The whole system as separate OS processes: Kafka, the mail sink and the five services.

`make run` and the end-to-end tests both use `Stack`, so what the tests prove is what a
developer runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from backhaul_devstack.kafka_broker import KafkaBroker, free_port, port_open

SERVICES: dict[str, int] = {
    "accounts": 8001,
    "billing": 8002,
    "scheduler": 8003,
    "provisioning": 8004,
    "notifications": 8005,
}


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    role: str = "all"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", self.name, "serve", "--role", self.role],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=5)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until /readyz answers 200; raises if the process exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} on port {self.port} not ready after {timeout}s")
            time.sleep(0.3)


@dataclass
class Stack:
    """Everything `make run` starts, rooted in one directory."""

    root: Path
    kafka_bootstrap: str | None = None  # an external broker; else one is started
    kafka_port: int = 19092
    ports: dict[str, int] = field(default_factory=lambda: dict(SERVICES))
    smtp_port: int = 1025
    mail_http_port: int = 8025
    topic_prefix: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)  # for every service
    # For one service's processes (its replicas and restarts too), over `extra_env`.
    service_extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # The mail sink drops a message whose idempotency key it already stored (see smtp_sink).
    drop_repeats: bool = False
    database_urls: dict[str, str] = field(default_factory=dict)  # else a SQLite file each
    # "combined": one process per service (role all); "split": an API process (role api) on
    # the service's port and a worker process (role worker), as the Helm chart deploys them.
    layout: str = "combined"
    broker: KafkaBroker | None = None
    mail_sink: subprocess.Popen[bytes] | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    replicas: list[ServiceProcess] = field(default_factory=list)

    @property
    def bootstrap_servers(self) -> str:
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        assert self.broker is not None
        return self.broker.bootstrap_servers

    @property
    def mail_dir(self) -> Path:
        return self.root / "mail"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def service_env(self, name: str) -> dict[str, str]:
        env = {
            **os.environ,
            "SERVICE_NAME": name,
            "HTTP_PORT": str(self.ports[name]),
            "DATABASE_URL": self.database_url(name),
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": self.topic_prefix,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp_port),
            "ENVIRONMENT": "development",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
            **self.service_extra_env.get(name, {}),
        }
        env.pop("ROLE", None)
        return env

    def database_url(self, name: str) -> str:
        return self.database_urls.get(
            name, f"sqlite+aiosqlite:///{self.root / 'data' / f'{name}.db'}"
        )

    def start_replica(self, name: str, role: str = "worker") -> ServiceProcess:
        """One more process of a running service: the same settings (so the same database
        and consumer group) on a port of its own. Not waited for: see `wait_ready`."""
        port = free_port()
        logs = self.root / "logs"
        count = len(list(logs.glob(f"{name}-{role}-*.log"))) + 1
        replica = ServiceProcess(
            name,
            port,
            {**self.services[name].env, "HTTP_PORT": str(port)},
            logs / f"{name}-{role}-{count}.log",
            role,
        )
        replica.start()
        self.replicas.append(replica)
        return replica

    def start(self, *, timeout: float = 120.0, on_progress: object = None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        say = on_progress if callable(on_progress) else (lambda _msg: None)
        if not self.kafka_bootstrap:
            say(f"starting Kafka on 127.0.0.1:{self.kafka_port} ...")
            self.broker = KafkaBroker(port=self.kafka_port, data_dir=self.root / "kafka")
            self.broker.start()
        say(f"starting the mail sink on 127.0.0.1:{self.smtp_port} ...")
        self._start_mail_sink()
        if self.layout not in ("combined", "split"):
            raise ValueError(f"layout must be combined or split, not {self.layout!r}")
        role = "api" if self.layout == "split" else "all"
        for name in self.ports:
            process = ServiceProcess(
                name,
                self.ports[name],
                self.service_env(name),
                self.root / "logs" / f"{name}.log",
                role,
            )
            process.start()
            self.services[name] = process
        say("waiting for the services to be ready ...")
        self.wait_ready(timeout)
        if role == "api":
            # Only once the API processes have migrated their databases: two processes
            # migrating one database at once race to create alembic_version.
            say("starting the workers ...")
            for worker in [self.start_replica(name) for name in self.ports]:
                worker.wait_ready(timeout)

    def _start_mail_sink(self) -> None:
        if port_open("127.0.0.1", self.smtp_port):
            raise RuntimeError(f"port {self.smtp_port} is taken: is another mail sink running?")
        log = (self.root / "logs").joinpath("mail-sink.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        self.mail_sink = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "backhaul_devstack",
                "mail-sink",
                "--dir",
                str(self.mail_dir),
                "--smtp-port",
                str(self.smtp_port),
                "--http-port",
                str(self.mail_http_port),
                *(["--drop-repeats"] if self.drop_repeats else []),
            ],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", self.smtp_port):
            if time.monotonic() > deadline or self.mail_sink.poll() is not None:
                raise RuntimeError(f"the mail sink did not start; see {log}")
            time.sleep(0.1)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.services)
        while pending:
            for name in sorted(pending):
                service = self.services[name]
                if service.process is not None and service.process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {service.process.returncode}; see {service.log_path}"
                    )
                try:
                    if httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout}s: {sorted(pending)}")
            time.sleep(0.3)

    def stop(self) -> None:
        processes = [*self.replicas, *self.services.values()]
        for service in processes:
            service.signal(signal.SIGTERM)
        for service in processes:
            service.stop()
        if self.mail_sink is not None and self.mail_sink.poll() is None:
            self.mail_sink.terminate()
            self.mail_sink.wait(timeout=10)
        if self.broker is not None:
            self.broker.stop()
