"""`backhaul-dev`: run the local stack, the embedded Kafka, or the mail sink."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from backhaul_devstack import kafka_broker
from backhaul_devstack.paths import var_dir
from backhaul_devstack.smtp_sink import serve_forever
from backhaul_devstack.stack import Stack


def _run(args: argparse.Namespace) -> int:
    stack = Stack(root=var_dir(), kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Ctrl-C, a closed terminal or a supervisor's TERM all stop everything cleanly. SIGINT is
    # set explicitly: a shell starts background jobs with it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        stack.start(on_progress=lambda msg: print(msg, flush=True))
    except BaseException as exc:
        print(f"start failed: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    print("\nBackhaul is up:\n")
    for name in stack.ports:
        url = stack.url(name)
        print(f"  {name:<14} {url}   docs {url}/docs")
    print(f"\n  kafka          {stack.bootstrap_servers}")
    print(
        f"  mail sink      smtp://127.0.0.1:{stack.smtp_port}  "
        f"received mail: http://127.0.0.1:{stack.mail_http_port}/messages"
    )
    print(f"  logs           {stack.root / 'logs'}")
    print("\nEvery API call needs a bearer token; a development token (all scopes, 30 days):")
    print(f"\n  export TOKEN={development_token()}")
    print('  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8001/accounts')
    print("\nCtrl-C stops everything.", flush=True)
    try:
        while not stopping:
            for name, service in stack.services.items():
                if service.process is not None and service.process.poll() is not None:
                    print(
                        f"{name} exited with {service.process.returncode}; see {service.log_path}",
                        file=sys.stderr,
                    )
                    stopping = True
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    print("\nstopping ...", flush=True)
    stack.stop()
    print("stopped.")
    return 0


def development_token(subject: str = "developer", scopes: list[str] | None = None) -> str:
    """A bearer token for the local stack: signed with JWT_SECRET (or the dev default)."""
    from backhaul_kit.auth import issue_token
    from backhaul_kit.config import DEV_JWT_SECRET

    return issue_token(os.environ.get("JWT_SECRET", DEV_JWT_SECRET), subject=subject, scopes=scopes)


def _kafka(args: argparse.Namespace) -> int:
    broker = kafka_broker.KafkaBroker(data_dir=var_dir() / "kafka")
    if args.action == "fetch":
        print(kafka_broker.fetch(quiet=False))
    elif args.action == "start":
        broker.start()
        print(f"Kafka ready on {broker.bootstrap_servers}")
    elif args.action == "stop":
        broker.stop()
        print("Kafka stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backhaul-dev")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start Kafka, the mail sink and the five services")
    kafka = commands.add_parser("kafka", help="the embedded Kafka broker")
    kafka.add_argument("action", choices=["fetch", "start", "stop"])
    token = commands.add_parser("token", help="print a development bearer token")
    token.add_argument("--subject", default="developer")
    token.add_argument("--scope", action="append", dest="scopes", help="repeat; default: all")
    sink = commands.add_parser("mail-sink", help="the development SMTP sink")
    sink.add_argument("--dir", type=Path, default=var_dir() / "mail")
    sink.add_argument("--smtp-port", type=int, default=1025)
    sink.add_argument("--http-port", type=int, default=8025)
    sink.add_argument(
        "--drop-repeats",
        action="store_true",
        help="act as a deduplicating relay: store a message with an idempotency key (or "
        "Message-ID) already stored only once, and count the repeats (GET /repeats)",
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "kafka":
        return _kafka(args)
    if args.command == "token":
        print(development_token(args.subject, args.scopes))
        return 0
    serve_forever(args.dir, args.smtp_port, args.http_port, drop_repeats=args.drop_repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
