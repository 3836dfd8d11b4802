"""The token verifier: each distinct token verified once until it expires, never an invalid
one kept."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from backhaul_kit import auth
from backhaul_kit.auth import TokenVerifier, issue_token
from backhaul_kit.config import ServiceSettings

SECRET = "a-secret-of-the-tests-that-is-long-enough"


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(ServiceSettings(service_name="auth-test", jwt_secret=SECRET))


async def test_a_token_is_verified_once_then_remembered(verifier, monkeypatch) -> None:
    token = issue_token(SECRET, subject="staff@isp", scopes=["accounts:read"])
    decoded = 0
    real = verifier._decode

    async def counting(raw: str):
        nonlocal decoded
        decoded += 1
        return await real(raw)

    monkeypatch.setattr(verifier, "_decode", counting)
    first = await verifier.verify(token)
    again = await verifier.verify(token)
    assert first == again
    assert first.subject == "staff@isp" and first.allows("accounts:read")
    assert decoded == 1


async def test_a_remembered_token_is_refused_once_it_expires(verifier) -> None:
    token = issue_token(SECRET, ttl_seconds=1)
    await verifier.verify(token)
    await asyncio.sleep(1.1)
    with pytest.raises(jwt.ExpiredSignatureError):
        await verifier.verify(token)


async def test_a_tampered_or_foreign_token_is_refused_and_not_kept(verifier) -> None:
    good = issue_token(SECRET)
    await verifier.verify(good)
    header, payload, signature = good.split(".")
    tampered = f"{header}.{payload}.{signature[::-1]}"
    for bad in (tampered, issue_token("another-secret-that-is-long-enough-too")):
        for _ in range(2):  # refused every time: a refusal is never remembered
            with pytest.raises(jwt.InvalidTokenError):
                await verifier.verify(bad)
    assert set(verifier._verified) == {good}


async def test_at_most_so_many_tokens_are_kept_the_oldest_forgotten(verifier, monkeypatch):
    monkeypatch.setattr(auth, "VERIFIED_TOKENS_KEPT", 3)
    tokens = [issue_token(SECRET, subject=f"user{n}") for n in range(5)]
    for token in tokens:
        await verifier.verify(token)
    assert list(verifier._verified) == tokens[2:]
