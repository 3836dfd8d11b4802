"""Request size limits, through a real HTTP server: headers (431) and bodies (413)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from backhaul_devstack.kafka_broker import free_port
from backhaul_kit.config import Role, ServiceSettings
from backhaul_kit.http import server_head_limit
from backhaul_kit.runtime import ServiceRuntime

LIMIT = 4096


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    """A service's app (the runtime's own middleware) behind uvicorn, configured as `serve`."""
    settings = ServiceSettings(
        service_name="limits",
        data_dir=tmp_path,
        max_request_header_bytes=LIMIT,
        max_request_body_bytes=2048,
    )
    runtime = ServiceRuntime(
        settings, title="limits", description="", migrations_dir=tmp_path / "migrations"
    )
    port = free_port()
    config = uvicorn.Config(
        runtime.create_app(Role.API),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        h11_max_incomplete_event_size=server_head_limit(LIMIT),
    )
    served = uvicorn.Server(config)
    task = asyncio.create_task(served.serve())
    while not served.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        served.should_exit = True
        await asyncio.wait_for(task, 15)


def _headers(total: int) -> dict[str, str]:
    """Custom headers of about `total` bytes on the wire (`name: value\\r\\n` each)."""
    return {f"x-filler-{i}": "v" * 1000 for i in range(total // 1016)}


async def test_headers_over_the_limit_are_refused_with_a_json_431(server: str) -> None:
    async with httpx.AsyncClient() as http:
        fine = await http.get(f"{server}/healthz", headers=_headers(LIMIT // 2))
        assert fine.status_code == 200

        refused = await http.get(f"{server}/healthz", headers=_headers(LIMIT + 2048))
        assert refused.status_code == 431
        assert refused.json() == {
            "error": "request_headers_too_large",
            "message": f"request headers exceed {LIMIT} bytes",
        }

        # One big header counts as much as many small ones.
        one = await http.get(f"{server}/healthz", headers={"x-big": "v" * (LIMIT + 10)})
        assert one.status_code == 431


async def test_a_head_that_never_ends_is_not_buffered_without_bound(server: str) -> None:
    """A client that keeps sending header lines is cut off at the server's cap (uvicorn's
    own 400) instead of being buffered until memory runs out."""
    host, port = server.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        line = b"x-filler: " + b"v" * 1000 + b"\r\n"
        answer = b""
        for _ in range(2 * server_head_limit(LIMIT) // len(line)):
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(0.005)
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.read(200), 0.001)
            if answer:
                break
        else:
            answer = await asyncio.wait_for(reader.read(200), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer


async def test_bodies_over_the_limit_are_refused_with_a_json_413(server: str) -> None:
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{server}/healthz", content=b"x" * 4096)
    assert refused.status_code == 413
    assert refused.json()["error"] == "payload_too_large"


def test_the_header_limit_defaults_to_16_kib() -> None:
    assert ServiceSettings().max_request_header_bytes == 16_384
