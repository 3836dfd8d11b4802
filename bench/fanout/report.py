"""The run's JSON, its markdown summary and its plot."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

TARGETS = {
    "rate_per_s": 1000,  # fully fanned out, on PostgreSQL
    "fraction_of_monolith": 0.5,
    "p99_ms": 250,  # end to end at half load
    "rss_mb": 150,  # each service
}
SERVICES = ("accounts", "billing", "scheduler", "provisioning", "notifications")


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the services or the kit had uncommitted changes."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        try:
            return subprocess.run(  # noqa: S603 - fixed command
                ["git", *args],  # noqa: S607 - git from PATH
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "libs", "services").splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_in_libs_and_services": dirty[:20]}


def machine() -> dict[str, Any]:
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_mb": memory,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
    }


def write(document: dict[str, Any], out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(document, indent=1, sort_keys=False, default=str) + "\n")
    png_path = out / f"{name}.png"
    try:
        plot(document, png_path)
    except ImportError as exc:  # the JSON is what matters; `python -m bench.fanout.report`
        print(f"no plot ({exc}): uv pip install matplotlib, then redraw from the JSON")
    md_path = out / f"{name}.md"
    md_path.write_text(markdown(document, plot_name=png_path.name if png_path.exists() else None))
    return [json_path, md_path, png_path]


def _mark(ok: bool) -> str:
    return "met" if ok else "missed"


def markdown(doc: dict[str, Any], plot_name: str | None = None) -> str:
    storm = doc["disconnect_storm"]
    latency = doc["latency"]["end_to_end_ms"]
    status = doc["status_storm"]
    ceilings = doc.get("ceilings", {})
    footprint = doc["footprint"]
    rate = storm["sustained_complete_per_s"]
    code = doc.get("code", {})
    lines = [
        f"# Fan-out benchmark: {doc['database']}, N = {doc['accounts']:,} ({doc['date']})",
        "",
        f"Machine: {doc['machine']['cpus']} CPUs, {doc['machine']['memory_mb']} MB, "
        f"Python {doc['machine']['python']}; commit {code.get('commit', '?')[:10]}"
        f"{' (with uncommitted changes)' if code.get('uncommitted_in_libs_and_services') else ''}.",
        "",
        "| measure | result | target |",
        "|---|---|---|",
        f"| setup of {doc['setup']['accounts']:,} accounts "
        f"({doc['setup'].get('mode', 'staged')}) | {doc['setup']['seconds']} s "
        f"({doc['setup']['accounts_per_s']}/s) | >= 100/s: "
        f"{_mark(doc['setup']['accounts_per_s'] >= 100)} |",
        f"| disconnects accepted | {storm['accept_per_s']}/s | |",
        f"| disconnects fully fanned out, sustained | **{rate}/s** | 1,000/s on PostgreSQL: "
        f"{_mark(rate >= TARGETS['rate_per_s'])} |",
        f"| all {storm['completed']:,} complete after | {storm['all_complete_seconds']} s | |",
    ]
    if ceilings:
        bus, mono = ceilings["bus"], ceilings["monolith"]
        again = f"; {bus['measured']}" if bus.get("measured") else ""
        lines += [
            f"| bus ceiling (aiokafka, no work; {bus['messages_produced']:,} messages, "
            f"{bus['messages_delivered']:,} deliveries{again}) | {bus['disconnects_per_s']}/s; "
            f"we are {ceilings['fraction_of_bus']:.1%} | |",
            "| bus ceiling, offset committed after each message (FastStream's per-message "
            "ack; ours commit per batch) | "
            f"{ceilings['bus_commit_each_message']['disconnects_per_s']}/s | |",
            f"| monolith ceiling (one transaction) | {mono['disconnects_per_s']}/s; we are "
            f"{ceilings['fraction_of_monolith']:.1%} | >= 50%: "
            f"{_mark(ceilings['fraction_of_monolith'] >= TARGETS['fraction_of_monolith'])} |",
        ]
    lines += [
        f"| end to end at {doc['latency']['rate_per_s']}/s (half load), p50 / p95 / p99 | "
        f"{latency.get('p50')} / {latency.get('p95')} / **{latency.get('p99')}** ms | "
        "p99 < 250 ms: "
        f"{_mark((latency.get('p99') or 1e9) < TARGETS['p99_ms'])} |",
        f"| status storm: all {status['visible']:,} list changes visible after | "
        f"{status['all_visible_seconds']} s (p50 {status['latency_ms'].get('p50')}, "
        f"p99 **{status['latency_ms'].get('p99')}** ms) | |",
    ]
    peak = footprint["rss_mb_peak_disconnect_storm"]
    worst = max((v for k, v in peak.items() if k.split()[0] in SERVICES), default=0)
    if "cpu_ms_per_disconnect" in storm:
        per = storm["cpu_ms_per_disconnect"]
        lines.append(
            f"| CPU per disconnect, five services ({doc.get('layout', 'combined')} layout) | "
            f"**{storm['cpu_ms_per_disconnect_services']} ms** ("
            + ", ".join(f"{k} {per[k]}" for k in SERVICES if k in per)
            + ") | <= 40 ms required, <= 15 ms goal |"
        )
    if counted := storm.get("database_statements_per_disconnect"):
        lines.append(
            "| database statements per disconnect, five services (round trips) | "
            f"**{counted['all_services']}** ("
            + ", ".join(f"{k} {counted[k]['statements']}" for k in SERVICES if k in counted)
            + ") | |"
        )
    lines += [
        f"| largest service RSS under the storm | {worst} MB | < 150 MB: "
        f"{_mark(worst < TARGETS['rss_mb'])} |",
        "",
        "| process | RSS idle (MB) | RSS peak, disconnect storm (MB) | CPU idle (% of a core) "
        "| CPU s / 1,000 disconnects | of which above idle |",
        "|---|---|---|---|---|---|",
    ]
    cpu = footprint["cpu_seconds_per_1000_disconnects"]
    net = footprint.get("cpu_seconds_per_1000_disconnects_net_of_idle", {})
    workers = sorted(n for n in footprint["rss_mb_idle"] if n.split()[0] in SERVICES and " " in n)
    for name in (*SERVICES, *workers, "kafka", "postgresql", "bench (load generator)"):
        if name in footprint["rss_mb_idle"]:
            label = "postgresql (all processes, PSS)" if name == "postgresql" else name
            lines.append(
                f"| {label} | {footprint['rss_mb_idle'][name]} | {peak.get(name, '')} | "
                f"{footprint.get('cpu_percent_idle', {}).get(name, '')} | {cpu.get(name, '')} | "
                f"{net.get(name, '')} |"
            )
    profiles = storm.get("profile") or []
    if isinstance(profiles, dict):
        profiles = [profiles]
    for profile in profiles:
        if not profile.get("self_time"):
            continue
        busy = profile["busy_samples"]
        lock = profile["sqlite_lock_wait_samples"]
        lines += [
            "",
            f"py-spy (--native) on {profile['service']} for {profile['seconds']:.0f} s of the "
            f"storm: {busy} busy thread samples; {lock} samples of a thread asleep in SQLite's "
            f"busy handler waiting for the write lock; {profile['gil_wait_samples']} waiting "
            f"for the GIL; {profile['waiting_samples']} idle. Busy time by task: "
            + ", ".join(f"{b['what']} {b['percent']}%" for b in profile["by_task"][:5])
            + ". By library (inclusive): "
            + ", ".join(f"{b['what']} {b['percent']}%" for b in profile["inclusive_by_library"][:8])
            + ". Deepest Python frame: "
            + ", ".join(f"{b['what']} {b['percent']}%" for b in profile["self_time"][:5])
            + ".",
        ]
        if profile.get("in_the_sqlite_thread"):
            lines[-1] += " In the aiosqlite thread (call ... native leaf): " + ", ".join(
                f"{b['what']} {b['percent']}%" for b in profile["in_the_sqlite_thread"][:4]
            )
    if plot_name:
        lines += ["", f"![fan-out]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = doc["curves"]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    for key, label in (
        ("disconnect_accepted", "accepted (HTTP 201)"),
        ("disconnect_kafka_observed", "completion events on Kafka"),
        ("disconnect_complete", "complete in accounts"),
    ):
        points = curves.get(key) or []
        if points:
            left.plot([p[0] for p in points], [p[1] for p in points], label=label)
    left.set_title(f"Disconnect storm, N = {doc['accounts']:,}")
    left.set_xlabel("seconds since the first request")
    left.set_ylabel("disconnects")
    left.legend(loc="lower right", fontsize=8)
    latencies = curves.get("latency_ms_sorted") or []
    if latencies:
        fractions = [(i + 1) / len(latencies) for i in range(len(latencies))]
        middle.plot(latencies, fractions)
        middle.axvline(250, color="grey", linestyle="--", linewidth=1)
    middle.set_title(f"End to end at {doc['latency']['rate_per_s']}/s (half load)")
    middle.set_xlabel("ms from HTTP answer to the last step recorded")
    middle.set_ylabel("fraction of disconnects")
    status = curves.get("status_visible") or []
    if status:
        right.plot([p[0] for p in status], [p[1] for p in status])
    right.set_title("Status storm: list changes visible to a router")
    right.set_xlabel("seconds since the first status change")
    right.set_ylabel("accounts")
    figure.suptitle(f"Backhaul fan-out on {doc['database']} ({doc['date'][:10]})")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main() -> None:
    """`python -m bench.fanout.report RESULT.json`: redraw the plot and the summary."""
    import sys

    for name in sys.argv[1:]:
        path = Path(name)
        document = json.loads(path.read_text())
        plot(document, path.with_suffix(".png"))
        path.with_suffix(".md").write_text(
            markdown(document, plot_name=path.with_suffix(".png").name)
        )


if __name__ == "__main__":
    main()
