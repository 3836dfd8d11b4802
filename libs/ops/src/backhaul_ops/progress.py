"""An account's disconnections and the state of each fan-out step, from the accounts API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from backhaul_ops.errors import OpsError

DEFAULT_ACCOUNTS_URL = "http://127.0.0.1:8001"


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StepView(_View):
    step: str
    state: str
    updated_at: datetime
    result: dict[str, Any] = {}
    error: str | None = None


class DisconnectionView(_View):
    id: str
    account_id: int
    disconnected_at: datetime
    disconnected_by: str
    progress: str
    steps: list[StepView]


def fetch_disconnections(
    account_id: int,
    *,
    accounts_url: str = DEFAULT_ACCOUNTS_URL,
    token: str | None = None,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> list[DisconnectionView]:
    """`GET /accounts/{id}/disconnections`, newest first; OpsError with the API's reason."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = f"/accounts/{account_id}/disconnections"
    try:
        with httpx.Client(
            base_url=accounts_url, headers=headers, timeout=timeout, transport=transport
        ) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise OpsError(f"cannot reach the accounts API at {accounts_url}: {exc}") from exc
    if response.status_code == httpx.codes.NOT_FOUND:
        raise OpsError(f"account {account_id} not found: {_reason(response)}")
    if response.status_code in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
        raise OpsError(
            f"the accounts API refused the request ({response.status_code}): "
            f"{_reason(response)}; pass a token with the accounts:read scope (--token)"
        )
    if response.is_error:
        raise OpsError(f"the accounts API answered {response.status_code}: {_reason(response)}")
    try:
        return [DisconnectionView.model_validate(item) for item in response.json()]
    except (ValueError, TypeError, ValidationError) as exc:
        raise OpsError(f"unexpected answer from the accounts API: {exc}") from exc


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and "message" in body:  # the services' ErrorBody
        return str(body["message"])
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:200]
