"""No secret in any log line or anything sent to a platform.

Representative flows run with recognisable fake secrets (the LLM key, the Slack bot and app
tokens, the signing secret, the Discord token): mentions, slash commands, an LLM 401 whose body
echoes the key, a retried 429. Every log record (root logger at DEBUG), everything the bot
printed, and every request body, URL and query the stand-ins recorded is searched. Authorization
headers legitimately carry the tokens and are not searched.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from bots.discord import DiscordBot, DiscordSettings
from bots.slack import EVENTS_PATH, SlackBot
from core.engine import ChatEngine
from core.logs import configure_logging
from core.settings import SettingsError, load_settings
from tests.bots.slack.conftest import SECRET, TEAM, SlackClient, slack_settings
from tests.conftest import restored_logging
from tests.fakes.discord_server import MANAGE_GUILD, FakeDiscordServer
from tests.fakes.llm_server import Fail, FakeLLMServer, Reply
from tests.fakes.mcp_server import SCRIPT as MCP_SCRIPT
from tests.fakes.mcp_server import serve_http
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import CHANNEL, USER, wait_for

LLM_KEY = "sk-LEAKCHECK-llm-key-7f3a9c"
BOT_TOKEN = "xoxb-LEAKCHECK-bot-token-51d2"
APP_TOKEN = "xapp-LEAKCHECK-app-token-88e1"
DISCORD_TOKEN = "LEAKCHECK.discord-token.c0ffee"
SECRETS = [LLM_KEY, BOT_TOKEN, APP_TOKEN, SECRET, DISCORD_TOKEN]
KEY_ECHO = {
    "error": {
        "message": f"Incorrect API key provided: {LLM_KEY}. Find your key at https://x.test.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
FAST_429 = Fail(429, headers={"retry-after-ms": "10"})


def leaks(where: str, text: str) -> list[str]:
    return [f"{where}: {secret}" for secret in SECRETS if secret in text]


def llm_leaks(llm: FakeLLMServer) -> list[str]:
    found: list[str] = []
    for r in llm.requests:
        found += leaks(f"LLM {r.path}", f"{r.path} {r.query} {r.body.decode(errors='replace')}")
    return found


def log_leaks(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = leaks("log", caplog.text)
    for record in caplog.records:
        found += leaks(f"log {record.name}", record.getMessage())
    return found


@pytest.fixture
async def secret_llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(models=["alpha", "beta"]) as server:
        yield server


def engine_for(settings: Any, llm: FakeLLMServer, http: httpx.AsyncClient) -> ChatEngine:
    env = {"LOCAL_BASE_URL": llm.openai_base_url, "LOCAL_API_KEY": LLM_KEY}
    return ChatEngine(settings, env=env, http_client=http)


async def test_slack_flows_leak_no_secret(
    secret_llm: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    llm = secret_llm
    async with FakeSlackAPI(bot_token=BOT_TOKEN, app_token=APP_TOKEN) as api:
        settings, slack_only = slack_settings(
            api,
            slack_streaming="update",
            llm_max_retries=2,
            llmconnect_allowed_models="local/alpha,local/beta",
        )
        async with httpx.AsyncClient() as http, aiohttp.ClientSession() as session:
            engine = engine_for(settings, llm, http)
            bot = SlackBot(slack_only, engine)
            try:
                port = await bot.serve_http("127.0.0.1", 0)
                await bot.start_socket_mode()
                await api.wait_connected()
                slack = SlackClient(f"http://127.0.0.1:{port}{EVENTS_PATH}", session, api)
                llm.enqueue(Fail(401, body=KEY_ECHO), FAST_429, Reply(text="fine now"))

                await slack.mention("first")
                await wait_for(lambda: any("API key" in t for t in api.texts(CHANNEL)))
                await slack.mention("second")
                await wait_for(lambda: "fine now" in api.texts(CHANNEL))
                rid, status, _ = await slack.command("/model", "local/beta")
                assert status == 200
                assert "local/beta" in (await slack.responses(rid))[0]["text"]
                rid, status, _ = await slack.command("/ask", "via slash")
                await wait_for(lambda: "You said: via slash" in api.texts(CHANNEL))
                # One over Socket Mode (the app token's connection).
                await api.send_envelope(
                    "events_api",
                    {
                        "team_id": TEAM,
                        "type": "event_callback",
                        "event_id": "EvLeak1",
                        "event": {
                            "type": "app_mention",
                            "user": USER,
                            "text": "<@UBOT> over the socket",
                            "ts": "1690000001.000001",
                            "channel": CHANNEL,
                            "team": TEAM,
                        },
                    },
                )
                await wait_for(lambda: "You said: over the socket" in api.texts(CHANNEL))
            finally:
                await bot.aclose()
                await engine.aclose()

        assert any(c.token == APP_TOKEN for c in api.calls)  # Socket Mode really ran
        assert len([r for r in llm.requests if r.path.endswith("/completions")]) == 5
        assert all(
            r.headers.get("authorization") == f"Bearer {LLM_KEY}"
            for r in llm.requests
            if r.path.endswith("/completions")
        )
        found: list[str] = []
        for call in api.calls:
            found += leaks(f"Slack {call.method}", json.dumps(call.args, default=str))
        found += leaks("Slack response_url", json.dumps(api.responses))
        found += leaks("Slack ephemeral", json.dumps(api.ephemeral))
        for message in api.messages.values():
            found += leaks("Slack message", "\n".join(message.history))
        found += llm_leaks(llm) + log_leaks(caplog)
        found += leaks("repr", repr(bot) + repr(settings) + repr(engine.settings))
    assert found == []


async def test_discord_flows_leak_no_secret(
    secret_llm: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    llm = secret_llm
    async with FakeDiscordServer(token=DISCORD_TOKEN) as server:
        guild = server.add_guild()
        general = server.add_channel(guild, "general")
        mod = server.add_member(guild, "mod", roles=[server.add_role(guild, "mods", MANAGE_GUILD)])
        values: dict[str, object] = {
            "discord_api_url": server.api_url,
            "discord_gateway_url": server.gateway_url,
            "discord_token": DISCORD_TOKEN,
            "discord_edit_interval": 0.05,
            "llmconnect_model": "local/alpha",
            "llmconnect_allowed_models": "local/alpha,local/beta",
            "llm_max_retries": 2,
            "user_rate_limit": 0,
        }
        settings = load_settings(**values)
        out = io.StringIO()
        async with httpx.AsyncClient() as http:
            engine = engine_for(settings, llm, http)
            bot = DiscordBot(
                load_settings(DiscordSettings, **values), engine, out=out, guild_ready_timeout=0.01
            )
            await bot.login(DISCORD_TOKEN)
            task = asyncio.create_task(bot.connect(reconnect=False))
            try:
                await asyncio.wait_for(bot.wait_until_ready(), 10)
                llm.enqueue(Fail(401, body=KEY_ECHO), FAST_429, Reply(text="fine now"))
                first = await server.send_message(general, mod, "first")
                await wait_for(
                    lambda: any("API key" in m.content for m in server.replies_to(first))
                )
                second = await server.send_message(general, mod, "second")
                await wait_for(
                    lambda: [m.content for m in server.replies_to(second)] == ["fine now"]
                )
                model = await server.slash(general, mod, "model", name="local/beta")
                await wait_for(lambda: model.responded)
                asked = await server.slash(general, mod, "ask", prompt="via slash")
                await wait_for(
                    lambda: (
                        [m.content for m in server.interaction_messages(asked)]
                        == ["You said: via slash"]
                    )
                )
            finally:
                await bot.close()
                await engine.aclose()
                await asyncio.wait_for(task, 10)
        assert llm.requests[-1].json["model"] == "beta"  # /model ran
        found: list[str] = []
        for r in server.requests:
            found += leaks(
                f"Discord {r.method} {r.path}", f"{r.path} {r.query} {json.dumps(r.json)}"
            )
        for m in server.messages.values():
            found += leaks("Discord message", json.dumps(m.payloads))
        for i in server.interactions.values():
            found += leaks("Discord callback", json.dumps(i.callbacks))
        found += llm_leaks(llm) + log_leaks(caplog) + leaks("stdout", out.getvalue())
        found += leaks("repr", repr(bot) + repr(bot.rest) + repr(settings))
    assert found == []


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """JSON log lines of the run, as ``configure_logging`` writes them (LOG_FORMAT=json,
    LOG_LEVEL=DEBUG); the root logger restored after."""
    with restored_logging() as out:
        configure_logging(load_settings(log_format="json", log_level="DEBUG"), stream=out)
        yield out


async def test_json_logs_of_a_slack_reply_hold_no_secret_and_no_message_text(
    secret_llm: FakeLLMServer, json_logs: io.StringIO
) -> None:
    llm = secret_llm
    prompt, answer = "PRIVATE-PROMPT-owl", "PRIVATE-ANSWER-lark"
    async with FakeSlackAPI(bot_token=BOT_TOKEN, app_token=APP_TOKEN) as api:
        settings, slack_only = slack_settings(api, llm_max_retries=0, log_format="json")
        async with httpx.AsyncClient() as http, aiohttp.ClientSession() as session:
            engine = engine_for(settings, llm, http)
            bot = SlackBot(slack_only, engine)
            try:
                port = await bot.serve_http("127.0.0.1", 0)
                slack = SlackClient(f"http://127.0.0.1:{port}{EVENTS_PATH}", session, api)
                llm.enqueue(Fail(401, body=KEY_ECHO), Reply(text=answer))
                await slack.mention(prompt)
                await wait_for(lambda: any("API key" in t for t in api.texts(CHANNEL)))
                await slack.mention(prompt)
                await wait_for(lambda: answer in api.texts(CHANNEL))
            finally:
                await bot.aclose()
                await engine.aclose()
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    ends = [line for line in lines if line["message"].startswith("reply end")]
    assert [(e["frontend"], e["status"]) for e in ends] == [
        ("slack", "error"),
        ("slack", "complete"),
    ]
    assert ends[0]["error_kind"] == "AuthenticationError"
    text = json_logs.getvalue()
    assert leaks("JSON log", text) == []
    for private in (prompt, answer, CHANNEL):
        assert private not in text


MCP_HEADER = "mcp-LEAKCHECK-header-4d2e"
MCP_ENV = "mcp-LEAKCHECK-env-9a71"
MCP_PASSWORD = "mcp-LEAKCHECK-pw-3c3c"
MCP_QUERY = "mcp-LEAKCHECK-query-1f1f"
MCP_SECRETS = [MCP_HEADER, MCP_ENV, MCP_PASSWORD, MCP_QUERY]


async def test_mcp_servers_secrets_leak_nowhere(
    secret_llm: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    """MCP_SERVERS holds a header token, an env value, a URL password and a query key; a server
    refuses the token (401, retried), another runs with the env value; /tools lists both. No log
    line (root at DEBUG, the SDK's and its HTTP client's included), Slack message, settings
    repr or setting error holds any of them."""
    caplog.set_level(logging.DEBUG)
    # Another test's configure_logging may have quietened them: every record of theirs here.
    for name in ("mcp", "httpx2"):
        caplog.set_level(logging.DEBUG, logger=name)
    async with (
        serve_http("search", token="another-token") as search,
        FakeSlackAPI(bot_token=BOT_TOKEN, app_token=APP_TOKEN) as api,
    ):
        host = search.url.removeprefix("http://")
        servers = {
            "search": {
                "url": f"http://me:{MCP_PASSWORD}@{host}?key={MCP_QUERY}",
                "headers": {"Authorization": f"Bearer {MCP_HEADER}"},
            },
            "files": {"command": [sys.executable, MCP_SCRIPT], "env": {"TOKEN": MCP_ENV}},
        }
        settings, slack_only = slack_settings(api, mcp_servers=json.dumps(servers))
        async with httpx.AsyncClient() as http, aiohttp.ClientSession() as session:
            engine = engine_for(settings, llm=secret_llm, http=http)
            engine.mcp.backoff = 0.05
            bot = SlackBot(slack_only, engine)
            try:
                await engine.start()
                await engine.mcp.wait_ready()
                await wait_for(lambda: engine.mcp.states["search"].starts >= 2)
                port = await bot.serve_http("127.0.0.1", 0)
                slack = SlackClient(f"http://127.0.0.1:{port}{EVENTS_PATH}", session, api)
                rid, _, _ = await slack.command("/tools")
                [listed] = await slack.responses(rid)
                rid, _, _ = await slack.command("/tools", "enable search")
                await slack.responses(rid)
            finally:
                await bot.aclose()
                await engine.aclose()
    assert "• search — down" in listed["text"]
    assert "• files — 6 tools" in listed["text"]
    wrong = json.dumps(servers).replace('"http://', '"ftp://')
    with pytest.raises(SettingsError) as refused:
        load_settings(mcp_servers=wrong)
    shown = caplog.text + "".join(r.getMessage() for r in caplog.records)
    shown += json.dumps([c.args for c in api.calls], default=str) + json.dumps(api.responses)
    shown += repr(settings) + str(settings) + repr(engine.mcp) + repr(engine.mcp.states)
    shown += str(refused.value)
    assert "mcp search" in caplog.text  # the failure was logged, without its secrets
    assert "/mcp?*** " in caplog.text  # the HTTP client's request lines, redacted
    assert [s for s in MCP_SECRETS if s in shown] == []
