"""A real single-node Kafka (KRaft) from Maven Central's jars, started without Docker.

`fetch()` copies the broker's jars with Maven (tools/kafka/pom.xml) into .cache/kafka/libs;
`KafkaBroker` formats a log directory and runs `kafka.Kafka` on the JVM.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from backhaul_devstack.paths import cache_dir, repo_root

KAFKA_LIBS = "kafka/libs"


def libs_dir() -> Path:
    return cache_dir() / KAFKA_LIBS


def fetch(quiet: bool = True) -> Path:
    """Fetch the broker's jars once; later calls return at once."""
    target = libs_dir()
    if any(target.glob("kafka_2.13-*.jar")):
        return target
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RuntimeError("the embedded Kafka needs Java 17+ and Maven (mvn) on PATH")
    target.mkdir(parents=True, exist_ok=True)
    command = [
        "mvn",
        "-B",
        "-f",
        str(repo_root() / "tools/kafka/pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={target}",
        "-DincludeScope=runtime",
    ]
    if quiet:
        command.insert(1, "-q")
    subprocess.run(command, check=True)  # noqa: S603 - fixed command
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


_LOG4J2 = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="STDOUT"/></Root>
    <Logger name="kafka.server.KafkaServer" level="INFO"/>
    <Logger name="kafka.server.BrokerServer" level="INFO"/>
  </Loggers>
</Configuration>
"""


@dataclass
class KafkaBroker:
    """One KRaft broker+controller on 127.0.0.1:`port`, its data in `data_dir`."""

    port: int = 19092
    data_dir: Path = field(default_factory=lambda: repo_root() / "var" / "kafka")
    partitions: int = 6
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self, controller_port: int) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logs = self.data_dir / "logs"
        config = self.data_dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={logs}",
                    f"num.partitions={self.partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=168",
                    "log.segment.bytes=67108864",
                ]
            )
            + "\n"
        )
        (self.data_dir / "log4j2.xml").write_text(_LOG4J2)
        return config

    def _java(self, *args: str, **kwargs: object) -> list[str]:
        return [
            "java",
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.xml'}",
            "-cp",
            f"{libs_dir()}/*",
            *args,
        ]

    def start(self, timeout: float = 90.0) -> None:
        """Format (first time) and start the broker; return once it answers metadata."""
        fetch()
        if port_open("127.0.0.1", self.port):
            raise RuntimeError(f"port {self.port} is taken: is another Kafka running?")
        marker = self.data_dir / "controller.port"
        fresh = not (self.data_dir / "logs" / "meta.properties").exists()
        controller_port = int(marker.read_text()) if marker.exists() and not fresh else free_port()
        config = self._write_config(controller_port)
        marker.write_text(str(controller_port))
        if fresh:
            subprocess.run(  # noqa: S603 - fixed command
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    str(uuid.uuid4()).replace("-", "")[:22],
                    "-c",
                    str(config),
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        log_file = (self.data_dir / "broker.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - fixed command
            self._java("kafka.Kafka", str(config)),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_raise_open_file_limit,
        )
        (self.data_dir / "broker.pid").write_text(str(self.process.pid))
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = self.data_dir / "broker.log"
                raise RuntimeError(f"Kafka exited with {self.process.returncode}; see {log}")
            if port_open("127.0.0.1", self.port) and asyncio.run(_answers(self.bootstrap_servers)):
                return
            time.sleep(0.5)
        raise TimeoutError(f"Kafka did not become ready in {timeout}s")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it lingers."""
        pid = self.process.pid if self.process else _read_pid(self.data_dir / "broker.pid")
        if pid is None:
            return
        with _suppress_lookup():
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            if self.process is not None:
                self.process.poll()
            time.sleep(0.2)
        if _alive(pid):
            with _suppress_lookup():
                os.killpg(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)
        (self.data_dir / "broker.pid").unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.process is not None:
            with _suppress_lookup():
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _raise_open_file_limit() -> None:
    """Every partition holds several files open: give the broker all the descriptors it may
    have (a test session creates thousands of short-lived partitions)."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (1_048_576, 262_144, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
            return
        except (ValueError, OSError):
            continue


async def _answers(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        # Ready means consumer groups work too: a fresh broker creates __consumer_offsets on
        # the first FindCoordinator and answers "not available" until it has.
        await admin.find_coordinator("backhaul-readiness")
        return True
    except Exception:
        return False
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: S110 - closing a client that never connected
            pass


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child counts as gone
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, *_: object) -> bool:
        return exc_type is ProcessLookupError
