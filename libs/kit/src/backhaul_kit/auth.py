"""Bearer-token authentication and scope authorisation, the same in every service.

Tokens are JWTs: HS256 with the configured secret for local runs, RS256 verified against the
identity provider's JWKS in production. The `scope` claim (space-separated, as in OAuth 2)
or a `scopes` list grants `<service>:read` (GET, HEAD) and `<service>:write` (everything
else); `backhaul:admin` grants all. The token's subject is the acting user written to logs,
disconnection logs and scheduled events.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backhaul_kit.config import ServiceSettings

ADMIN_SCOPE = "backhaul:admin"
SERVICES = ("accounts", "billing", "scheduler", "provisioning", "notifications")
_bearer = HTTPBearer(auto_error=False, description="A JWT with the service's scopes")


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN_SCOPE in self.scopes


class TokenVerifier:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url) if settings.jwt_jwks_url else None

    async def verify(self, token: str) -> Principal:
        """The principal a valid token names; raises jwt.InvalidTokenError otherwise."""
        if self._jwks is not None:
            signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            key: Any = signing_key.key
            algorithms = ["RS256"]
        else:
            key = self.settings.jwt_secret.get_secret_value()
            algorithms = ["HS256"]
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=self.settings.jwt_audience,
            issuer=self.settings.jwt_issuer,
            options={"require": ["sub", "exp"]},
        )
        raw = claims.get("scope", claims.get("scopes", []))
        scopes = raw.split() if isinstance(raw, str) else list(raw)
        return Principal(subject=str(claims["sub"]), scopes=frozenset(scopes))


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="backhaul"'})


async def authorize(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> Principal:
    """Router dependency: a valid token with the scope this request's method needs."""
    runtime = request.app.state.runtime
    settings: ServiceSettings = runtime.settings
    if not settings.auth_enabled:
        principal = Principal(subject="anonymous", scopes=frozenset({ADMIN_SCOPE}))
        request.state.principal = principal
        return principal
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("a bearer token is required")
    try:
        principal = await runtime.token_verifier.verify(credentials.credentials)
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None
    access = "read" if request.method in ("GET", "HEAD", "OPTIONS") else "write"
    needed = f"{settings.service_name}:{access}"
    if not principal.allows(needed):
        raise HTTPException(403, f"the token lacks the scope {needed}")
    request.state.principal = principal
    return principal


def issue_token(
    secret: str,
    *,
    subject: str = "developer",
    scopes: list[str] | None = None,
    audience: str = "backhaul",
    ttl_seconds: int = 30 * 24 * 3600,
) -> str:
    """An HS256 token, for development and tests (production tokens come from an IdP)."""
    now = int(time.time())
    granted = (
        scopes
        if scopes is not None
        else [f"{service}:{access}" for service in SERVICES for access in ("read", "write")]
    )
    return jwt.encode(
        {
            "sub": subject,
            "scope": " ".join(granted),
            "aud": audience,
            "iat": now,
            "exp": now + ttl_seconds,
        },
        secret,
        algorithm="HS256",
    )
