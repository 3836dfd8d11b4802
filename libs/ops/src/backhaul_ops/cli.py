"""`backhaul-ops`: the operator's view of dead letters, topics and disconnects.

Kafka is reached with the services' own settings (KAFKA_BOOTSTRAP_SERVERS,
KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_CAFILE, KAFKA_TOPIC_PREFIX); topic names
are given without the prefix, which is added. Exit codes: 0 done, 1 failed (the reason is
printed), 2 bad usage or settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from typing import Annotated, Any, NoReturn, TypeVar
from uuid import UUID

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from backhaul_ops import dead_letters, progress
from backhaul_ops.config import REPLAY_GROUP, OpsSettings, get_settings
from backhaul_ops.dead_letters import DeadLetter, ReplayOutcome
from backhaul_ops.errors import OpsError
from backhaul_ops.messages import MessageView, compact_json
from backhaul_ops.tail import TopicMessage, tail

EXIT_FAILED = 1
EXIT_USAGE = 2

T = TypeVar("T")

app = typer.Typer(
    name="backhaul-ops",
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
dlq_app = typer.Typer(
    help="Dead-letter topics (<topic>.<group>.dlq): list, inspect and replay them.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(dlq_app, name="dlq")


@app.callback()
def configure(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the Kafka client's own log lines.")
    ] = False,
) -> None:
    # aiokafka logs every failed connection attempt; the command's own error says it once.
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.INFO if verbose else logging.CRITICAL)


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> OpsSettings:
    try:
        return get_settings()
    except ValidationError as exc:
        # Without the input values: a misplaced secret must not reach the terminal.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        _fail(f"invalid settings: {problems}", EXIT_USAGE)


def _run(settings: OpsSettings, work: Coroutine[Any, Any, T]) -> T:
    """Run one command's work; operator-facing failures become a message and exit code 1."""
    try:
        return asyncio.run(work)
    except OpsError as exc:
        _fail(str(exc))
    except KafkaError as exc:
        _fail(f"Kafka at {settings.kafka_bootstrap_servers}: {exc!r}")


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _event_line(message: MessageView) -> str:
    if message.event_type is None:
        return f"not an envelope ({message.decode_error})"
    return (
        f"{message.event_type} v{message.version} id={message.event_id} "
        f"subject={message.subject} correlation={message.correlation_id}"
    )


@dlq_app.command("list")
def dlq_list(
    group: Annotated[
        str | None, typer.Option("--group", "-g", help="Only the DLQs of this consumer group.")
    ] = None,
    non_empty: Annotated[
        bool, typer.Option("--non-empty", help="Only the DLQs that hold messages.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Every dead-letter topic with its message count and how many are not replayed yet."""
    settings = _settings()
    topics = _run(settings, dead_letters.list_dead_letter_topics(settings, group=group))
    if non_empty:
        topics = [t for t in topics if t.messages]
    if as_json:
        _print_json([t.as_dict() for t in topics])
        return
    if not topics:
        typer.echo("no dead-letter topics" + (f" of group {group}" if group else ""))
        return
    width = max(len(t.name) for t in topics)
    typer.echo(f"{'TOPIC':<{width}}  {'GROUP':<14}  {'MESSAGES':>8}  {'NOT REPLAYED':>12}")
    for t in topics:
        typer.echo(f"{t.name:<{width}}  {t.group:<14}  {t.messages:>8}  {t.not_replayed:>12}")


def _render_dead_letter(letter: DeadLetter) -> str:
    message = letter.message
    state = "replayed" if letter.replayed else "not replayed"
    lines = [
        f"{letter.topic} [{letter.partition}]@{letter.offset} ({state})",
        f"  original:  {letter.original_topic}"
        f" [{letter.original_partition}]@{letter.original_offset}"
        f"  key={letter.key.decode('utf-8', errors='replace') if letter.key else None}",
        f"  group:     {letter.group}  attempts: {letter.attempts}  failed at: {letter.failed_at}",
        f"  error:     {letter.error}",
        f"  event:     {_event_line(message)}",
    ]
    if message.event_type is not None and message.decode_error:
        lines.append(f"  contracts: {message.decode_error}")
    if message.payload is not None:
        lines.append(f"  payload:   {compact_json(message.payload)}")
    if message.raw is not None:
        lines.append(f"  raw:       {message.raw}")
    return "\n".join(lines)


@dlq_app.command("show")
def dlq_show(
    topic: Annotated[str, typer.Argument(help="The DLQ, e.g. accounts.events.v1.billing.dlq")],
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Show at most N, oldest first.")
    ] = None,
    not_replayed: Annotated[
        bool, typer.Option("--not-replayed", help="Only the dead letters not replayed yet.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Each dead letter: where it came from, which group gave up and why, and the event."""
    settings = _settings()
    letters = _run(
        settings,
        dead_letters.read_dead_letters(
            settings, topic, limit=limit, not_replayed_only=not_replayed
        ),
    )
    if as_json:
        _print_json([letter.as_dict() for letter in letters])
        return
    if not letters:
        typer.echo(f"no dead letters on {settings.topic_name(topic)}")
        return
    typer.echo("\n\n".join(_render_dead_letter(letter) for letter in letters))


def _render_outcome(outcome: ReplayOutcome) -> str:
    letter = outcome.letter
    what = (
        f"{outcome.action:<16} [{letter.partition}]@{letter.offset} "
        f"{letter.message.event_type or 'undecodable'} id={letter.message.event_id} "
        f"-> {letter.original_topic}"
    )
    return f"{what}: {outcome.error}" if outcome.error else what


@dlq_app.command("replay")
def dlq_replay(
    topic: Annotated[str, typer.Argument(help="The DLQ, e.g. accounts.events.v1.billing.dlq")],
    event_id: Annotated[
        UUID | None,
        typer.Option("--event-id", help="Replay only the dead letters of this event."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be replayed; change nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Put dead letters back on their original topics, each at most once across runs.

    The original value, key and headers (without the dlq.* ones) are republished with the
    idempotent producer; after each one the consumer group backhaul-ops.replay commits its
    position on the DLQ, so a second run does not replay it again. Consumers are idempotent
    by event id, so replaying an event already applied changes nothing. Exits with 1 if a
    dead letter could not be replayed or --event-id matched nothing.
    """
    settings = _settings()
    outcomes = _run(
        settings,
        dead_letters.replay(
            settings, topic, event_id=str(event_id) if event_id else None, dry_run=dry_run
        ),
    )
    if as_json:
        _print_json([o.as_dict() for o in outcomes])
    else:
        for outcome in outcomes:
            typer.echo(_render_outcome(outcome))
        counts = {a: sum(o.action == a for o in outcomes) for a in ("replayed", "failed")}
        if dry_run:
            typer.echo(f"dry run: {len(outcomes)} would be replayed; nothing changed")
        else:
            typer.echo(
                f"replayed {counts['replayed']}, failed {counts['failed']} "
                f"(ledger: consumer group {REPLAY_GROUP})"
            )
    if event_id and not outcomes:
        _fail(f"no dead letter of event {event_id} on {settings.topic_name(topic)}")
    if any(o.action == "failed" for o in outcomes):
        raise typer.Exit(EXIT_FAILED)


def _render_topic_message(item: TopicMessage) -> str:
    message = item.message
    where = f"{item.timestamp.isoformat()} {item.topic}[{item.partition}]@{item.offset}"
    if message.event_type is None:
        return f"{where} UNDECODABLE key={item.key} {message.decode_error} raw={message.raw}"
    line = f"{where} {_event_line(message)} payload={compact_json(message.payload)}"
    return f"{line} contracts-error={message.decode_error!r}" if message.decode_error else line


@app.command("tail")
def tail_topic(
    topic: Annotated[str, typer.Argument(help="The topic, e.g. accounts.events.v1")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest message kept.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Stop after N messages.")
    ] = None,
    account: Annotated[
        str | None, typer.Option("--account", help="Only the events about this account id.")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--no-follow", help="Wait for new messages, or stop at the current end."
        ),
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Print a topic's events decoded with the contracts, one line each, as they arrive.

    Each line: time, topic[partition]@offset, event type and version, event id, subject
    (the account), correlation id and payload. Messages the contracts cannot decode are
    printed raw with the reason. Stop with Ctrl-C.
    """
    settings = _settings()

    async def follow_topic() -> None:
        async for item in tail(
            settings,
            topic,
            from_beginning=from_beginning,
            follow=follow,
            account_id=account,
            limit=limit,
        ):
            typer.echo(compact_json(item.as_dict()) if as_json else _render_topic_message(item))

    try:
        _run(settings, follow_topic())
    except KeyboardInterrupt:
        return


@app.command("progress")
def disconnect_progress(
    account_id: Annotated[int, typer.Argument(help="The account id.")],
    accounts_url: Annotated[
        str, typer.Option("--accounts-url", envvar="ACCOUNTS_URL", help="The accounts API.")
    ] = progress.DEFAULT_ACCOUNTS_URL,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="BACKHAUL_TOKEN",
            show_default=False,
            help="Bearer token for the accounts API (never printed).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The account's disconnections, newest first, and the state of each fan-out step."""
    try:
        found = progress.fetch_disconnections(account_id, accounts_url=accounts_url, token=token)
    except OpsError as exc:
        _fail(str(exc))
    if as_json:
        _print_json([d.model_dump(mode="json") for d in found])
        return
    typer.echo(render_disconnections(account_id, found))


def render_disconnections(account_id: int, found: list[progress.DisconnectionView]) -> str:
    if not found:
        return f"account {account_id} has no disconnections"
    blocks = []
    for d in found:
        lines = [
            f"disconnection {d.id} at {d.disconnected_at.isoformat()} "
            f"by {d.disconnected_by}: {d.progress}"
        ]
        for s in d.steps:
            line = f"  {s.step:<16} {s.state:<8} {s.updated_at.isoformat()}"
            if s.error:
                line += f"  error: {s.error}"
            elif s.result:
                line += f"  {compact_json(s.result)}"
            lines.append(line)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main() -> None:
    app()
