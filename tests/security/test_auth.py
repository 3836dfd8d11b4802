"""Every route of every service needs a bearer token with that service's scope (issue 8).

Walks the routes of each service's real app: no token is a 401, a token without the
service's scope is a 403, a token with it gets past authorisation (whatever the route then
answers), and the acting user is the token's subject.
"""

from __future__ import annotations

import asyncio
import importlib
import re

import httpx
import pytest

from backhaul_kit.auth import SERVICES, issue_token
from backhaul_kit.config import DEV_JWT_SECRET, Environment, ServiceSettings

OPEN = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}


def _runtime(service: str, tmp_path):
    bootstrap = importlib.import_module(f"{service}.bootstrap").bootstrap
    config = importlib.import_module(f"{service}.config")
    settings_cls = next(
        v
        for v in vars(config).values()
        if isinstance(v, type) and issubclass(v, ServiceSettings) and v is not ServiceSettings
    )
    settings = settings_cls(
        database_url=f"sqlite+aiosqlite:///{tmp_path / service}.db",
        kafka_bootstrap_servers="127.0.0.1:1",
    )
    return bootstrap(settings)


def _token(scopes: list[str], subject: str = "auditor@isp") -> dict[str, str]:
    return {
        "Authorization": f"Bearer {issue_token(DEV_JWT_SECRET, subject=subject, scopes=scopes)}"
    }


@pytest.mark.parametrize("service", SERVICES)
async def test_every_route_requires_a_token_with_the_service_scope(service, tmp_path):
    runtime = _runtime(service, tmp_path)
    await asyncio.to_thread(runtime.migrate)
    app = runtime.create_app()
    operations = [
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        if path not in OPEN
        for method in item
    ]
    assert operations, f"{service} has no routes"
    other = next(s for s in SERVICES if s != service)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for method, template in operations:
            path = re.sub(r"{[^}]+}", "1", template)
            access = "read" if method == "GET" else "write"
            anonymous = await client.request(method, path)
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
            assert anonymous.json()["error"] == "unauthorized"

            forged = await client.request(
                method,
                path,
                headers={
                    "Authorization": "Bearer "
                    + issue_token("a-forged-secret-of-decent-length-0123456789", scopes=[])
                },
            )
            assert forged.status_code == 401, (method, path)

            wrong = await client.request(
                method,
                path,
                headers=_token(
                    [
                        f"{other}:read",
                        f"{other}:write",
                        f"{service}:{'write' if access == 'read' else 'read'}",
                    ]
                ),
            )
            assert wrong.status_code == 403, (method, path, wrong.text)
            assert f"{service}:{access}" in wrong.json()["message"]

            allowed = await client.request(method, path, headers=_token([f"{service}:{access}"]))
            assert allowed.status_code not in (401, 403), (method, path, allowed.text)
            assert allowed.status_code < 500, (method, path, allowed.text)
    await runtime.stop()


def test_the_development_secret_is_refused_outside_development():
    with pytest.raises(ValueError, match="development JWT secret is refused"):
        ServiceSettings(environment=Environment.PRODUCTION)
    with pytest.raises(ValueError, match="AUTH_ENABLED=false is refused"):
        ServiceSettings(
            environment=Environment.PRODUCTION, jwt_secret="s3cret-from-vault", auth_enabled=False
        )
    assert ServiceSettings(environment=Environment.PRODUCTION, jwt_secret="s3cret-from-vault")


async def test_the_actor_is_the_tokens_subject_not_the_body(tmp_path):
    runtime = _runtime("accounts", tmp_path)
    await asyncio.to_thread(runtime.migrate)
    app = runtime.create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        headers = {
            **_token(["accounts:read", "accounts:write"], subject="ops-lead@isp"),
            "X-Actor": "someone-else",
        }
        created = await c.post("/accounts", json={"name": "Ada"}, headers=headers)
        assert created.status_code == 201, created.text
        logs = (await c.get(f"/accounts/{created.json()['id']}/logs", headers=headers)).json()
        assert logs[0]["actor"] == "ops-lead@isp"
    await runtime.stop()
