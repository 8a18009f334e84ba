"""One harness over the real Slack and Discord bots, so each fault runs through both.

The fixtures are the adapter tests' own (imported, not copied): the Slack bot serves HTTP on
loopback against :class:`FakeSlackAPI`, the Discord bot logs in to :class:`FakeDiscordServer`,
both answer with :class:`FakeLLMServer` as the provider ``local`` (``local/alpha``).
:class:`Chat` hides which platform runs: ``ask`` a question as a user would, read what the user
now sees of the answer (``shown``), and get the next request the LLM received.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from core.conversations import ConversationKey
from core.engine import ChatEngine
from tests.bots.discord import conftest as discord_fixtures
from tests.bots.discord.conftest import BotStarter, World
from tests.bots.slack import conftest as slack_fixtures
from tests.bots.slack.conftest import CHANNEL, USER, BotMaker, Running, wait_for
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.slack_api import FakeSlackAPI

# The adapter tests' fixtures, reused by name (``llm`` is the same stand-in in both).
no_machine_settings = slack_fixtures.no_machine_settings
journal = slack_fixtures.journal
llm = slack_fixtures.llm
slack_api = slack_fixtures.slack_api
make_bot = slack_fixtures.make_bot
restore_endpoints = discord_fixtures.restore_endpoints
server_limits = discord_fixtures.server_limits
world = discord_fixtures.world
http = discord_fixtures.http
start_bot = discord_fixtures.start_bot

MARKER = "▌"
PLATFORMS = ["slack", "discord"]


def chat_messages(llm: FakeLLMServer) -> list[list[dict[str, Any]]]:
    """The ``messages`` of every chat request the LLM stand-in received, in order."""
    return [
        r.json["messages"]
        for r in llm.requests
        if r.path.endswith("/chat/completions") and isinstance(r.json, dict)
    ]


def assert_consistent(messages: list[dict[str, Any]]) -> None:
    """A history the LLM can take: user/assistant alternate, end on the user, nothing shown to
    the user by the bot itself (marker, notes) leaks into an assistant turn."""
    roles = [m["role"] for m in messages if m["role"] != "system"]
    assert roles, messages
    assert roles[-1] == "user", messages
    for a, b in itertools.pairwise(roles):
        assert a != b, f"two {a} turns in a row: {messages}"
    for m in messages:
        assert m["content"], f"empty turn: {messages}"
        if m["role"] == "assistant":
            assert MARKER not in m["content"]
            assert "⚠️" not in m["content"]
            assert "⏹" not in m["content"]


@dataclass
class Asked:
    """One question put to the bot; ``ref`` is the platform's handle on it."""

    text: str
    ref: Any
    seen: set[Any] = field(default_factory=set)


class Chat(ABC):
    """A running bot on one platform, seen from the user's side."""

    name: str
    engine: ChatEngine
    key: ConversationKey
    llm: FakeLLMServer

    @abstractmethod
    async def ask(self, text: str, *, user: str | None = None) -> Asked:
        """Address the bot with ``text`` (a mention) as ``user`` (the default user)."""

    @abstractmethod
    def shown(self, asked: Asked) -> list[str]:
        """The visible text of every bot message answering ``asked``, in order."""

    @abstractmethod
    def refusals(self, asked: Asked) -> list[str]:
        """Short answers the bot gave ``asked`` instead of running it (ephemeral on Slack)."""

    @abstractmethod
    async def command(self, name: str, arg: str = "") -> str:
        """Run a slash command; returns the text the user got."""

    @abstractmethod
    def other_user(self) -> str:
        """A second user's id."""

    async def answer(self, asked: Asked, *expected: str, tries: int = 1500) -> list[str]:
        """Wait until ``asked`` shows exactly ``expected`` (the final view) and return it."""
        await wait_for(lambda: self.shown(asked) == list(expected), tries=tries)
        return self.shown(asked)

    async def settled(self, asked: Asked, tries: int = 1500) -> list[str]:
        """Wait until ``asked`` has a final answer (no streaming marker, reply done)."""

        def done() -> bool:
            texts = self.shown(asked)
            reply = self.engine.reply_for(self.key)
            return (
                bool(texts)
                and not any(t.endswith(MARKER) for t in texts)
                and not self.engine.is_busy(self.key)
                and reply is not None
                and reply.done
                and self.idle()
            )

        await wait_for(done, tries=tries)
        return self.shown(asked)

    @abstractmethod
    def idle(self) -> bool:
        """No delivery is running."""


class SlackChat(Chat):
    name = "slack"
    OTHER = "U0OTHER"

    def __init__(self, running: Running, api: FakeSlackAPI, llm: FakeLLMServer) -> None:
        self.running = running
        self.api = api
        self.llm = llm
        self.engine = running.engine
        self.key = ConversationKey("slack", CHANNEL)

    async def ask(self, text: str, *, user: str | None = None) -> Asked:
        seen = set(self.api.messages)
        ephemeral = len(self.api.ephemeral)
        ts = await self.running.slack.mention(text, user=user or USER)
        return Asked(text, (ts, ephemeral), seen)

    def shown(self, asked: Asked) -> list[str]:
        return [
            m.text
            for m in self.api.thread(CHANNEL)
            if (m.channel, m.ts) not in asked.seen and not m.text.startswith("*<@")
        ]

    def refusals(self, asked: Asked) -> list[str]:
        return [e["text"] for e in self.api.ephemeral[asked.ref[1] :]]

    async def command(self, name: str, arg: str = "") -> str:
        rid, status, _ = await self.running.slack.command(f"/{name}", arg)
        assert status == 200
        return str((await self.running.slack.responses(rid))[0]["text"])

    def other_user(self) -> str:
        return self.OTHER

    def idle(self) -> bool:
        return not self.running.bot._tasks


class DiscordChat(Chat):
    name = "discord"

    def __init__(self, bot: Any, world: World, llm: FakeLLMServer) -> None:
        self.bot = bot
        self.world = world
        self.server = world.server
        self.llm = llm
        self.engine = bot.engine
        self.key = ConversationKey("discord", world.general)

    async def ask(self, text: str, *, user: str | None = None) -> Asked:
        message = await self.server.send_message(self.world.general, user or self.world.alice, text)
        return Asked(text, message)

    def shown(self, asked: Asked) -> list[str]:
        return [m.content for m in self.server.replies_to(asked.ref) if not m.deleted]

    def refusals(self, asked: Asked) -> list[str]:
        return self.shown(asked)

    async def command(self, name: str, arg: str = "") -> str:
        options = {"model": {"name": arg}, "system": {"text": arg}}.get(name, {})
        options = {k: v for k, v in options.items() if v}
        interaction = await self.server.slash(self.world.general, self.world.alice, name, **options)
        await wait_for(lambda: interaction.responded)
        await wait_for(lambda: bool(self._command_text(interaction)))
        return self._command_text(interaction)

    def _command_text(self, interaction: Any) -> str:
        data = interaction.callbacks[0].get("data") or {}
        if data.get("content"):
            return str(data["content"])
        messages = self.server.interaction_messages(interaction)
        return messages[0].content if messages else ""

    def other_user(self) -> str:
        return self.world.bob

    def idle(self) -> bool:
        return self.bot.streaming == 0


ChatMaker = Callable[..., Any]


@pytest.fixture(params=PLATFORMS)
def make_chat(request: pytest.FixtureRequest, llm: FakeLLMServer) -> ChatMaker:
    """``await make_chat(**settings)``: the bot of the parametrized platform, started
    (``block_other_user=True``: the platform's second user is in ``BLOCKED_USERS``).

    A plain fixture, so that it can pull the platform's async fixtures by name.
    """
    platform: str = request.param

    def block_other(overrides: dict[str, Any], other: str) -> None:
        if overrides.pop("block_other_user", False):
            overrides["blocked_users"] = other

    if platform == "slack":
        maker: BotMaker = request.getfixturevalue("make_bot")
        api: FakeSlackAPI = request.getfixturevalue("slack_api")

        async def make_slack(**overrides: Any) -> Chat:
            overrides.setdefault("slack_streaming", "update")
            block_other(overrides, SlackChat.OTHER)
            return SlackChat(await maker(**overrides), api, llm)

        return make_slack
    starter: BotStarter = request.getfixturevalue("start_bot")
    the_world: World = request.getfixturevalue("world")

    async def make_discord(**overrides: Any) -> Chat:
        block_other(overrides, the_world.bob)
        return DiscordChat(await starter(**overrides), the_world, llm)

    return make_discord
