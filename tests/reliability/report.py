"""Render docs/reliability.md from the figures the fault tests wrote (var/reliability)."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "var" / "reliability"
TARGET = ROOT / "docs" / "reliability.md"

SCENARIOS = {
    "1-accounts-killed": "SIGKILL the accounts process repeatedly during the storm",
    "2-consumers-killed": "SIGKILL billing, provisioning and notifications repeatedly",
    "3-kafka-killed": "SIGKILL the Kafka broker under load, restart it 5 s later",
    "6-poison-message": "A malformed event on a live account's partition; DLQ, replay",
    "8-replay-everything": "Rewind every consumer group to offset 0 and replay all topics",
}


def main() -> None:
    rows = []
    for path in sorted(RESULTS.glob("*.json")):
        f = json.loads(path.read_text())
        rows.append(
            f"| {f['scenario']} | {SCENARIOS.get(f['scenario'], '')} | {f['accounts']} | "
            f"{f['disconnects']} | {f['status_changes']} | {f['events'] or 'not counted'} | "
            f"{f['kills']} | "
            f"{f['lost']} | {f['duplicated']} | {f['dead_letters']} | {f['storm_seconds']:.1f} | "
            f"{f['recovery_seconds']:.1f} |"
        )
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(
        "# Reliability: nothing lost, nothing doubled, under faults\n\n"
        "Produced by `make reliability` (`RELIABILITY_N` accounts per scenario, default 2,000;\n"
        "half are disconnected, half moved to a blocked status, during the fault). Each scenario\n"
        "runs its own Kafka and five service processes on SQLite, and then checks, through the\n"
        "services' APIs, the SMTP sink and Kafka, that every disconnect has exactly one final\n"
        "invoice, one network release and one email, that every blocked account's IP is on the\n"
        "blocked list and off the active one, and what is in the dead-letter topics.\n\n"
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({platform.machine()}, 2 cores).\n\n"
        "| scenario | fault | accounts | disconnects | status changes | events on topics | "
        "kills | lost | duplicated | dead letters | storm s | recovery s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "*lost*: a disconnect without its complete fan-out, or a status change missing from a\n"
        "list; *duplicated*: a second disconnection, final invoice, notice or mail; *recovery*:\n"
        "from the end of the storm (or of the replay) until everything is complete.\n"
        "Scenario 6 expects dead letters: each of the four consumer groups parks the poison\n"
        "once, and each replay puts it back on the topic, where every group parks it again.\n"
    )
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
