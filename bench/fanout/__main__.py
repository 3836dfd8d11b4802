"""`python -m bench.fanout`: the fan-out benchmark of issue 10, one run per database.

For each database (SQLite files, then a throwaway PostgreSQL with a database per service)
it starts the real system on free ports (its own Kafka, the mail sink, the five services as
separate processes), then:

1. sets up N + M accounts (address, primary contact, a recurring service, an IP on an
   "active" address list), timed;
2. status storm: the N accounts into a new "Blocked" status whose address list a router
   follows through the changes feed, until every change is visible;
3. disconnect storm: the same N accounts disconnected as fast as accounts accepts; the
   sustained rate of disconnects fully fanned out (accounts records all three steps done);
4. the M other accounts disconnected at half that rate: end-to-end latency;
5. the ceilings: the same Kafka traffic with no work (bus), and one process applying the
   same effects in one transaction per disconnect on the same database (monolith);
6. footprint: RSS of every service idle and under the storm, CPU seconds per 1,000
   disconnects, and a py-spy profile of the hottest service.

It writes bench/results/<date>-fanout-<database>-<N>.json, .md and .png.

    uv run --no-sync python -m bench.fanout --accounts 200 --databases sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backhaul_contracts.topics import ALL_TOPICS
from bench.fanout import report, statements
from bench.fanout.api import Urls, create_accounts, prepare
from bench.fanout.bus import (
    SERVICE_GROUPS,
    BusPlan,
    Listener,
    bus_ceiling,
    end_offsets,
    group_lag,
    wait_quiet,
)
from bench.fanout.profile import record
from bench.fanout.storms import (
    Progress,
    disconnect_all,
    disconnect_paced,
    percentiles,
    status_storm,
    sustained_rate,
    wait_complete,
)
from bench.fanout.system import Footprint, System

RESULTS = Path(__file__).resolve().parents[1] / "results"
MB = 1024 * 1024
BENCH = "bench (load generator)"


def say(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def _curve(points: list[float], n: int = 120) -> list[list[float]]:
    """(seconds, cumulative count) down-sampled to about n points."""
    ordered = sorted(points)
    if not ordered:
        return []
    step = max(1, len(ordered) // n)
    picked = list(range(step - 1, len(ordered), step))
    if picked[-1] != len(ordered) - 1:
        picked.append(len(ordered) - 1)
    return [[round(ordered[i], 3), i + 1] for i in picked]


async def _sampler(footprint: Footprint, interval: float = 0.5) -> None:
    while True:
        footprint.sample()
        await asyncio.sleep(interval)


async def scenario(system: System, args: argparse.Namespace) -> dict[str, Any]:
    stack = system.stack
    assert stack is not None
    urls = Urls(
        accounts=stack.url("accounts"),
        billing=stack.url("billing"),
        provisioning=stack.url("provisioning"),
        notifications=stack.url("notifications"),
        scheduler=stack.url("scheduler"),
    )
    bootstrap, prefix = stack.bootstrap_servers, stack.topic_prefix
    storm_ids = list(range(1, args.accounts + 1))
    paced_ids = list(range(args.accounts + 1, args.accounts + args.latency_accounts + 1))
    quiet_timeout = 300 + 0.5 * (len(storm_ids) + len(paced_ids))
    footprint = Footprint(
        {**system.pids(), BENCH: os.getpid()},
        alone={BENCH},  # the stack is its child
    )
    sampler = asyncio.create_task(_sampler(footprint))
    result: dict[str, Any] = {}
    try:
        # 1. setup -----------------------------------------------------------------------
        say(f"setup: {len(storm_ids) + len(paced_ids)} accounts, concurrency {args.concurrency}")
        started = time.monotonic()
        fixture = await prepare(urls, len(storm_ids) + len(paced_ids))
        await create_accounts(
            urls, fixture, storm_ids + paced_ids, args.concurrency, say, staged=args.staged_setup
        )
        settle = await wait_quiet(bootstrap, prefix, say, timeout=quiet_timeout)
        setup_seconds = time.monotonic() - started
        result["setup"] = {
            "accounts": len(storm_ids) + len(paced_ids),
            "concurrency": args.concurrency,
            "mode": "staged" if args.staged_setup else "pipelined",
            "seconds": round(setup_seconds, 1),
            "accounts_per_s": round((len(storm_ids) + len(paced_ids)) / setup_seconds, 1),
            "stages": fixture.stages,
            "settle_seconds": round(settle, 1),
            "error_samples": fixture.errors[:3],
        }
        say(f"setup done in {setup_seconds:.0f} s")
        # Only accounts whose setup fully succeeded take part in the storms.
        ready = fixture.serviced & set(fixture.addresses)
        storm_ids = [a for a in storm_ids if a in ready]
        paced_ids = [a for a in paced_ids if a in ready]
        result["setup"]["complete_accounts"] = len(ready)
        footprint.mark("idle_start")
        await asyncio.sleep(args.idle_seconds)
        footprint.mark("idle_end")
        idle_rss = footprint.sample()
        idle_cpu = footprint.cpu_between("idle_start", "idle_end")

        # 2. status storm ----------------------------------------------------------------
        say(f"status storm: {len(storm_ids)} accounts into Blocked")
        footprint.mark("status_start")
        status_started = time.time()
        status = await status_storm(urls, storm_ids, fixture.active_list_id, args.concurrency, say)
        footprint.mark("status_end")
        status_ended = time.time()
        status_curve = status.pop("_curve")
        result["status_storm"] = status
        lat = status["latency_ms"]
        say(
            f"status storm: all {status['visible']} visible after "
            f"{status['all_visible_seconds']} s; latency p50 {lat.get('p50')} "
            f"p99 {lat.get('p99')} ms"
        )
        await wait_quiet(bootstrap, prefix, say, timeout=quiet_timeout)

        # 3. disconnect storm ------------------------------------------------------------
        listener = Listener(bootstrap, prefix)
        await listener.start()
        topics = [f"{prefix}{t}" for t in ALL_TOPICS]
        before = await end_offsets(bootstrap, topics)
        observed = stack.database_url("accounts")
        if system.postgres is not None:
            observed = statements.as_observer(observed)
            await statements.reset(system.postgres.admin_url)
        async with Progress(observed) as progress:
            baseline = await progress.counts()
            say(f"disconnect storm: {len(storm_ids)} disconnects, {args.concurrency} in flight")
            footprint.mark("storm_start")
            storm_started = time.time()
            profile_task = asyncio.create_task(_profile(system, footprint, args))
            storm = await disconnect_all(urls, storm_ids, args.concurrency)
            accepted_at = time.time()
            say(
                f"  accepted {len(storm.responded)} in {accepted_at - storm_started:.1f} s "
                f"({len(storm.responded) / (accepted_at - storm_started):.0f}/s)"
            )
            await wait_complete(
                progress,
                storm.steps * len(storm.disconnection),
                baseline,
                timeout=120 + len(storm_ids) * 0.5,
                say=say,
            )
            footprint.mark("storm_end")
            storm_ended = time.time()
            finished = await progress.finished(list(storm.disconnection.values()))
            await wait_quiet(bootstrap, prefix, say, timeout=quiet_timeout)
            footprint.mark("storm_quiet")
            counted = (
                await statements.per_disconnect(
                    system.postgres.admin_url,
                    {name: f"bench_{name}" for name in SERVICE_GROUPS},
                    len(storm_ids),
                )
                if system.postgres is not None
                else None
            )
            after = await end_offsets(bootstrap, topics)
            profile = await profile_task

            done = {a: finished[d][0] for a, d in storm.disconnection.items()}
            complete_times = [t for t in done.values() if t is not None]
            incomplete = [finished[d][1] for a, d in storm.disconnection.items() if done[a] is None]
            sustained = sustained_rate(complete_times)
            last = max(complete_times) if complete_times else storm_ended
            kafka_done = listener.completed(storm.steps)
            kafka_times = [kafka_done[d] for d in storm.disconnection.values() if d in kafka_done]
            cpu = footprint.cpu_between("storm_start", "storm_quiet")
            n = max(len(complete_times), 1)
            window = footprint.marks["storm_quiet"][0] - footprint.marks["storm_start"][0]
            idle_rate = {k: v / args.idle_seconds for k, v in idle_cpu.items()}
            net = {k: max(v - idle_rate.get(k, 0.0) * window, 0.0) for k, v in cpu.items()}
            per_service = cpu_ms_per_disconnect(cpu, n)
            result["disconnect_storm"] = {
                "cpu_ms_per_disconnect": per_service,
                "cpu_ms_per_disconnect_services": round(
                    sum(v for k, v in per_service.items() if k in SERVICE_GROUPS), 1
                ),
                "disconnects": len(storm_ids),
                "accepted": len(storm.responded),
                "errors": len(storm.errors),
                "error_samples": storm.errors[:3],
                "completed": len(complete_times),
                "incomplete_samples": incomplete[:3],
                "concurrency": args.concurrency,
                "accept_seconds": round(accepted_at - storm_started, 2),
                "accept_per_s": round(len(storm.responded) / (accepted_at - storm_started), 1),
                "all_complete_seconds": round(last - storm_started, 2),
                "overall_complete_per_s": round(len(complete_times) / (last - storm_started), 1),
                "sustained_complete_per_s": round(sustained, 1),
                "sustained_kafka_observed_per_s": round(sustained_rate(kafka_times), 1),
                "messages_per_topic": {
                    t[len(prefix) :]: after.get(t, 0) - before.get(t, 0) for t in topics
                },
                "cpu_seconds": cpu,
                "cpu_seconds_per_1000": {k: round(v * 1000 / n, 2) for k, v in cpu.items()},
                "cpu_seconds_per_1000_net_of_idle": {
                    k: round(v * 1000 / n, 2) for k, v in net.items()
                },
                "cpu_window_seconds": round(window, 1),
                "profile": profile,
                "database_statements_per_disconnect": counted,
            }
            say(
                f"disconnect storm: {len(complete_times)} complete in "
                f"{last - storm_started:.1f} s, sustained {sustained:.1f}/s"
            )

            # 4. latency at half the sustained rate --------------------------------------
            rate = max(sustained / 2, 0.5)
            say(f"latency: {len(paced_ids)} disconnects at {rate:.1f}/s")
            baseline = await progress.counts()
            footprint.mark("paced_start")
            paced = await disconnect_paced(urls, paced_ids, rate)
            await wait_complete(
                progress,
                paced.steps * len(paced.disconnection),
                baseline,
                timeout=120 + len(paced_ids) / rate * 3,
                say=say,
            )
            await asyncio.sleep(0.5)  # the listener reads the last completion events
            footprint.mark("paced_end")
            finished = await progress.finished(list(paced.disconnection.values()))
            e2e = [
                (finished[d][0] - paced.responded[a]) * 1000
                for a, d in paced.disconnection.items()
                if finished[d][0] is not None
            ]
            kafka_done = listener.completed(paced.steps)
            observed = [
                (kafka_done[d] - paced.responded[a]) * 1000
                for a, d in paced.disconnection.items()
                if d in kafka_done
            ]
            requests = [(paced.responded[a] - paced.requested[a]) * 1000 for a in paced.responded]
            result["latency"] = {
                "disconnects": len(paced_ids),
                "rate_per_s": round(rate, 1),
                "errors": len(paced.errors),
                "end_to_end_ms": percentiles(e2e),
                "completion_events_seen_ms": percentiles(observed),
                "http_request_ms": percentiles(requests),
            }
            say(f"latency: end to end {result['latency']['end_to_end_ms']}")
        await listener.stop()
        await wait_quiet(bootstrap, prefix, say, timeout=quiet_timeout)
        _, subscriptions = await group_lag(bootstrap, list(SERVICE_GROUPS), prefix)

        # footprint ----------------------------------------------------------------------
        storm_rss = footprint.peak_rss_between(storm_started, storm_ended)
        status_rss = footprint.peak_rss_between(status_started, status_ended)
        result["footprint"] = {
            "rss_mb_idle": {k: round(v / MB, 1) for k, v in idle_rss.items()},
            "cpu_percent_idle": {
                k: round(100 * v / args.idle_seconds, 1) for k, v in idle_cpu.items()
            },
            "rss_mb_peak_status_storm": {k: round(v / MB, 1) for k, v in status_rss.items()},
            "rss_mb_peak_disconnect_storm": {k: round(v / MB, 1) for k, v in storm_rss.items()},
            "cpu_seconds_per_1000_disconnects": result["disconnect_storm"]["cpu_seconds_per_1000"],
            "cpu_seconds_per_1000_disconnects_net_of_idle": result["disconnect_storm"][
                "cpu_seconds_per_1000_net_of_idle"
            ],
            "cpu_seconds_status_storm": footprint.cpu_between("status_start", "status_end"),
        }
        result["curves"] = {
            "disconnect_accepted": _curve([t - storm_started for t in storm.responded.values()]),
            "disconnect_complete": _curve([t - storm_started for t in complete_times]),
            "disconnect_kafka_observed": _curve([t - storm_started for t in kafka_times]),
            "status_visible": _curve(status_curve),
            "latency_ms_sorted": [round(v, 1) for v in sorted(e2e)[:: max(1, len(e2e) // 200)]],
        }
        plan = BusPlan(
            disconnects=len(storm_ids),
            messages={
                t: result["disconnect_storm"]["messages_per_topic"].get(t, 0) for t in ALL_TOPICS
            },
            average_bytes={
                t: int(total / count) for t, (count, total) in listener.sizes.items() if count
            },
            subscriptions={
                g: [t[len(prefix) :] for t in topics_ if t.startswith(prefix)]
                for g, topics_ in subscriptions.items()
            },
        )
        result["_bus_plan"] = plan
        return result
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


def cpu_ms_per_disconnect(cpu: dict[str, float], disconnects: int) -> dict[str, float]:
    """CPU milliseconds per fully fanned-out disconnect, per component; a service's API and
    worker processes (a split layout) are added up under the service's name."""
    out: dict[str, float] = {}
    for name, seconds in cpu.items():
        key = name.split()[0] if name.split()[0] in SERVICE_GROUPS else name
        out[key] = out.get(key, 0.0) + seconds * 1000 / max(disconnects, 1)
    return {k: round(v, 2) for k, v in out.items()}


async def _profile(system: System, footprint: Footprint, args: argparse.Namespace) -> Any:
    """A few seconds into the storm, py-spy on the services that burnt the most CPU so far,
    one after the other (the hottest first), each for a short window."""
    if args.profile_seconds <= 0 or args.profile_services <= 0:
        return []
    await asyncio.sleep(args.profile_delay)
    now = footprint.mark("profile_pick")
    start = footprint.marks["storm_start"][1]
    services = {
        k: round(now[k] - start.get(k, 0.0), 2) for k in now if k.split()[0] in SERVICE_GROUPS
    }
    ranked = sorted(services, key=lambda k: services[k], reverse=True)
    profiles = []
    for name in ranked[: args.profile_services]:
        pid = system.pids()[name]
        say(f"  profiling {name} (pid {pid}) for {args.profile_seconds:.0f} s with py-spy")
        summary = await record(pid, args.profile_seconds)
        profiles.append(
            {
                "service": name,
                "seconds": args.profile_seconds,
                "cpu_seconds_before_profile": services,
                **summary,
            }
        )
    return profiles


def run_database(database: str, args: argparse.Namespace) -> dict[str, Any]:
    say(f"=== {database}: starting the system")
    layout = args.layout or ("split" if database == "postgresql" else "combined")
    system = System(database, log_level=args.log_level, layout=layout)
    started = time.monotonic()
    system.start(say)
    say(f"system up in {time.monotonic() - started:.0f} s ({system.root}), layout {layout}")
    try:
        result = asyncio.run(scenario(system, args))
        plan: BusPlan = result.pop("_bus_plan")
        system.stop_services()
        assert system.stack is not None
        say(f"bus ceiling: {sum(plan.messages.values())} messages")
        bus = bus_ceiling(system.stack.bootstrap_servers, plan)
        bus["subscriptions"] = plan.subscriptions
        bus["average_bytes"] = plan.average_bytes
        say(f"bus ceiling: {bus['disconnects_per_s']} disconnects/s")
        # Slow by nature: at most 500 disconnects' worth, scaled; a rate is a rate.
        small = plan.at_most(500)
        bus_commit_each = bus_ceiling(system.stack.bootstrap_servers, small, commit_each=True)
        bus_commit_each["disconnects"] = small.disconnects
        say(f"bus ceiling, commit per message: {bus_commit_each['disconnects_per_s']}/s")
        say(f"monolith ceiling: {args.accounts} disconnects")
        monolith = json.loads(
            subprocess.run(  # noqa: S603 - our interpreter, our module
                [
                    sys.executable,
                    "-m",
                    "bench.fanout.monolith",
                    "--url",
                    system.monolith_url,
                    "--accounts",
                    str(args.accounts),
                ],
                check=True,
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parents[2],
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        say(f"monolith ceiling: {monolith['disconnects_per_s']} disconnects/s")
        ours = result["disconnect_storm"]["sustained_complete_per_s"]
        result["ceilings"] = {
            "bus": bus,
            "bus_commit_each_message": bus_commit_each,
            "monolith": monolith,
            "fraction_of_bus": round(ours / bus["disconnects_per_s"], 3),
            "fraction_of_monolith": round(ours / monolith["disconnects_per_s"], 3),
        }
        result["monolith_fraction"] = result["ceilings"]["fraction_of_monolith"]
        result["layout"] = layout
    finally:
        system.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000, help="N: storm accounts")
    parser.add_argument(
        "--latency-accounts", type=int, default=None, help="M: paced accounts (default N/5)"
    )
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql"
    )
    parser.add_argument(
        "--postgres-accounts", type=int, default=None, help="N for PostgreSQL (default N)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument(
        "--staged-setup",
        action="store_true",
        help="set up all accounts, then all services, then all IPs (default: per account)",
    )
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-delay", type=float, default=15.0)
    parser.add_argument("--profile-services", type=int, default=2, help="the hottest k")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle window")
    parser.add_argument("--log-level", default="INFO", help="the services' LOG_LEVEL")
    parser.add_argument(
        "--layout",
        choices=["combined", "split"],
        default=None,
        help="one process per service, or API and worker apart as deployed (default: split "
        "on PostgreSQL; combined on SQLite, the embedded default, whose file one process owns)",
    )
    parser.add_argument("--name", default="fanout")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    base_accounts = args.accounts
    for database in [d.strip() for d in args.databases.split(",") if d.strip()]:
        args.accounts = (
            args.postgres_accounts
            if database == "postgresql" and args.postgres_accounts
            else base_accounts
        )
        latency_default = max(100, args.accounts // 5)
        paced = args.latency_accounts or latency_default
        run_args = argparse.Namespace(**{**vars(args), "latency_accounts": paced})
        started = time.monotonic()
        code = report.code_version()
        load_at_start = [round(v, 2) for v in os.getloadavg()]
        result = run_database(database, run_args)
        stamp = datetime.now(UTC)
        document = {
            "benchmark": "fanout",
            "database": database,
            "date": stamp.isoformat(timespec="seconds"),
            "accounts": args.accounts,
            "latency_accounts": paced,
            "wall_seconds": round(time.monotonic() - started, 1),
            "machine": {**report.machine(), "load_average_at_start": load_at_start},
            "code": code,
            **result,
        }
        name = f"{stamp:%Y-%m-%d}-{args.name}-{database}-{args.accounts}"
        paths = report.write(document, args.out, name)
        say(f"wrote {', '.join(str(p) for p in paths)}")
        print(report.markdown(document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
