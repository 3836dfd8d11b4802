"""`python -m bench.fanout.ceiling <run>.json ...`: measure a run's bus ceiling again.

Until session 4 the fan-out run looked up the services' consumer groups without the run's
topic prefix, found none, and so measured a "bus ceiling" that produced the storm's messages
and consumed none. This re-measures the bus ceiling of a recorded run on a fresh broker, on
this machine: the run's messages per topic and average sizes, each service's group
subscribed to the topics its consumer really reads (taken from the service's own consumer,
as `bootstrap()` registers it), both with periodic commits and committing after each
message. It replaces the run's bus figures, keeps the wrong ones under
`bus_produce_only`, and redraws the summary and the plot.

    uv run --no-sync python -m bench.fanout.ceiling bench/results/2026-11-22-fanout-*-10000.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
from pathlib import Path
from typing import Any

from backhaul_devstack.kafka_broker import KafkaBroker, free_port
from bench.fanout import report
from bench.fanout.bus import SERVICE_GROUPS, BusPlan, bus_ceiling


def subscriptions() -> dict[str, list[str]]:
    """The topics (without prefix) each service's consumer subscribes to."""
    topics: dict[str, list[str]] = {}
    directory = Path(tempfile.mkdtemp(prefix="bench-ceiling-"))
    for service in SERVICE_GROUPS:
        config = importlib.import_module(f"{service}.config")
        settings = getattr(config, f"{service.title()}Settings")(
            database_url=f"sqlite+aiosqlite:///{directory}/{service}.db",
            kafka_bootstrap_servers="127.0.0.1:1",  # never contacted: nothing is started
        )
        runtime = importlib.import_module(f"{service}.bootstrap").bootstrap(settings)
        topics[service] = list(runtime.consumer.topics)
    return topics


def plans(document: dict[str, Any], groups: dict[str, list[str]]) -> tuple[BusPlan, BusPlan]:
    storm = document["disconnect_storm"]
    plan = BusPlan(
        disconnects=storm["disconnects"],
        messages=dict(storm["messages_per_topic"]),
        average_bytes=document["ceilings"]["bus"]["average_bytes"],
        subscriptions=groups,
    )
    # As the run does: committing after every message is slow, so 500 disconnects' worth.
    return plan, plan.at_most(500)


def remeasure(path: Path, broker: KafkaBroker, groups: dict[str, list[str]]) -> None:
    document = json.loads(path.read_text())
    plan, small = plans(document, groups)
    ceilings = document["ceilings"]
    if "bus_produce_only" not in ceilings:
        ceilings["bus_produce_only"] = ceilings["bus"]
        ceilings["bus_commit_each_message_produce_only"] = ceilings["bus_commit_each_message"]
    bus = bus_ceiling(broker.bootstrap_servers, plan)
    bus["subscriptions"] = groups
    bus["average_bytes"] = plan.average_bytes
    bus["measured"] = "again after the run, on a fresh broker (bench.fanout.ceiling)"
    each = bus_ceiling(broker.bootstrap_servers, small, commit_each=True)
    each["disconnects"] = small.disconnects
    each["measured"] = bus["measured"]
    ceilings["bus"] = bus
    ceilings["bus_commit_each_message"] = each
    ours = document["disconnect_storm"]["sustained_complete_per_s"]
    ceilings["fraction_of_bus"] = round(ours / bus["disconnects_per_s"], 4)
    name = path.name.removesuffix(".json")
    written = report.write(document, path.parent, name)
    print(
        f"{path.name}: bus {bus['disconnects_per_s']}/s ({bus['messages_delivered']} deliveries), "
        f"commit each {each['disconnects_per_s']}/s; wrote {', '.join(str(p) for p in written)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout.ceiling", description=__doc__)
    parser.add_argument("runs", type=Path, nargs="+", help="bench/results/<run>.json")
    args = parser.parse_args(argv)
    groups = subscriptions()
    print("subscriptions:", json.dumps(groups))
    broker = KafkaBroker(port=free_port(), data_dir=Path(tempfile.mkdtemp()) / "kafka")
    broker.start()
    try:
        for path in args.runs:
            remeasure(path, broker, groups)
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
