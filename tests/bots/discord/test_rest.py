"""DiscordRest against the stand-in: rate limits are surfaced (never slept on), errors typed.

Time is a :class:`FakeClock`: an emptied bucket stays "empty" until the test moves the clock,
so what is asserted is the decision, never a duration.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bots.discord import NO_MENTIONS, ChannelSink, DiscordRest, DiscordRestError
from bots.discord.rest import (
    CREATE_FOLLOWUP,
    EDIT_MESSAGE,
    DiscordNotFound,
    DiscordServerError,
    DiscordUnreachable,
    Route,
)
from core.clock import FakeClock
from core.render import SinkGone, SinkRateLimited, SinkTransient

from .conftest import World


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def rest(world: World, clock: FakeClock) -> AsyncIterator[DiscordRest]:
    client = DiscordRest(world.server.api_url, clock=clock)
    client.open(SecretStr(world.server.token))
    yield client
    await client.close()


def payload(text: str) -> dict[str, object]:
    return {"content": text, "allowed_mentions": NO_MENTIONS}


@pytest.mark.parametrize("server_limits", [{"edit_limit": (2, 30.0)}], indirect=True)
async def test_an_emptied_bucket_raises_before_any_request(
    world: World, rest: DiscordRest, clock: FakeClock
) -> None:
    message = await rest.create_message(world.general, payload("a"))
    await rest.edit_message(world.general, message["id"], payload("b"))
    await rest.edit_message(world.general, message["id"], payload("c"))  # remaining: 0
    sent = len(world.server.requests)
    with pytest.raises(SinkRateLimited) as caught:
        await rest.edit_message(world.general, message["id"], payload("d"))
    assert 0 < caught.value.retry_after <= 30.0
    assert not caught.value.shared
    assert len(world.server.requests) == sent  # decided locally: no request, no 429
    assert world.server.rate_limited == []
    # Another channel's bucket is not affected.
    other = await rest.create_message(world.random, payload("x"))
    await rest.edit_message(world.random, other["id"], payload("y"))
    # Once the window has passed (by the clock), the request goes out again.
    await clock.advance(caught.value.retry_after)
    with pytest.raises(SinkRateLimited):  # the server's real window is still closed
        await rest.edit_message(world.general, message["id"], payload("d"))
    assert world.server.rate_limited[-1].path.endswith(message["id"])


async def test_a_429_is_surfaced_with_retry_after(
    world: World, rest: DiscordRest, clock: FakeClock
) -> None:
    message = await rest.create_message(world.general, payload("a"))
    world.server.inject_429(1, retry_after=0.25)
    with pytest.raises(SinkRateLimited) as caught:
        await rest.edit_message(world.general, message["id"], payload("b"))
    assert (caught.value.retry_after, caught.value.shared) == (0.25, False)
    sent = len(world.server.requests)
    with pytest.raises(SinkRateLimited):  # the bucket is known to be closed until then
        await rest.edit_message(world.general, message["id"], payload("b"))
    assert len(world.server.requests) == sent
    await clock.advance(0.25)
    await rest.edit_message(world.general, message["id"], payload("b"))
    assert world.server.messages[message["id"]].content == "b"


async def test_a_global_429_pauses_every_route(
    world: World, rest: DiscordRest, clock: FakeClock
) -> None:
    message = await rest.create_message(world.general, payload("a"))
    world.server.inject_429(1, retry_after=0.5, is_global=True)
    with pytest.raises(SinkRateLimited) as caught:
        await rest.edit_message(world.general, message["id"], payload("b"))
    assert (caught.value.retry_after, caught.value.shared) == (0.5, True)
    with pytest.raises(SinkRateLimited) as other:
        await rest.create_message(world.random, payload("elsewhere"))
    assert other.value.shared
    await clock.advance(0.5)
    await rest.create_message(world.random, payload("elsewhere"))


async def test_errors_are_typed_and_carry_no_token(world: World, rest: DiscordRest) -> None:
    with pytest.raises(DiscordRestError) as caught:
        await rest.edit_message(world.general, "1", payload("x"))
    assert (caught.value.status, caught.value.code) == (404, 10008)
    assert world.server.token not in str(caught.value)
    assert world.server.token not in repr(rest)
    unauthorized = DiscordRest(world.server.api_url)
    unauthorized.open(SecretStr("wrong"))
    try:
        with pytest.raises(DiscordRestError) as denied:
            await unauthorized.create_message(world.general, payload("x"))
        assert denied.value.status == 401
    finally:
        await unauthorized.close()


async def test_channel_sink_maps_gone_and_transient_failures(
    world: World, rest: DiscordRest
) -> None:
    sink = ChannelSink(rest, world.general)
    ref = await sink.post("first")
    world.server.inject_error(502, 3)
    for _ in range(3):  # a server-side hiccup: transient (not a rate limit), Discord's error kept
        with pytest.raises(SinkTransient) as caught:
            await sink.edit(ref, "second")
        assert isinstance(caught.value.error, DiscordRestError)
        assert caught.value.error.status == 502
    await sink.edit(ref, "second")
    # The sink only classifies; how often to retry is the renderer's (TRANSIENT_RETRIES, then the
    # DiscordRestError stops the reply: tests/reliability/test_platform_faults.py).
    world.server.inject_error(500, 4)
    for _ in range(4):
        with pytest.raises(SinkTransient):
            await sink.edit(ref, "third")
    await world.server.delete_message(ref)
    with pytest.raises(SinkGone):
        await sink.edit(ref, "fourth")
    with pytest.raises(SinkGone):  # gone for good: nothing more is sent
        await sink.post("fifth")
    assert world.server.messages[ref].content == "second"


def test_a_route_is_spelled_once_and_keeps_each_parameter_in_its_segment() -> None:
    assert str(EDIT_MESSAGE) == "PATCH /channels/{channel_id}/messages/{message_id}"
    assert EDIT_MESSAGE.format({"channel_id": "1", "message_id": "2"}) == "/channels/1/messages/2"
    # A value cannot reach another path (no "/" or ".." escapes); "@original" stays readable.
    route = Route("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}", "token")
    path = route.format({"application_id": "9", "token": "a/../b", "message_id": "@original"})
    assert path == "/webhooks/9/a%2F..%2Fb/messages/@original"
    assert (CREATE_FOLLOWUP.major, CREATE_FOLLOWUP.auth) == ("token", False)


async def test_each_kind_of_failure_has_its_own_error_class(
    world: World, rest: DiscordRest
) -> None:
    with pytest.raises(DiscordNotFound) as gone:
        await rest.edit_message(world.general, "1", payload("x"))
    assert (gone.value.status, gone.value.transient) == (404, False)
    message = await rest.create_message(world.general, payload("a"))
    world.server.inject_error(503)
    with pytest.raises(DiscordServerError) as failed:
        await rest.edit_message(world.general, message["id"], payload("b"))
    assert (failed.value.status, failed.value.transient) == (503, True)
    world.server.inject_error(403)
    with pytest.raises(DiscordRestError) as refused:
        await rest.edit_message(world.general, message["id"], payload("b"))
    assert type(refused.value) is DiscordRestError
    assert (refused.value.status, refused.value.transient) == (403, False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_discord_is_transient_only_for_a_repeatable_call(
    world: World,
) -> None:
    rest = DiscordRest(f"http://127.0.0.1:{_closed_port()}/api/v10")
    rest.open(SecretStr(world.server.token))
    try:
        with pytest.raises(DiscordUnreachable) as caught:
            await rest.create_message(world.general, payload("x"))
        assert (caught.value.status, caught.value.transient) == (0, True)
        assert world.server.token not in str(caught.value)
        sink = ChannelSink(rest, world.general)
        with pytest.raises(DiscordUnreachable):  # a create may have landed: never repeated
            await sink.post("first")
        with pytest.raises(SinkTransient):  # an edit is safe to repeat
            await sink.edit("1", "second")
    finally:
        await rest.close()


async def test_a_sink_deletes_its_own_message_and_a_missing_one_is_no_error(
    world: World, rest: DiscordRest
) -> None:
    sink = ChannelSink(rest, world.general)
    keep, drop = await sink.post("kept"), await sink.post("dropped")
    await sink.delete(drop)
    assert world.server.messages[drop].deleted
    assert drop in sink.deleted  # its MESSAGE_DELETE is the sink's own doing
    await sink.delete(drop)  # gone already: what was wanted, and the sink is not gone
    await sink.edit(keep, "still here")
    assert world.server.messages[keep].content == "still here"
    # Someone else's message: Discord refuses (the bot has no Manage Messages).
    other = await world.server.send_message(world.general, world.alice, "mine")
    with pytest.raises(DiscordRestError) as refused:
        await sink.delete(other.id)
    assert refused.value.status == 403
    assert not other.deleted
    world.server.inject_error(502, 1, methods=("DELETE",))
    with pytest.raises(SinkTransient):
        await sink.delete(keep)
    await sink.delete(keep)
    assert world.server.messages[keep].deleted
