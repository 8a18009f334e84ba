"""Shared fixtures for the Slack adapter tests: everything real, on loopback.

The bot is slack-bolt's ``AsyncApp`` behind its own aiohttp server; tests POST signed requests to
``/slack/events`` exactly as Slack does. Its Web API calls go to :class:`FakeSlackAPI` (slack-sdk
with ``base_url``), its LLM calls to :class:`FakeLLMServer` as the provider ``local``
(``local/alpha`` by default, ``local/beta`` also listed). Settings never come from the machine:
Settings variables are removed from the environment and the tests run in an empty directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import pytest

from bots.slack import EVENTS_PATH, SlackBot, SlackSettings
from core.clock import Clock
from core.engine import ChatEngine
from core.settings import Settings, load_settings
from tests.fakes.journal import Journal
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.slack_api import FakeSlackAPI, Message

SECRET = "test-signing-secret-0123456789"
TEAM = "T0001"
USER = "U0USER"
CHANNEL = "C0GENERAL"
OTHER_CHANNEL = "C0RANDOM"
DM = "D0DIRECT"


@pytest.fixture(autouse=True)
def no_machine_settings(clean_settings_env: None) -> None:
    """Every test here: no setting from this machine, no ``.env`` (tests/conftest.py)."""


async def wait_for(predicate: Callable[[], bool], tries: int = 1000) -> None:
    """Poll ``predicate`` every loop turn, then every 10 ms, at most ``tries`` times."""
    for n in range(tries):
        if predicate():
            return
        await asyncio.sleep(0 if n < 20 else 0.01)
    assert predicate(), "condition never became true"


def sign(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


_ids = itertools.count(1)


def next_ts() -> str:
    return f"1690000000.{next(_ids):06d}"


@dataclass
class SlackClient:
    """Plays Slack: POSTs signed event and slash-command requests to the running bot."""

    url: str
    session: aiohttp.ClientSession
    slack: FakeSlackAPI

    async def post(
        self,
        body: bytes,
        content_type: str,
        *,
        timestamp: int | None = None,
        secret: str = SECRET,
        signature: str | None = None,
    ) -> tuple[int, str]:
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": signature or sign(body, ts, secret),
        }
        async with self.session.post(self.url, data=body, headers=headers) as response:
            return response.status, await response.text()

    @staticmethod
    def event_body(event: dict[str, Any], event_id: str | None = None) -> bytes:
        return json.dumps(
            {
                "token": "unused-verification-token",
                "team_id": TEAM,
                "api_app_id": "A0001",
                "event": event,
                "type": "event_callback",
                "event_id": event_id or f"Ev{next(_ids):08d}",
                "event_time": int(time.time()),
                "authorizations": [
                    {"team_id": TEAM, "user_id": "UBOT", "is_bot": True, "enterprise_id": None}
                ],
            }
        ).encode()

    async def event(self, event: dict[str, Any], **kwargs: Any) -> tuple[int, str]:
        return await self.post(self.event_body(event), "application/json", **kwargs)

    async def _send(
        self,
        kind: str,
        text: str,
        channel: str,
        user: str,
        thread_ts: str | None,
        ts: str | None,
        **extra: Any,
    ) -> str:
        """One signed event of ``kind`` from ``user`` in ``channel``; returns its ts."""
        ts = ts or next_ts()
        event: dict[str, Any] = {
            "type": kind,
            "user": user,
            "text": text,
            "ts": ts,
            "channel": channel,
            "team": TEAM,
            "event_ts": ts,
            **extra,
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        status, _ = await self.event(event)
        assert status == 200
        return ts

    async def mention(
        self,
        text: str,
        *,
        channel: str = CHANNEL,
        user: str = USER,
        thread_ts: str | None = None,
        ts: str | None = None,
    ) -> str:
        """``@bot text`` in ``channel`` (in a thread when ``thread_ts``); returns its ts."""
        return await self._send("app_mention", f"<@UBOT> {text}", channel, user, thread_ts, ts)

    async def dm(self, text: str, *, user: str = USER, thread_ts: str | None = None) -> str:
        return await self._send("message", text, DM, user, thread_ts, None, channel_type="im")

    @staticmethod
    def thread_started_event(
        thread_ts: str, *, user: str = USER, channel: str = DM
    ) -> dict[str, Any]:
        """``assistant_thread_started``: ``user`` opened a thread with the app in Slack's assistant
        pane (the app's DM ``channel``), from channel ``CHANNEL``."""
        return {
            "type": "assistant_thread_started",
            "assistant_thread": {
                "user_id": user,
                "context": {"channel_id": CHANNEL, "team_id": TEAM, "enterprise_id": None},
                "channel_id": channel,
                "thread_ts": thread_ts,
            },
            "event_ts": next_ts(),
        }

    async def thread_started(self, *, user: str = USER) -> str:
        """Open an assistant thread (as Slack does, with the app's first message as its root);
        returns the thread's ts."""
        thread_ts = next_ts()
        status, _ = await self.event(self.thread_started_event(thread_ts, user=user))
        assert status == 200
        return thread_ts

    async def assistant_message(self, text: str, thread_ts: str, *, user: str = USER) -> str:
        """A question typed in an assistant thread: a ``message.im`` in the app's DM, in the
        thread; returns its ts."""
        return await self.dm(text, user=user, thread_ts=thread_ts)

    async def message(
        self,
        text: str,
        *,
        channel: str = CHANNEL,
        user: str = USER,
        thread_ts: str | None = None,
        ts: str | None = None,
        **extra: Any,
    ) -> str:
        """A plain channel message (``message.channels``), no mention needed; returns its ts."""
        extra.setdefault("channel_type", "channel")
        return await self._send("message", text, channel, user, thread_ts, ts, **extra)

    def click_payload(
        self, message: Message, action_id: str, *, user: str = USER, rid: str
    ) -> dict[str, Any]:
        """The ``block_actions`` payload of ``user`` clicking button ``action_id`` on the bot's
        ``message``, as Slack sends it (``response_url`` on the stand-in, id ``rid``)."""
        [element] = [
            e
            for block in message.blocks or []
            if block.get("type") == "actions"
            for e in block["elements"]
            if e["action_id"] == action_id
        ]
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        }
        shown: dict[str, Any] = {
            "type": "message",
            "user": "UBOT",
            "bot_id": "BBOT",
            "ts": message.ts,
            "text": message.text,
            "blocks": message.blocks,
        }
        if message.thread_ts:
            container["thread_ts"] = shown["thread_ts"] = message.thread_ts
        return {
            "type": "block_actions",
            "user": {"id": user, "username": "someone", "team_id": TEAM},
            "api_app_id": "A0001",
            "token": "unused-verification-token",
            "container": container,
            "trigger_id": f"trigger-{rid}",
            "team": {"id": TEAM, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": message.channel, "name": "general"},
            "message": shown,
            "response_url": self.slack.response_url(rid),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "llmc_controls",
                    "text": element["text"],
                    "value": element.get("value", ""),
                    "type": "button",
                    "action_ts": str(time.time()),
                }
            ],
        }

    async def click(
        self, message: Message, action_id: str, *, user: str = USER, **kwargs: Any
    ) -> tuple[str, int, str]:
        """A signed ``block_actions`` request (form field ``payload``, as Slack posts it);
        returns the response_url id, the HTTP status and body."""
        rid = f"r{next(_ids)}"
        payload = self.click_payload(message, action_id, user=user, rid=rid)
        body = urlencode({"payload": json.dumps(payload)}).encode()
        status, answer = await self.post(body, "application/x-www-form-urlencoded", **kwargs)
        return rid, status, answer

    @staticmethod
    def command_body(
        command: str, text: str, *, channel: str, user: str, rid: str, url: str
    ) -> bytes:
        return urlencode(
            {
                "token": "unused-verification-token",
                "team_id": TEAM,
                "team_domain": "fake",
                "channel_id": channel,
                "channel_name": "directmessage" if channel.startswith("D") else "general",
                "user_id": user,
                "user_name": "someone",
                "command": command,
                "text": text,
                "api_app_id": "A0001",
                "is_enterprise_install": "false",
                "response_url": url,
                "trigger_id": f"trigger-{rid}",
            }
        ).encode()

    async def command(
        self, command: str, text: str = "", *, channel: str = CHANNEL, user: str = USER
    ) -> tuple[str, int, str]:
        """``/command text``; returns the response_url id, the HTTP status and body."""
        rid = f"r{next(_ids)}"
        body = self.command_body(
            command, text, channel=channel, user=user, rid=rid, url=self.slack.response_url(rid)
        )
        status, answer = await self.post(body, "application/x-www-form-urlencoded")
        return rid, status, answer

    async def responses(self, rid: str, count: int = 1) -> list[dict[str, Any]]:
        """The ``response_url`` posts for one command, once ``count`` arrived."""
        await wait_for(lambda: len(self.slack.responses.get(rid, [])) >= count)
        return self.slack.responses[rid]


@dataclass
class Running:
    bot: SlackBot
    engine: ChatEngine
    slack: SlackClient
    port: int


BotMaker = Callable[..., Awaitable[Running]]


@pytest.fixture
def journal() -> Journal:
    """The order in which the Slack and LLM stand-ins received their requests."""
    return Journal()


@pytest.fixture
async def slack_api(journal: Journal) -> AsyncIterator[FakeSlackAPI]:
    async with FakeSlackAPI(admins=("U0ADMIN",)) as api:
        api.journal = journal
        yield api


@pytest.fixture
async def llm(journal: Journal) -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(models=["alpha", "beta"]) as server:
        server.journal = journal
        yield server


def slack_settings(api: FakeSlackAPI, **overrides: Any) -> tuple[Settings, SlackSettings]:
    """(the engine's settings, the bot's), from the same values: each takes its own."""
    values: dict[str, Any] = {
        "slack_bot_token": api.bot_token,
        "slack_app_token": api.app_token,
        "slack_signing_secret": SECRET,
        "slack_api_url": api.api_url,
        "llmconnect_model": "local/alpha",
        "slack_edit_interval": 0.01,
        # Budgets out of the way (tests of the pacing set their own).
        "slack_workspace_edit_rate": 600_000,
        "slack_workspace_post_rate": 600_000,
        "slack_channel_post_rate": 1_000,
        "slack_stream_rate": 600_000,
        "user_rate_limit": 0,
    }
    values.update(overrides)
    return load_settings(**values), load_settings(SlackSettings, **values)


@pytest.fixture
async def socket_bot(slack_api: FakeSlackAPI, llm: FakeLLMServer) -> AsyncIterator[SlackBot]:
    # No signing secret: Socket Mode needs none (there is no inbound HTTP to verify).
    settings, slack = slack_settings(slack_api, slack_signing_secret=None)
    async with httpx.AsyncClient() as http:
        engine = ChatEngine(settings, env={"LOCAL_BASE_URL": llm.openai_base_url}, http_client=http)
        async with SlackBot(slack, engine) as bot:
            await bot.start_socket_mode()
            await slack_api.wait_connected()
            yield bot
        await engine.aclose()


@pytest.fixture
async def make_bot(slack_api: FakeSlackAPI, llm: FakeLLMServer) -> AsyncIterator[BotMaker]:
    """``await make_bot(clock=..., **settings_overrides)``: a bot serving HTTP on a free loopback
    port (the bot and its engine on ``clock`` when given)."""
    running: list[Running] = []
    async with httpx.AsyncClient() as http, aiohttp.ClientSession() as session:

        async def make(*, clock: Clock | None = None, **overrides: Any) -> Running:
            settings, slack = slack_settings(slack_api, **overrides)
            engine = ChatEngine(
                settings,
                env={"LOCAL_BASE_URL": llm.openai_base_url},
                http_client=http,
                clock=clock,
            )
            bot = SlackBot(slack, engine, clock=clock)
            port = await bot.serve_http("127.0.0.1", 0)
            client = SlackClient(f"http://127.0.0.1:{port}{EVENTS_PATH}", session, slack_api)
            running.append(Running(bot, engine, client, port))
            return running[-1]

        yield make
        for r in running:
            await r.bot.aclose()  # the engine was passed in: the bot leaves it running
            await r.engine.aclose()
