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
