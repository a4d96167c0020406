"""StrictAuthentication's memory of validated tokens: it may skip re-validating a token it already
validated for the same service URL and channel, and nothing else (the end-to-end JWT tests with
forged tokens are in test_teams.py)."""

from __future__ import annotations

import time

import pytest
from botbuilder.schema import Activity
from botframework.connector.auth import AuthenticateRequestResult, ClaimsIdentity

from bot.adapters.teams import auth
from bot.adapters.teams.auth import StrictAuthentication

TENANT = "tenant-1"


class CountingInner:
    """The SDK's authentication, reduced to: valid unless the header says "forged"."""

    def __init__(self, expires_in: float = 3600):
        self.calls = 0
        self.expires_in = expires_in

    async def authenticate_request(self, activity, auth_header):
        self.calls += 1
        if "forged" in auth_header:
            raise ValueError("bad signature")
        result = AuthenticateRequestResult()
        result.claims_identity = ClaimsIdentity({"aud": "app", "exp": time.time() + self.expires_in}, True)
        result.connector_factory = None
        return result


def activity(service_url="https://smba.example/", tenant=TENANT, channel="msteams") -> Activity:
    return Activity(type="message", service_url=service_url, channel_id=channel,
                    channel_data={"tenant": {"id": tenant}})


async def test_a_validated_token_is_not_validated_again_for_the_same_service_url():
    inner = CountingInner()
    strict = StrictAuthentication(inner, TENANT, enforce_tenant=True)
    for _ in range(5):
        await strict.authenticate_request(activity(), "Bearer good")
    assert inner.calls == 1
    await strict.authenticate_request(activity(service_url="https://other.example/"), "Bearer good")
    await strict.authenticate_request(activity(channel="emulator"), "Bearer good")
    await strict.authenticate_request(activity(), "Bearer other-good")
    assert inner.calls == 4


async def test_failures_are_never_remembered_and_the_tenant_is_checked_every_time():
    inner = CountingInner()
    strict = StrictAuthentication(inner, TENANT, enforce_tenant=True)
    for _ in range(3):
        with pytest.raises(PermissionError):
            await strict.authenticate_request(activity(), "Bearer forged")
    assert inner.calls == 3
    await strict.authenticate_request(activity(), "Bearer good")
    with pytest.raises(PermissionError):
        await strict.authenticate_request(activity(tenant="other-tenant"), "Bearer good")


async def test_a_remembered_token_is_validated_again_after_its_expiry_or_the_time_limit(monkeypatch):
    inner = CountingInner(expires_in=60)
    strict = StrictAuthentication(inner, TENANT, enforce_tenant=True)
    now = time.time()
    monkeypatch.setattr(auth.time, "time", lambda: now)
    await strict.authenticate_request(activity(), "Bearer good")
    monkeypatch.setattr(auth.time, "time", lambda: now + 59)
    await strict.authenticate_request(activity(), "Bearer good")
    assert inner.calls == 1
    monkeypatch.setattr(auth.time, "time", lambda: now + 61)  # past the token's own expiry
    await strict.authenticate_request(activity(), "Bearer good")
    assert inner.calls == 2
    inner.expires_in = 3600
    monkeypatch.setattr(auth.time, "time", lambda: now + 100)
    await strict.authenticate_request(activity(), "Bearer long")
    monkeypatch.setattr(auth.time, "time", lambda: now + 100 + auth.VALIDATED_TTL_S + 1)
    await strict.authenticate_request(activity(), "Bearer long")
    assert inner.calls == 4


async def test_the_memory_is_bounded():
    inner = CountingInner()
    strict = StrictAuthentication(inner, TENANT, enforce_tenant=True)
    for number in range(auth.VALIDATED_MAX + 10):
        await strict.authenticate_request(activity(), f"Bearer token-{number}")
    assert len(strict._validated) <= auth.VALIDATED_MAX
