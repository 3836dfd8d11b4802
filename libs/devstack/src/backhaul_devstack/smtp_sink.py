"""The development mail sink: a real SMTP server (aiosmtpd) that keeps what it receives.

Every message is written to `<dir>/<n>.eml` and listed at `GET /messages` on a small HTTP
port, so people and tests can see exactly what was sent. Recipients on chosen domains can
be refused with a 4xx (try again later) or 5xx (permanent) reply, to exercise retries.

With `drop_repeats` it acts as a relay (or mailbox) that deduplicates: a message whose
`X-Backhaul-Idempotency-Key` (without one, its Message-ID) it already stored is accepted with
250 and not stored again. Each such repeat is appended to `<dir>/repeats.jsonl`, so another
process can count them (`read_repeats`), and listed at `GET /repeats`. This is what makes
the notifications service's `EMAIL_UNKNOWN_OUTCOME=resend` exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import email.parser
import email.policy
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from backhaul_devstack.kafka_broker import free_port

REPEATS_FILE = "repeats.jsonl"


@dataclass
class SinkHandler:
    directory: Path
    temporary_failure_domains: set[str] = field(default_factory=set)
    permanent_failure_domains: set[str] = field(default_factory=set)
    drop_repeats: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # The identities of the stored messages, read from the directory on first use.
    _stored: set[str] | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain in self.permanent_failure_domains:
            return f"550 5.1.1 <{address}>: recipient address rejected: user unknown"
        if domain in self.temporary_failure_domains:
            return f"451 4.7.1 <{address}>: try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self.drop_repeats:
                message = _headers(content)
                identity = _identity(message)
                stored = self._stored_identities()
                if identity is not None and identity in stored:
                    _append_repeat(self.directory, identity, message)
                    return "250 Message accepted for delivery (a repeat, not stored again)"
                if identity is not None:
                    stored.add(identity)
            number = len(list(self.directory.glob("*.eml"))) + 1
            (self.directory / f"{number:06d}.eml").write_bytes(content)
        return "250 Message accepted for delivery"

    def _stored_identities(self) -> set[str]:
        if self._stored is None:
            self._stored = {
                identity
                for path in self.directory.glob("*.eml")
                if (identity := _identity(_headers(path.read_bytes()))) is not None
            }
        return self._stored


def _headers(content: bytes) -> email.message.Message:
    return email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(content)


def _identity(message: email.message.Message) -> str | None:
    """What makes two messages the same one: the idempotency key, else the Message-ID."""
    for header in ("X-Backhaul-Idempotency-Key", "Message-ID"):
        value = message.get(header)
        if value is not None and str(value).strip():
            return f"{header.lower()}:{str(value).strip()}"
    return None


def _append_repeat(directory: Path, identity: str, message: email.message.Message) -> None:
    record = {
        "identity": identity,
        "message_id": message.get("Message-ID"),
        "to": message.get("To"),
        "subject": message.get("Subject"),
        "received_at": datetime.now(UTC).isoformat(),
    }
    line = json.dumps({k: None if v is None else str(v) for k, v in record.items()}) + "\n"
    with (directory / REPEATS_FILE).open("a") as out:
        out.write(line)


def read_repeats(directory: Path) -> list[dict[str, Any]]:
    """The repeats a `drop_repeats` sink accepted and did not store, oldest first: one per
    repeat (identity, message_id, to, subject, received_at). Empty if there were none."""
    path = directory / REPEATS_FILE
    if not path.exists():
        return []
    # Only whole lines: the sink (another process) may be appending one right now.
    lines = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def read_messages(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body(preferencelist=("plain", "html"))
        out.append(
            {
                "id": path.stem,
                "from": message["From"],
                "to": message["To"],
                "subject": message["Subject"],
                "message_id": message["Message-ID"],
                "idempotency_key": message["X-Backhaul-Idempotency-Key"],
                "body": body.get_content() if body is not None else "",
            }
        )
    return out


class MailSink:
    def __init__(
        self,
        directory: Path,
        *,
        smtp_port: int = 1025,
        http_port: int = 8025,
        drop_repeats: bool = False,
    ) -> None:
        self.directory = directory
        self.handler = SinkHandler(directory, drop_repeats=drop_repeats)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=smtp_port)
        self.http_port = http_port
        self._http: ThreadingHTTPServer | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.controller.start()
        directory = self.directory
        drop_repeats = self.handler.drop_repeats

        class Api(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.rstrip("/")
                listing: object
                if path == "/messages":
                    listing = read_messages(directory)
                elif path == "/repeats":
                    repeats = read_repeats(directory)
                    listing = {
                        "drop_repeats": drop_repeats,
                        "count": len(repeats),
                        "repeats": repeats,
                    }
                else:
                    self.send_error(404, "try GET /messages or GET /repeats")
                    return
                body = json.dumps(listing, indent=2).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self._http = ThreadingHTTPServer(("127.0.0.1", self.http_port), Api)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.controller.stop()
        if self._http is not None:
            self._http.shutdown()

    @classmethod
    def on_free_ports(cls, directory: Path, *, drop_repeats: bool = False) -> MailSink:
        """A started sink on ports nobody holds. A free port can be taken by another process
        between choosing and binding it, so a failed start is tried again on new ones."""
        for attempt in range(5):
            sink = cls(
                directory,
                smtp_port=free_port(),
                http_port=free_port(),
                drop_repeats=drop_repeats,
            )
            try:
                sink.start()
                return sink
            except (OSError, RuntimeError):
                with contextlib.suppress(Exception):
                    sink.stop()
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")


def serve_forever(
    directory: Path, smtp_port: int, http_port: int, *, drop_repeats: bool = False
) -> None:
    sink = MailSink(directory, smtp_port=smtp_port, http_port=http_port, drop_repeats=drop_repeats)
    sink.start()
    print(
        f"mail sink: smtp://127.0.0.1:{smtp_port}  messages: http://127.0.0.1:{http_port}/messages"
        + (f"  repeats dropped: http://127.0.0.1:{http_port}/repeats" if drop_repeats else ""),
        flush=True,
    )
    try:
        asyncio.run(asyncio.Event().wait())
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
