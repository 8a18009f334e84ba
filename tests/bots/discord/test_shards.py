"""Shards: ``DISCORD_SHARD_COUNT`` / ``DISCORD_SHARD_IDS``, several per process or one set per
process, against the stand-in, which routes each guild's events to its shard's connection only
(as Discord does; DMs to shard 0).

Whether a guild is left alone is read from what the stand-in recorded: the event went to no
connection (:meth:`FakeDiscordServer.delivered`), so no reply can come later.
"""

from __future__ import annotations

import asyncio
import io
import signal
import sys
import tempfile
from dataclasses import dataclass

import pytest

from bots.discord import DiscordBot, DiscordSettings
from core.conversations import ConversationKey, Status
from core.engine import ChatEngine
from core.settings import load_settings
from core.stores.redis_store import RedisStore
from tests.fakes.discord_server import FakeDiscordServer, FakeGuild
from tests.fakes.llm_server import FakeLLMServer

from .conftest import BotStarter, World, wait_for
from .test_run import cli_env

CLI = [sys.executable, "-m", "bots.console", "discord"]


@dataclass
class ShardGuild:
    guild: FakeGuild
    channel: str
    user: str


def guild_on(server: FakeDiscordServer, shard: int, count: int = 2) -> ShardGuild:
    guild = server.add_guild(f"Shard {shard}", shard=(shard, count))
    return ShardGuild(guild, server.add_channel(guild), server.add_member(guild, f"user{shard}"))


def said(prompt: str) -> str:
    """What the fake LLM answers when nothing is scripted."""
    return f"You said: {prompt}"


async def test_one_bot_runs_every_shard_of_discord_shard_count(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    zero, one = guild_on(server, 0), guild_on(server, 1)
    bot = await start_bot(discord_shard_count=2)
    assert sorted(server.shards_identified) == [(0, 2), (1, 2)]
    assert sorted(bot.shards) == [0, 1]
    asked = [
        await server.send_message(zero.channel, zero.user, "hello shard zero"),
        await server.send_message(one.channel, one.user, "hello shard one"),
    ]
    for prompt, text in zip(asked, ["hello shard zero", "hello shard one"], strict=True):
        await wait_for(
            lambda p=prompt, t=text: [m.content for m in server.replies_to(p)] == [said(t)]
        )
    assert [server.delivered(p) for p in asked] == [[(0, 2)], [(1, 2)]]
    # A slash command reaches the bot over its guild's shard too.
    interaction = await server.slash(one.channel, one.user, "status")
    await wait_for(lambda: interaction.responded)
    assert server.delivered(interaction) == [(1, 2)]


async def test_discord_shard_ids_runs_only_those_shards(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    zero, one = guild_on(server, 0), guild_on(server, 1)
    bot = await start_bot(discord_shard_count=2, discord_shard_ids="1")
    assert server.shards_identified == [(1, 2)]
    assert sorted(bot.shards) == [1]
    assert bot.get_guild(int(one.guild.id)) is not None
    assert bot.get_guild(int(zero.guild.id)) is None  # shard 0's guilds never reached it
    elsewhere = await server.send_message(zero.channel, zero.user, "anyone on shard zero?")
    here = await server.send_message(one.channel, one.user, "hello shard one")
    await wait_for(
        lambda: [m.content for m in server.replies_to(here)] == [said("hello shard one")]
    )
    assert server.delivered(here) == [(1, 2)]
    assert server.delivered(elsewhere) == []  # no connection of shard 0: nobody will answer
    assert server.bot_messages(zero.channel) == []
    assert [r.json["messages"][-1]["content"] for r in llm.requests] == ["hello shard one"]


@pytest.mark.parametrize("server_limits", [{"recommended_shards": 2}], indirect=True)
async def test_without_shard_settings_it_follows_discords_recommended_count(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    zero, one = guild_on(server, 0), guild_on(server, 1)
    bot = await start_bot()
    assert bot.shard_count == 2
    assert sorted(server.shards_identified) == [(0, 2), (1, 2)]
    for place in (zero, one):
        prompt = await server.send_message(place.channel, place.user, f"hi {place.guild.name}")
        await wait_for(
            lambda p=prompt, g=place.guild: (
                [m.content for m in server.replies_to(p)] == [said(f"hi {g.name}")]
            )
        )


async def test_two_processes_split_the_shards_and_share_the_store(fresh_redis_url: str) -> None:
    """Two real ``llmconnect discord`` processes, shards 0 and 1 of 2, one Redis: each guild is
    answered once, by its shard's process, and both keep their conversations in the Redis."""
    async with FakeDiscordServer() as server:
        zero, one = guild_on(server, 0), guild_on(server, 1)
        dm_user = zero.user
        dm = server.dm_channel(dm_user)
        common = {
            **server.bot_env(),
            "DISCORD_EDIT_INTERVAL": "0.05",
            "LLMCONNECT_MODEL": "echo",
            "STORE_URL": fresh_redis_url,
            "DISCORD_SHARD_COUNT": "2",
        }
        procs = [
            await asyncio.create_subprocess_exec(
                *CLI,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=cli_env({**common, "DISCORD_SHARD_IDS": shard}),
                cwd=tempfile.gettempdir(),
            )
            for shard in ("0", "1")
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
                assert line.startswith(b"Invite the bot with:"), line
            await server.wait_ready(tries=3000, shards=2)
            asked = {
                "zero": await server.send_message(zero.channel, zero.user, "hello zero"),
                "one": await server.send_message(one.channel, one.user, "hello one"),
                "dm": await server.send_message(dm, dm_user, "hello dm", mention_bot=False),
            }
            for name, prompt in asked.items():
                await wait_for(
                    lambda p=prompt, n=name: (
                        [m.content for m in server.replies_to(p)] == [f"[echo] You said: hello {n}"]
                    ),
                    tries=3000,
                )
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGINT)
            ended = [await asyncio.wait_for(proc.communicate(), 60) for proc in procs]

        assert sorted(server.shards_identified) == [(0, 2), (1, 2)]  # each once
        # Each event went to one process only: its shard's (a DM: shard 0's).
        assert [server.delivered(p) for p in asked.values()] == [[(0, 2)], [(1, 2)], [(0, 2)]]
        assert [len(server.bot_messages(c)) for c in (zero.channel, one.channel, dm)] == [1, 1, 1]
        store = RedisStore(fresh_redis_url)
        try:
            for channel, name in ((zero.channel, "zero"), (one.channel, "one"), (dm, "dm")):
                conversation = await store.get(ConversationKey("discord", channel))
                assert conversation is not None
                assert [(m.role, m.status) for m in conversation.messages] == [
                    ("user", Status.COMPLETE),
                    ("assistant", Status.COMPLETE),
                ]
                assert conversation.messages[0].content == f"hello {name}"
        finally:
            await store.aclose()
    for proc, (out, err) in zip(procs, ended, strict=True):
        assert proc.returncode in (0, 130), err.decode()
        assert b"Traceback" not in err, err.decode()
        assert server.token.encode() not in out + err


async def test_a_bot_closed_before_it_logged_in_closes_cleanly() -> None:
    """A shutdown right at start-up (``llmconnect run`` stopped at once) may close the bot
    before login; AutoShardedClient alone would fail there for want of its event queue."""
    engine = ChatEngine(load_settings(), env={})
    bot = DiscordBot(load_settings(DiscordSettings), engine, out=io.StringIO())
    try:
        await bot.close()
        assert bot.is_closed()
    finally:
        await engine.aclose()
