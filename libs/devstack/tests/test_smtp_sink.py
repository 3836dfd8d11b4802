"""The development mail sink over real SMTP: what it stores, and with `drop_repeats`, what it
drops as a repeat and counts (in this process, over HTTP, and from a sink the Stack runs as a
process of its own)."""

from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from backhaul_devstack.kafka_broker import free_port
from backhaul_devstack.smtp_sink import MailSink, read_messages, read_repeats
from backhaul_devstack.stack import Stack

KEY = "X-Backhaul-Idempotency-Key"


def _message(subject: str, *, key: str | None, message_id: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "noreply@isp.example"
    message["To"] = "ada@example.com"
    message["Subject"] = subject
    message["Message-ID"] = message_id
    if key is not None:
        message[KEY] = key
    message.set_content("Hello")
    return message


async def _send(port: int, message: EmailMessage) -> str:
    errors, reply = await aiosmtplib.send(message, hostname="127.0.0.1", port=port)
    assert errors == {}
    return reply


@pytest.fixture
def sink(request, tmp_path):
    """A sink on free ports; parametrized indirectly, its options."""
    sink = MailSink.on_free_ports(tmp_path / "mail", **getattr(request, "param", {}))
    yield sink
    sink.stop()


@pytest.mark.parametrize("sink", [{"drop_repeats": True}], indirect=True)
async def test_drop_repeats_stores_a_repeated_key_once_and_counts_the_repeat(sink):
    port = sink.controller.port
    first = _message("first", key="event-1:ada@example.com", message_id="<1@isp.example>")
    # The same key is the same message, even under another Message-ID.
    again = _message("again", key="event-1:ada@example.com", message_id="<2@isp.example>")
    other = _message("other", key="event-2:ada@example.com", message_id="<3@isp.example>")
    assert await _send(port, first) == "Message accepted for delivery"
    assert "a repeat" in await _send(port, again)  # accepted (250): the sender is done
    assert await _send(port, other) == "Message accepted for delivery"

    assert [m["subject"] for m in read_messages(sink.directory)] == ["first", "other"]
    [repeat] = read_repeats(sink.directory)
    assert repeat["identity"] == f"{KEY.lower()}:event-1:ada@example.com"
    assert repeat["message_id"] == "<2@isp.example>"
    assert repeat["to"] == "ada@example.com" and repeat["subject"] == "again"
    async with httpx.AsyncClient() as http:
        listed = (await http.get(f"http://127.0.0.1:{sink.http_port}/repeats")).json()
        messages = (await http.get(f"http://127.0.0.1:{sink.http_port}/messages")).json()
    assert listed["drop_repeats"] is True
    assert listed["count"] == 1 and listed["repeats"] == [repeat]
    assert len(messages) == 2


@pytest.mark.parametrize("sink", [{"drop_repeats": True}], indirect=True)
async def test_without_a_key_the_message_id_is_the_identity(sink):
    port = sink.controller.port
    for subject in ("one", "two"):
        await _send(port, _message(subject, key=None, message_id="<same@isp.example>"))
    await _send(port, _message("three", key=None, message_id="<other@isp.example>"))
    assert [m["subject"] for m in read_messages(sink.directory)] == ["one", "three"]
    [repeat] = read_repeats(sink.directory)
    assert repeat["identity"] == "message-id:<same@isp.example>"


async def test_by_default_every_message_is_stored(sink):
    port = sink.controller.port
    for subject in ("first", "again"):
        await _send(port, _message(subject, key="event-1:ada@example.com", message_id="<1@x>"))
    assert [m["subject"] for m in read_messages(sink.directory)] == ["first", "again"]
    assert read_repeats(sink.directory) == []
    async with httpx.AsyncClient() as http:
        listed = (await http.get(f"http://127.0.0.1:{sink.http_port}/repeats")).json()
    assert listed == {"drop_repeats": False, "count": 0, "repeats": []}


async def test_a_restarted_sink_remembers_what_it_stored(tmp_path: Path):
    """The stored keys come from the directory, so a sink started again on it still knows
    them."""
    directory = tmp_path / "mail"
    directory.mkdir()
    raw = _message("first", key="event-1:ada@example.com", message_id="<1@x>").as_bytes()
    (directory / "000001.eml").write_bytes(raw)
    sink = MailSink(directory, smtp_port=free_port(), http_port=free_port(), drop_repeats=True)
    sink.start()
    try:
        again = _message("again", key="event-1:ada@example.com", message_id="<1@x>")
        await _send(sink.controller.port, again)
    finally:
        sink.stop()
    assert [m["subject"] for m in read_messages(directory)] == ["first"]
    assert len(read_repeats(directory)) == 1


async def test_the_stack_runs_a_sink_that_drops_repeats_and_gives_services_their_own_env(
    tmp_path: Path,
):
    """`Stack(drop_repeats=True)` starts the sink process with the option; the repeats it
    drops are readable from here, another process. `service_extra_env` reaches only the
    service it names."""
    stack = Stack(
        root=tmp_path,
        kafka_bootstrap="127.0.0.1:9",  # not started: only the sink runs here
        smtp_port=free_port(),
        mail_http_port=free_port(),
        extra_env={"LOG_LEVEL": "WARNING", "EMAIL_UNKNOWN_OUTCOME": "close"},
        service_extra_env={"notifications": {"EMAIL_UNKNOWN_OUTCOME": "resend"}},
        drop_repeats=True,
    )
    assert stack.service_env("notifications")["EMAIL_UNKNOWN_OUTCOME"] == "resend"
    assert stack.service_env("notifications")["LOG_LEVEL"] == "WARNING"
    assert stack.service_env("billing")["EMAIL_UNKNOWN_OUTCOME"] == "close"
    stack._start_mail_sink()
    try:
        message = _message("notice", key="event-9:ada@example.com", message_id="<9@x>")
        await _send(stack.smtp_port, message)
        await _send(stack.smtp_port, message)
    finally:
        stack.stop()
    assert len(read_messages(stack.mail_dir)) == 1
    assert len(read_repeats(stack.mail_dir)) == 1
