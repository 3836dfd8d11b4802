"""The development mail sink: a real SMTP server (aiosmtpd) that keeps what it receives.

Every message is written to `<dir>/<n>.eml` and listed at `GET /messages` on a small HTTP
port, so people and tests can see exactly what was sent. Recipients on chosen domains can
be refused with a 4xx (try again later) or 5xx (permanent) reply, to exercise retries.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class SinkHandler:
    directory: Path
    temporary_failure_domains: set[str] = field(default_factory=set)
    permanent_failure_domains: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            number = len(list(self.directory.glob("*.eml"))) + 1
            content = envelope.original_content or b""
            (self.directory / f"{number:06d}.eml").write_bytes(content)
        return "250 Message accepted for delivery"


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
    def __init__(self, directory: Path, *, smtp_port: int = 1025, http_port: int = 8025) -> None:
        self.directory = directory
        self.handler = SinkHandler(directory)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=smtp_port)
        self.http_port = http_port
        self._http: ThreadingHTTPServer | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.controller.start()
        directory = self.directory

        class Api(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/messages":
                    self.send_error(404, "try GET /messages")
                    return
                body = json.dumps(read_messages(directory), indent=2).encode()
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


def serve_forever(directory: Path, smtp_port: int, http_port: int) -> None:
    sink = MailSink(directory, smtp_port=smtp_port, http_port=http_port)
    sink.start()
    print(
        f"mail sink: smtp://127.0.0.1:{smtp_port}  messages: http://127.0.0.1:{http_port}/messages",
        flush=True,
    )
    try:
        asyncio.run(asyncio.Event().wait())
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
