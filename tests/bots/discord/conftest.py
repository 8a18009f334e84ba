"""Fixtures for the Discord adapter: a real discord.py client against the local stand-in.

Every test gets a :class:`FakeDiscordServer` with one guild (channels ``general``, ``random`` and
a thread under ``general``; members ``alice``, ``bob`` and ``mod``, who has Manage Server), a
:class:`FakeLLMServer` reachable as ``local/alpha`` / ``local/beta``, and ``start_bot(**settings)``,
which logs a :class:`DiscordBot` in over loopback and waits for READY. Rate-limit windows are
Discord's scaled down by 10 (5 edits per 0.5 s per channel) so that waits stay short; the bot-wide
window keeps Discord's 50 requests per second.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import discord
import httpx
import pytest

from bots.discord import DiscordBot, DiscordSettings
from core.clock import Clock
from core.engine import ChatEngine
from core.settings import load_settings
from tests.fakes.discord_server import MANAGE_GUILD, FakeDiscordServer, FakeGuild
from tests.fakes.llm_server import FakeLLMServer


@pytest.fixture(autouse=True)
def no_machine_settings(clean_settings_env: None) -> None:
    """Every test here: no setting from this machine, no ``.env`` (tests/conftest.py)."""


@pytest.fixture(autouse=True)
def restore_endpoints() -> Iterator[None]:
    """``configure_endpoints`` sets discord.py class attributes; put them back afterwards."""
    base = discord.http.Route.BASE
    gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord.http.Route.BASE = base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway


async def wait_for(predicate: Callable[[], bool], tries: int = 1000) -> None:
    """Poll ``predicate`` every 10 ms, at most ``tries`` times (loopback I/O on both sides)."""
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0.01)
    assert predicate(), "condition never became true"


@dataclass
class World:
    server: FakeDiscordServer
    guild: FakeGuild
    general: str
    random: str
    thread: str
    alice: str
    bob: str
    mod: str
    mod_role: str


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(models=["alpha", "beta"]) as server:
        yield server


@pytest.fixture
def server_limits(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The stand-in's rate limits; a test changes some with
    ``@pytest.mark.parametrize("server_limits", [{...}], indirect=True)``."""
    return {
        "edit_limit": (5, 0.5),
        "post_limit": (5, 0.5),
        "webhook_limit": (5, 0.5),
        "global_limit": (50, 1.0),
        **getattr(request, "param", {}),
    }


@pytest.fixture
async def world(server_limits: dict[str, Any]) -> AsyncIterator[World]:
    async with FakeDiscordServer(**server_limits) as server:
        guild = server.add_guild("Test Guild")
        general = server.add_channel(guild, "general")
        random = server.add_channel(guild, "random")
        thread = server.add_thread(guild, general, "a thread")
        mod_role = server.add_role(guild, "mods", MANAGE_GUILD)
        yield World(
            server=server,
            guild=guild,
            general=general,
            random=random,
            thread=thread,
            alice=server.add_member(guild, "alice"),
            bob=server.add_member(guild, "bob"),
            mod=server.add_member(guild, "mod", roles=[mod_role]),
            mod_role=mod_role,
        )


@pytest.fixture
async def http(llm: FakeLLMServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=None)) as client:
        yield client


BotStarter = Callable[..., Any]


@pytest.fixture
async def start_bot(
    world: World, llm: FakeLLMServer, http: httpx.AsyncClient
) -> AsyncIterator[BotStarter]:
    """``await start_bot(clock=..., **settings_overrides)`` -> a ready :class:`DiscordBot`
    (its engine, and so the whole bot, on ``clock`` when given)."""
    started: list[tuple[DiscordBot, asyncio.Task[None]]] = []

    async def start(
        *, budget: Any = None, clock: Clock | None = None, **overrides: Any
    ) -> DiscordBot:
        values: dict[str, Any] = {
            "discord_api_url": world.server.api_url,
            "discord_gateway_url": world.server.gateway_url,
            "discord_edit_interval": 0.12,
            "llmconnect_model": "local/alpha",
            "llmconnect_allowed_models": "local/alpha,local/beta,echo",
            "llm_max_retries": 0,
            "user_rate_limit": 0,
        }
        values.update(overrides)
        settings = load_settings(**values)
        engine = ChatEngine(
            settings, env={"LOCAL_BASE_URL": llm.openai_base_url}, http_client=http, clock=clock
        )
        bot = DiscordBot(
            load_settings(DiscordSettings, **values),
            engine,
            budget=budget,
            out=io.StringIO(),
            guild_ready_timeout=0.01,
        )
        await bot.login(world.server.token)
        task = asyncio.create_task(bot.connect(reconnect=False))
        started.append((bot, task))
        await asyncio.wait_for(bot.wait_until_ready(), 10)
        return bot

    yield start
    for bot, task in started:
        await bot.close()
        await bot.engine.aclose()
        await asyncio.wait_for(task, 10)
