"""POST /api/messages: the bearer token (and tenant) are checked before the SDK deserialises the body
(msrest takes about half a second of the event loop for a 1 MB activity); without authentication
(a local experiment) activities are taken without a token."""

from __future__ import annotations

import pytest
from msrest.serialization import Deserializer

from storage.models import Case, HandledEvent
from teams_harness import world  # noqa: F401 - the `world` fixture
from teams_harness import STORY, activity


@pytest.fixture
def deserialised(monkeypatch) -> list[str]:
    """The names of the models msrest deserialises from now on."""
    names: list[str] = []
    original = Deserializer.__call__

    def spy(self, target_obj, *args, **kwargs):
        names.append(target_obj if isinstance(target_obj, str) else type(target_obj).__name__)
        return original(self, target_obj, *args, **kwargs)

    monkeypatch.setattr(Deserializer, "__call__", spy)
    return names


async def test_forged_tokens_with_a_large_body_are_refused_before_deserialisation(world, deserialised):
    await world.start()
    keys, url = world.keys, world.connector.url
    body = activity(url, "x" * 900_000)  # just under the 1 MB limit
    forged = [keys.token(url, key=keys.other_key), keys.token(url, audience="someone-else"),
              keys.token(url, expires_in=-3600), keys.token("https://smba.evil.example/"), "not.a.jwt"]
    for token in forged:
        response = await world.post(body, token=token)
        assert response.status == 401
    other_tenant = activity(url, "x" * 900_000, tenant="99999999-0000-4000-8000-000000000000")
    assert (await world.post(other_tenant)).status == 401
    assert deserialised == []
    assert await world.count(HandledEvent) == 0 and world.connector.requests == []


async def test_a_valid_token_is_validated_once_and_the_activity_handled(world, deserialised, monkeypatch):
    await world.start()
    inner = world.adapter.auth._inner
    calls = []
    original = inner.authenticate_request

    async def counting(activity_, auth_header):
        calls.append(activity_.service_url)
        return await original(activity_, auth_header)

    monkeypatch.setattr(inner, "authenticate_request", counting)
    response = await world.post(activity(world.connector.url, STORY))
    assert response.status in (200, 201)
    assert "Activity" in deserialised  # the spy sees the SDK's deserialisation once authenticated
    assert calls == [world.connector.url]  # the check inside CloudAdapter.process was a lookup
    assert await world.count(HandledEvent) == 1


async def test_without_authentication_activities_are_taken_without_a_token(world, caplog):
    await world.start(app_id="", app_password="", allow_unauthenticated=True, openid_metadata_url=None)
    assert "AUTHENTICATION IS OFF" in caplog.text
    response = await world.post(activity(world.connector.url, STORY), token="")
    assert response.status in (200, 201)
    assert await world.count(HandledEvent) == 1 and await world.count(Case) == 0
