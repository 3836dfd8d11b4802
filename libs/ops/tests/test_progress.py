"""`progress` reads the accounts API (a stand-in transport: the API has its own tests)."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from backhaul_ops.cli import app, render_disconnections
from backhaul_ops.errors import OpsError
from backhaul_ops.progress import fetch_disconnections

DISCONNECTION = {
    "id": "2f0c8a2e-7c3d-4b8e-9a55-1d0f7c2b9e11",
    "account_id": 42,
    "disconnected_at": "2026-11-22T09:00:00Z",
    "disconnected_by": "alice",
    "address": None,
    "previous_status_id": 2,
    "status_id": 3,
    "proration": "inherit",
    "progress": "failed",
    "steps": [
        {
            "step": "final_invoice",
            "state": "done",
            "updated_at": "2026-11-22T09:00:01Z",
            "result": {"invoice_id": 9},
            "error": None,
        },
        {
            "step": "email",
            "state": "failed",
            "updated_at": "2026-11-22T09:00:02Z",
            "result": {},
            "error": "mailbox unavailable",
        },
    ],
}


def _accounts_api(seen: list[httpx.Request]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/accounts/42/disconnections":
            return httpx.Response(200, json=[DISCONNECTION])
        return httpx.Response(404, json={"error": "not_found", "message": "account 5 not found"})

    return httpx.MockTransport(answer)


def test_progress_shows_each_step_state():
    seen: list[httpx.Request] = []
    found = fetch_disconnections(42, token="t0k3n", transport=_accounts_api(seen))

    assert seen[0].headers["Authorization"] == "Bearer t0k3n"
    text = render_disconnections(42, found)
    assert "by alice: failed" in text
    assert "final_invoice    done" in text
    assert "email            failed" in text
    assert "error: mailbox unavailable" in text


def test_unknown_account_and_unreachable_api_fail_with_a_reason():
    with pytest.raises(OpsError, match="account 5 not found"):
        fetch_disconnections(5, transport=_accounts_api([]))

    result = CliRunner().invoke(
        app, ["progress", "42", "--accounts-url", "http://127.0.0.1:9", "--token", "s3cret"]
    )
    assert result.exit_code == 1
    assert "cannot reach the accounts API" in result.output
    assert "s3cret" not in result.output
