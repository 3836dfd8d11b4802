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


VERIFIED_TOKENS_KEPT = 1024
"""How many distinct verified tokens a verifier remembers (the oldest is forgotten first)."""
REVERIFY_AFTER_SECONDS = 300.0
"""A remembered token is verified again after this long even if it has not expired, so a
key the identity provider withdraws from its JWKS stops being honoured within minutes."""


class TokenVerifier:
    """Verifies bearer tokens, each distinct token once until it expires.

    A client sends the same token with every request, and checking its signature and
    claims again each time is a large share of a cheap request. A verified token's
    principal is kept, keyed by the token string itself (so a changed token is a new
    entry), until the token's `exp` or `REVERIFY_AFTER_SECONDS`, whichever comes first;
    an invalid token is never kept. At most `VERIFIED_TOKENS_KEPT` are kept."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def verify(self, token: str) -> Principal:
        """The principal a valid token names; raises jwt.InvalidTokenError otherwise."""
        now = time.time()
        kept = self._verified.get(token)
        if kept is not None:
            principal, valid_until = kept
            if now < valid_until:
                return principal
            del self._verified[token]
        principal, expires_at = await self._decode(token)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            del self._verified[next(iter(self._verified))]  # the oldest (insertion order)
        self._verified[token] = (principal, min(expires_at, now + REVERIFY_AFTER_SECONDS))
        return principal

    async def _decode(self, token: str) -> tuple[Principal, float]:
        """Verify the token fully; its principal and when it expires (`exp`, epoch seconds)."""
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
        # PyJWT refuses a token once `exp` <= now (no leeway here), so it is valid while
        # now < exp: the same test the cache applies.
        principal = Principal(subject=str(claims["sub"]), scopes=frozenset(scopes))
        return principal, float(claims["exp"])


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
