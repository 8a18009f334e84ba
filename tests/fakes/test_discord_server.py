"""Self-test of the Discord stand-in over raw aiohttp, so the fake itself is trusted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.discord_server import FakeDiscordServer

TOKEN = "fake-discord-token"


@pytest.fixture
async def server() -> AsyncIterator[FakeDiscordServer]:
    async with FakeDiscordServer(edit_limit=(2, 30.0), global_limit=(6, 30.0)) as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bot {TOKEN}"}) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    async with http.request(method, url, json=body) as response:
        text = await response.text()
        return response.status, dict(response.headers), json.loads(text) if text else None


async def test_rest_answers_are_exact_json_and_need_the_token(
    server: FakeDiscordServer, http: aiohttp.ClientSession
) -> None:
    status, headers, body = await call(http, "GET", server.api_url + "/users/@me")
    assert status == 200
    assert headers["Content-Type"] == "application/json"  # discord.py compares it exactly
    assert body["id"] == server.bot_id
    async with aiohttp.ClientSession() as anonymous:
        status, _, body = await call(anonymous, "GET", server.api_url + "/users/@me")
    assert status == 401


async def test_per_channel_edit_limit_and_global_limit(
    server: FakeDiscordServer, http: aiohttp.ClientSession
) -> None:
    guild = server.add_guild()
    channel = server.add_channel(guild)
    url = f"{server.api_url}/channels/{channel}/messages"
    status, headers, message = await call(http, "POST", url, {"content": "a"})
    assert status == 200
    edit = f"{url}/{message['id']}"
    status, headers, _ = await call(http, "PATCH", edit, {"content": "b"})
    assert (status, headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == (
        200,
        "2",
        "1",
    )
    status, headers, _ = await call(http, "PATCH", edit, {"content": "c"})
    assert headers["X-RateLimit-Remaining"] == "0"
    assert float(headers["X-RateLimit-Reset-After"]) > 0
    status, headers, body = await call(http, "PATCH", edit, {"content": "d"})
    assert status == 429
    assert body["global"] is False
    assert 0 < body["retry_after"] <= 30
    assert headers["Via"]  # without it discord.py takes a 429 for a Cloudflare ban
    assert server.messages[message["id"]].content == "c"
    # Bot-wide, 6 per window: POST, PATCH, PATCH and the refused PATCH (it reached the API)
    # count; two more pass, the next is refused globally.
    for _ in range(2):
        assert (await call(http, "GET", server.api_url + "/users/@me"))[0] == 200
    status, headers, body = await call(http, "GET", server.api_url + "/users/@me")
    assert (status, body["global"], headers["X-RateLimit-Global"]) == (429, True, "true")
    assert [e.is_global for e in server.rate_limited] == [False, True]


async def test_gateway_handshake_over_text_frames(server: FakeDiscordServer) -> None:
    guild = server.add_guild("G")
    server.add_channel(guild)
    async with aiohttp.ClientSession() as session, session.ws_connect(server.gateway_url) as ws:
        hello = await ws.receive()
        assert hello.type is aiohttp.WSMsgType.TEXT
        assert json.loads(hello.data)["op"] == 10
        await ws.send_str(json.dumps({"op": 1, "d": None}))
        assert json.loads((await ws.receive()).data)["op"] == 11
        await ws.send_str(json.dumps({"op": 2, "d": {"token": TOKEN, "intents": 513}}))
        ready = json.loads((await ws.receive()).data)
        assert (ready["t"], ready["s"]) == ("READY", 1)
        assert ready["d"]["guilds"] == [{"id": guild.id, "unavailable": True}]
        assert ready["d"]["resume_gateway_url"] == server.gateway_url
        created = json.loads((await ws.receive()).data)
        assert created["t"] == "GUILD_CREATE"
        assert created["d"]["roles"][0]["name"] == "@everyone"
    assert server.intents == 513


async def test_gateway_rejects_a_wrong_token(server: FakeDiscordServer) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(server.gateway_url) as ws:
        await ws.receive()
        await ws.send_str(json.dumps({"op": 2, "d": {"token": "nope"}}))
        closed = await ws.receive()
        assert closed.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4004 or closed.data == 4004


async def identify(
    session: aiohttp.ClientSession, server: FakeDiscordServer, shard: list[int] | None
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any], list[str]]:
    """A raw gateway connection identified as ``shard``: (socket, READY, its GUILD_CREATE ids)."""
    ws = await session.ws_connect(server.gateway_url)
    assert json.loads((await ws.receive()).data)["op"] == 10
    data: dict[str, Any] = {"token": TOKEN, "intents": 513}
    if shard is not None:
        data["shard"] = shard
    await ws.send_str(json.dumps({"op": 2, "d": data}))
    ready = json.loads((await ws.receive()).data)
    assert ready["t"] == "READY"
    created = []
    for _ in ready["d"]["guilds"]:
        frame = json.loads((await ws.receive()).data)
        assert frame["t"] == "GUILD_CREATE"
        created.append(frame["d"]["id"])
    return ws, ready["d"], created


async def next_event(ws: aiohttp.ClientWebSocketResponse) -> tuple[str, dict[str, Any]]:
    frame = json.loads((await ws.receive()).data)
    return frame["t"], frame["d"]


async def test_gateway_routes_guilds_and_events_to_their_shard(
    http: aiohttp.ClientSession,
) -> None:
    """Like Discord: each connection gets only its shard's guilds and their events; DMs go to
    shard 0; an event of a shard nobody runs goes nowhere."""
    async with FakeDiscordServer(recommended_shards=2, max_concurrency=2) as server:
        guilds = [server.add_guild(f"G{n}", shard=(n % 2, 2)) for n in range(4)]
        assert [server.shard_of(g.id, 2) for g in guilds] == [0, 1, 0, 1]
        assert len({g.id for g in guilds}) == 4
        assert [int(g.id) for g in guilds] == sorted(int(g.id) for g in guilds)
        channels = [server.add_channel(g) for g in guilds]
        users = [server.add_member(g, f"user{n}") for n, g in enumerate(guilds)]
        assert all(int(c) > int(guilds[-1].id) for c in channels)  # ids stay unique, rising
        dm = server.dm_channel(users[0])
        async with aiohttp.ClientSession() as session:
            _, _, limits = await call(http, "GET", f"{server.api_url}/gateway/bot")
            assert limits["shards"] == 2
            assert limits["session_start_limit"]["max_concurrency"] == 2

            ws0, ready0, created0 = await identify(session, server, [0, 2])
            assert ready0["shard"] == [0, 2]
            assert created0 == [guilds[0].id, guilds[2].id]
            message = await server.send_message(channels[1], users[1], "to shard 1")
            assert server.delivered(message) == []  # shard 1 is not connected yet
            ws1, ready1, created1 = await identify(session, server, [1, 2])
            assert [g["id"] for g in ready1["guilds"]] == created1 == [guilds[1].id, guilds[3].id]
            await server.wait_ready(shards=2)
            assert server.shards_identified == [(0, 2), (1, 2)]

            on_one = await server.send_message(channels[3], users[3], "to shard 1")
            on_zero = await server.send_message(channels[2], users[2], "to shard 0")
            in_dm = await server.send_message(dm, users[0], "a DM", mention_bot=False)
            # In order on each connection: the next frame is the first event that is its own.
            kind, data = await next_event(ws1)
            assert (kind, data["id"], data["guild_id"]) == (
                "MESSAGE_CREATE",
                on_one.id,
                guilds[3].id,
            )
            kind, data = await next_event(ws0)
            assert (kind, data["id"], data["guild_id"]) == (
                "MESSAGE_CREATE",
                on_zero.id,
                guilds[2].id,
            )
            kind, data = await next_event(ws0)
            assert (kind, data["id"], "guild_id" in data) == ("MESSAGE_CREATE", in_dm.id, False)
            assert server.delivered(on_one) == [(1, 2)]
            assert server.delivered(on_zero) == server.delivered(in_dm) == [(0, 2)]

            # Interactions and deletions too.
            sync = f"{server.api_url}/applications/{server.application_id}/commands"
            commands = [{"name": "ask", "description": "Ask", "type": 1}]
            assert (await call(http, "PUT", sync, commands))[0] == 200
            asked = await server.slash(channels[1], users[1], "ask", prompt="hi")
            await server.delete_message(on_zero.id)
            kind, data = await next_event(ws1)
            assert (kind, data["id"], data["guild_id"]) == (
                "INTERACTION_CREATE",
                asked.id,
                guilds[1].id,
            )
            kind, data = await next_event(ws0)
            assert (kind, data["id"]) == ("MESSAGE_DELETE", on_zero.id)
            assert server.delivered(asked) == [(1, 2)]
            await ws0.close()
            await ws1.close()


async def test_gateway_closes_an_invalid_shard_with_4010(server: FakeDiscordServer) -> None:
    async with aiohttp.ClientSession() as session:
        for shard in ([2, 2], [-1, 2], [0, 0], [0], "0,1"):
            async with session.ws_connect(server.gateway_url) as ws:
                await ws.receive()
                await ws.send_str(json.dumps({"op": 2, "d": {"token": TOKEN, "shard": shard}}))
                closed = await ws.receive()
                assert closed.type is aiohttp.WSMsgType.CLOSE
                assert ws.close_code == 4010, shard
        assert server.shards_identified == []
        # Without a shard, a client is shard 0 of 1 and gets every guild.
        guild = server.add_guild()
        ws, ready, created = await identify(session, server, None)
        assert "shard" not in ready
        assert created == [guild.id]
        assert server.shards_identified == [(0, 1)]
        await ws.close()


async def test_resume_keeps_the_sessions_shard_and_refuses_an_unknown_session() -> None:
    async with FakeDiscordServer() as server:
        guilds = [server.add_guild(f"G{n}", shard=(n, 2)) for n in range(2)]
        channel = server.add_channel(guilds[1])
        user = server.add_member(guilds[1], "user")
        async with aiohttp.ClientSession() as session:
            first, ready, _ = await identify(session, server, [1, 2])
            await first.close()
            async with session.ws_connect(server.gateway_url) as ws:
                await ws.receive()
                resume = {"token": TOKEN, "session_id": ready["session_id"], "seq": 2}
                await ws.send_str(json.dumps({"op": 6, "d": resume}))
                assert (await next_event(ws))[0] == "RESUMED"
                message = await server.send_message(channel, user, "after the resume")
                assert (await next_event(ws))[1]["id"] == message.id
                assert server.delivered(message) == [(1, 2)]
            async with session.ws_connect(server.gateway_url) as ws:
                await ws.receive()
                resume = {"token": TOKEN, "session_id": "unknown", "seq": 2}
                await ws.send_str(json.dumps({"op": 6, "d": resume}))
                assert json.loads((await ws.receive()).data) == {
                    "op": 9,
                    "d": False,
                    "s": None,
                    "t": None,
                }


async def test_a_thread_started_from_a_message_takes_its_id_once_with_a_valid_name(
    server: FakeDiscordServer, http: aiohttp.ClientSession
) -> None:
    guild = server.add_guild()
    channel = server.add_channel(guild)
    user = server.add_member(guild, "alice")
    message = await server.send_message(channel, user, "a question")
    url = f"{server.api_url}/channels/{channel}/messages/{message.id}/threads"

    status, _, body = await call(http, "POST", url, {"name": "x" * 101})
    assert status == 400
    status, _, thread = await call(http, "POST", url, {"name": "a question"})
    assert status == 201
    assert (thread["id"], thread["parent_id"], thread["name"]) == (
        message.id,
        channel,
        "a question",
    )
    assert thread["owner_id"] == server.bot_id
    assert guild.threads[message.id]["name"] == "a question"
    assert [d.event for d in server.dispatched][-1] == "THREAD_CREATE"
    status, _, body = await call(http, "POST", url, {"name": "again"})
    assert (status, body["code"]) == (400, 160004)
    status, _, body = await call(
        http, "POST", f"{server.api_url}/channels/{channel}/messages/999/threads", {"name": "n"}
    )
    assert (status, body["code"]) == (404, 10008)
    server.threads_forbidden = True
    other = await server.send_message(channel, user, "another")
    status, _, body = await call(
        http,
        "POST",
        f"{server.api_url}/channels/{channel}/messages/{other.id}/threads",
        {"name": "n"},
    )
    assert (status, body["code"]) == (403, 50013)


def _row(*custom_ids: str) -> list[dict[str, Any]]:
    buttons = [{"type": 2, "style": 2, "label": "x", "custom_id": c} for c in custom_ids]
    return [{"type": 1, "components": buttons}]


async def test_components_are_kept_checked_and_clickable_while_shown(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeDiscordServer(edit_limit=None) as server:
        await _components(server, http)


async def _components(server: FakeDiscordServer, http: aiohttp.ClientSession) -> None:
    guild = server.add_guild()
    channel = server.add_channel(guild)
    user = server.add_member(guild, "alice")
    url = f"{server.api_url}/channels/{channel}/messages"
    status, _, created = await call(http, "POST", url, {"content": "a", "components": _row("s")})
    assert status == 200
    assert created["components"] == _row("s")
    message = server.messages[created["id"]]
    for bad in (_row("x" * 101), _row("d", "d"), _row(*"abcdef"), [{"type": 2}]):
        status, _, _ = await call(http, "PATCH", f"{url}/{message.id}", {"components": bad})
        assert status == 400
    await call(http, "PATCH", f"{url}/{message.id}", {"content": "b"})  # no field: kept
    assert message.custom_ids == ["s"]
    click = await server.click(message, user, "s")
    assert (click.type, click.name, click.message_id) == (3, "s", message.id)
    answer = f"{server.api_url}/interactions/{click.id}/{click.token}/callback"
    status, _, _ = await call(http, "POST", answer, {"type": 7, "data": {"components": []}})
    assert status == 204
    assert message.components == []  # an update edits the clicked message
    with pytest.raises(AssertionError):
        await server.click(message, user, "s")  # no longer shown
