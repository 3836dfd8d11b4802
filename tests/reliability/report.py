"""Render docs/reliability.md from the figures the fault tests wrote (var/reliability)."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "var" / "reliability"
TARGET = ROOT / "docs" / "reliability.md"

SCENARIOS = {
    "1-accounts-killed": "SIGKILL the accounts process repeatedly during the storm",
    "2-consumers-killed": "SIGKILL billing, provisioning and notifications repeatedly",
    "3-kafka-killed": "SIGKILL the Kafka broker under load, restart it 5 s later",
    "4-rebalances": "Start and stop (SIGTERM, SIGKILL) worker replicas of billing, "
    "provisioning and notifications in their consumer groups",
    "5-consumer-database-down": "Shut provisioning's PostgreSQL down 30 s into the storm, "
    "start it again 30 s later",
    "6-poison-message": "A malformed event on a live account's partition; DLQ, replay",
    "8-replay-everything": "Rewind every consumer group to offset 0 and replay all topics",
}

COMMANDS = {
    "4-rebalances": "RELIABILITY_N=2000 uv run pytest -m reliability tests/reliability -k replicas",
    "5-consumer-database-down": (
        "RELIABILITY_N=2000 uv run pytest -m reliability tests/reliability -k database_down"
    ),
}


def _faults(f: dict[str, Any]) -> str:
    """What was done to the system, in the scenario's own terms."""
    parts = []
    if f.get("kills"):
        parts.append(f"{f['kills']} kill{'s' if f['kills'] != 1 else ''}")
    if f.get("replica_starts"):
        parts.append(
            f"{f['replica_starts']} replica starts, {f.get('replica_stops', 0)} stops; "
            f"{f.get('rebalances', 0)} rebalances of the first processes; "
            f"{f.get('replica_events', 0)} events handled by replicas"
        )
    if f.get("email_unknown_outcome") == "resend":
        repeats = f.get("email_repeats_dropped", 0)
        parts.append(
            f"email `resend`: {repeats} repeat{'s' if repeats != 1 else ''} dropped by the "
            "mail sink"
        )
    if f.get("database_outages"):
        parts.append(
            f"{f['database_outages']} database outage of "
            f"{f.get('database_outage_seconds', 0):.0f} s"
        )
    return "; ".join(parts) or "-"


UNKNOWN_OUTCOME = "delivery outcome unknown"

EMAIL_AT_MOST_ONCE = (
    "\n{scenarios}: the lost disconnects above are notices, not consumer effects: their\n"
    "final invoices and network releases are done, and nothing was doubled or\n"
    "dead-lettered. Each is an email whose notifications worker was killed during SMTP\n"
    "DATA: after it had committed `data_started_at` (the fence just before DATA) and before\n"
    "it recorded the relay's answer. The message may have been delivered, and in the\n"
    "default mode, `EMAIL_UNKNOWN_OUTCOME=close` (at most once), the dispatcher closes such\n"
    "a row after the send lease (`EMAIL_SEND_LEASE_SECONDS`, 300 s) as rejected, *delivery\n"
    "outcome unknown*, and never sends it again, so that no recipient gets it twice. A\n"
    "worker killed before DATA (connecting, EHLO, MAIL, RCPT) delivered nothing: its email\n"
    "is requeued after `EMAIL_PRE_DATA_LEASE_SECONDS` and sent, and is not lost. The run's\n"
    "`logs/replicas.log` gives the time of every replica's start and stop, to set beside\n"
    "the notices' times. With `EMAIL_UNKNOWN_OUTCOME=resend` behind a relay that drops a\n"
    "repeated Message-ID, as scenario 4 now runs, such a notice is sent again and stored\n"
    "once.\n"
)


def _only_emails_of_unknown_outcome(f: dict[str, Any]) -> bool:
    """Lost disconnects whose only missing step is an email closed as of unknown outcome,
    with nothing doubled or dead-lettered."""
    notes = f.get("notes", [])
    steps = [n for n in notes if ": steps " in n]
    notices = [n for n in notes if ": notice " in n]
    return (
        f["lost"] > 0
        and not f["duplicated"]
        and not f["dead_letters"]
        and len(notices) == f["lost"]
        and all(UNKNOWN_OUTCOME in n for n in notices)
        and all("'final_invoice': 'done'" in n and "'network_release': 'done'" in n for n in steps)
    )


def main() -> None:
    rows = []
    notes = []
    at_most_once = []
    for path in sorted(RESULTS.glob("*.json")):
        f = json.loads(path.read_text())
        ran = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        rows.append(
            f"| {f['scenario']} | {SCENARIOS.get(f['scenario'], '')} | "
            f"{f.get('database', 'sqlite')} | {f['accounts']} | "
            f"{f['disconnects']} | {f['status_changes']} | {f['events'] or 'not counted'} | "
            f"{_faults(f)} | "
            f"{f['lost']} | {f['duplicated']} | {f['dead_letters']} | {f['storm_seconds']:.1f} | "
            f"{f['recovery_seconds']:.1f} | {ran:%Y-%m-%d %H:%M} |"
        )
        if f["scenario"] in COMMANDS and f.get("notes"):
            notes += [f"- {f['scenario']}: {note}" for note in f["notes"]]
        if _only_emails_of_unknown_outcome(f):
            at_most_once.append(f"Scenario {f['scenario']}")
    TARGET.parent.mkdir(exist_ok=True)
    commands = "\n".join(f"- {scenario}: `{command}`" for scenario, command in COMMANDS.items())
    observed = ("\nFrom the last runs' notes:\n\n" + "\n".join(notes) + "\n") if notes else ""
    if at_most_once:
        observed += EMAIL_AT_MOST_ONCE.format(scenarios=", ".join(at_most_once))
    TARGET.write_text(
        "# Reliability: nothing lost, nothing doubled, under faults\n\n"
        "Produced by `make reliability` (`RELIABILITY_N` accounts per scenario, default 2,000;\n"
        "half are disconnected, half moved to a blocked status, during the fault). Each scenario\n"
        "runs its own Kafka and five service processes, on SQLite or on PostgreSQL (the\n"
        "*database* column: one database per service, on a throwaway PostgreSQL the test\n"
        "starts), and then checks, through the services' APIs, the SMTP sink and Kafka, that\n"
        "every disconnect has exactly one final invoice, one network release and one email,\n"
        "that every blocked account's IP is on the blocked list and off the active one, and\n"
        "what is in the dead-letter topics. One scenario alone, for example:\n\n"
        f"{commands}\n\n"
        f"Rendered {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({platform.machine()}, 2 cores) from the figures in `var/reliability/`; *run* is\n"
        "when each scenario last ran.\n\n"
        "| scenario | fault | database | accounts | disconnects | status changes | "
        "events on topics | faults injected | lost | duplicated | dead letters | storm s | "
        "recovery s | run (UTC) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "*lost*: a disconnect without its complete fan-out, or a status change missing from a\n"
        "list; *duplicated*: a second disconnection, final invoice, notice or mail; *recovery*:\n"
        "from the end of the storm (or of the replay) until everything is complete.\n"
        "Scenario 6 expects dead letters: each of the four consumer groups parks the poison\n"
        "once, and each replay puts it back on the topic, where every group parks it again.\n\n"
        "Scenario 4 runs on PostgreSQL, as replicas do in production: a service's processes\n"
        "share its database, and their outbox relays elect one leader with an advisory lock\n"
        "(on SQLite every process would relay). Each consuming service gets a worker replica\n"
        "(`serve --role worker`, the same settings, so the same database and consumer group)\n"
        "3 s after its last change and loses it 3 s after it is ready, by SIGTERM (it leaves\n"
        "the group at once) and SIGKILL (the group notices at the session timeout) in turn,\n"
        "throughout the storm and the catch-up after it. *rebalances* counts the new partition\n"
        "assignments the services' first processes received; *events handled by replicas*\n"
        "comes from the replicas' own metrics, read just before each was stopped.\n\n"
        "Scenarios 2 and 4, which SIGKILL notifications workers, run notifications (every\n"
        "process of it) with `EMAIL_UNKNOWN_OUTCOME=resend`, behind a mail sink started with\n"
        "`drop_repeats`: it accepts a message whose `X-Backhaul-Idempotency-Key` it already\n"
        "holds with 250 and does not store it again, as a relay or mailbox that drops a\n"
        "repeated Message-ID does. A notice whose worker was SIGKILLed inside SMTP DATA is\n"
        "requeued once its send lease runs out (shortened to `EMAIL_SEND_LEASE_SECONDS=60`,\n"
        "with `SMTP_TIMEOUT_SECONDS=15`, so that this happens within the scenario's wait) and\n"
        "sent again with the same Message-ID: at least once from the service, exactly once at\n"
        "the sink. The check stays strict (every disconnect's notice sent and stored exactly\n"
        "once, nothing lost), and *faults injected* gives the repeats the sink dropped. The\n"
        "other scenarios run the default, `EMAIL_UNKNOWN_OUTCOME=close` (at most once); with\n"
        "it, runs of scenarios 2 and 4 closed a notice whose worker was killed inside DATA as\n"
        "rejected, *delivery outcome unknown*, 1-2 per 1,000 disconnects (before the fence\n"
        "before DATA, kills anywhere in the SMTP conversation did that).\n\n"
        "Scenario 5 gives provisioning a PostgreSQL cluster of its own (the other services\n"
        "share another), shuts it down (`pg_ctl stop -m fast`: every session is ended and new\n"
        "connections are refused) 30 s into the storm and starts it again 30 s later. The test\n"
        "checks that provisioning's `/readyz` says 503 (database unreachable) meanwhile and\n"
        "200 once it is back, and that its relay and consumer carry on. Before this scenario\n"
        "existed, the kit's consumer counted a failure with the database down as an attempt\n"
        "and dead-lettered every event it held within about 3 s of an outage; it now pings\n"
        "its database after a failure and, while that does not answer, waits without limit,\n"
        "holding its partitions, so only failures with the database up count towards\n"
        "`CONSUMER_MAX_ATTEMPTS`.\n" + observed
    )
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
