"""Process faults: SIGTERM while answers stream leaves every message final; a full bot lifecycle
leaves no task and no connection behind."""

from __future__ import annotations

import asyncio
import io
import signal
from pathlib import Path

import aiohttp
import httpx

from bots.discord import DiscordBot, DiscordSettings
from bots.slack import EVENTS_PATH, SlackBot
from core.conversations import FINAL, ConversationKey
from core.engine import ChatEngine
from core.settings import load_settings
from tests.bots.slack.conftest import Running, SlackClient, slack_settings
from tests.bots.slack.test_cli import start as start_slack_cli
from tests.bots.test_run import empty_env, started
from tests.fakes.discord_server import FakeDiscordServer
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import CHANNEL, MARKER, SlackChat, wait_for

LONG = " ".join(f"word{i}" for i in range(400))
STOPPED = "⏹ stopped"


def final_view(text: str) -> bool:
    """A message a user may be left with: no streaming marker; the whole answer or a stop note."""
    return not text.endswith(MARKER) and MARKER not in text and (text == LONG or STOPPED in text)


async def test_sigterm_mid_stream_on_slack_http_leaves_every_message_final(
    slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    """``llmconnect slack --http`` as a real process, two channels streaming, then SIGTERM."""
    llm.enqueue(Reply(text=LONG, delay=0.02), Reply(text=LONG, delay=0.02))
    env = {
        "SLACK_BOT_TOKEN": slack_api.bot_token,
        "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789",
        "SLACK_API_URL": slack_api.api_url,
        "LOCAL_BASE_URL": llm.openai_base_url,
        "LLMCONNECT_MODEL": "local/alpha",
        "SLACK_EDIT_INTERVAL": "0.05",
    }
    proc = await start_slack_cli("--http", "--host", "127.0.0.1", "--port", "0", env=env)
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        url = line.split()[-1]
        async with aiohttp.ClientSession() as session:
            client = SlackClient(url, session, slack_api)
            await client.mention("tell me everything")
            await client.mention("you too", channel="C0RANDOM")
        await wait_for(
            lambda: (
                len(slack_api.bot_messages()) == 2
                and all("word5 " in m.text for m in slack_api.bot_messages())
            ),
            tries=3000,
        )
        assert all(m.text.endswith(MARKER) for m in slack_api.bot_messages())  # mid-stream
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    texts = [m.text for m in slack_api.bot_messages()]
    assert len(texts) == 2
    assert all(final_view(t) for t in texts), texts
    assert any(STOPPED in t for t in texts), texts
    assert llm.open_streams == 0


async def test_sigterm_mid_stream_on_llmconnect_run_with_discord(tmp_path: Path) -> None:
    """``llmconnect run`` with the Discord stand-in: SIGTERM while a reply streams."""
    async with FakeLLMServer(models=["alpha"]) as llm, FakeDiscordServer() as discord:
        llm.enqueue(Reply(text=LONG, delay=0.02))
        guild = discord.add_guild()
        general = discord.add_channel(guild, "general")
        alice = discord.add_member(guild, "alice")
        env = empty_env(
            WEB_PORT="0",
            **discord.bot_env(),
            DISCORD_EDIT_INTERVAL="0.05",
            LOCAL_BASE_URL=llm.openai_base_url,
            LLMCONNECT_MODEL="local/alpha",
        )
        async with started(env, tmp_path) as process:
            await process.read_until("Ctrl-C stops.")
            await discord.wait_ready(tries=3000)
            asked = await discord.send_message(general, alice, "tell me everything")
            await wait_for(
                lambda: any("word5 " in m.content for m in discord.replies_to(asked)), tries=3000
            )
            code = await process.stop(signal.SIGTERM)
        texts = [m.content for m in discord.replies_to(asked)]
    assert code == 0, process.output
    assert texts
    assert all(final_view(t) for t in texts), texts
    assert STOPPED in texts[-1]
    assert discord.token not in process.output


def tasks_now() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if not t.done()}


async def test_a_full_slack_lifecycle_leaks_no_task_and_no_connection(
    slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    """Start, answer (one whole, one stopped mid-stream by shutdown), close: every task the bot
    started has ended, and no connection to the LLM stays open on either side."""
    before = tasks_now()
    llm.enqueue(Reply(text="short answer"), Reply(text=LONG, delay=0.02))
    settings, slack = slack_settings(slack_api, slack_streaming="update")
    async with httpx.AsyncClient() as http, aiohttp.ClientSession() as session:
        engine = ChatEngine(settings, env={"LOCAL_BASE_URL": llm.openai_base_url}, http_client=http)
        bot = SlackBot(slack, engine)
        port = await bot.serve_http("127.0.0.1", 0)
        client = SlackClient(f"http://127.0.0.1:{port}{EVENTS_PATH}", session, slack_api)
        chat = SlackChat(Running(bot, engine, client, port), slack_api, llm)
        first = await chat.ask("hello")
        await chat.answer(first, "short answer")
        second = await chat.ask("long one", user="U0OTHER")
        await wait_for(lambda: bool(chat.shown(second)))
        assert tasks_now() - before  # the bot does run tasks while it streams
        await bot.aclose()
        await engine.aclose()
        assert chat.shown(second)[0].endswith(STOPPED)
        conversation = await engine.store.get(ConversationKey("slack", CHANNEL))
        assert conversation is not None
        assert all(m.status in FINAL for m in conversation.messages)
    await wait_for(lambda: tasks_now() <= before)
    assert tasks_now() - before == set()
    assert llm.open_streams == 0
    runner = llm._runner
    assert runner is not None
    await wait_for(lambda: not runner.server.connections)  # type: ignore[union-attr]


async def test_a_full_discord_lifecycle_leaks_no_task_and_no_connection(
    llm: FakeLLMServer,
) -> None:
    """The Discord bot's lifecycle, with the LLM pool it is given: no task, no open stream, and
    every pooled connection idle once the reply ended; none at all once the pool is closed."""
    before = tasks_now()
    async with FakeDiscordServer() as server:
        guild = server.add_guild()
        general = server.add_channel(guild, "general")
        alice = server.add_member(guild, "alice")
        values: dict[str, object] = {
            "discord_api_url": server.api_url,
            "discord_gateway_url": server.gateway_url,
            "discord_edit_interval": 0.05,
            "llmconnect_model": "local/alpha",
            "user_rate_limit": 0,
        }
        settings = load_settings(**values)
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=None)) as http:
            engine = ChatEngine(
                settings, env={"LOCAL_BASE_URL": llm.openai_base_url}, http_client=http
            )
            bot = DiscordBot(
                load_settings(DiscordSettings, **values),
                engine,
                out=io.StringIO(),
                guild_ready_timeout=0.01,
            )
            await bot.login(server.token)
            task = asyncio.create_task(bot.connect(reconnect=False))
            await asyncio.wait_for(bot.wait_until_ready(), 10)
            llm.enqueue(Reply(text="short answer"), Reply(text=LONG, delay=0.02))
            first = await server.send_message(general, alice, "hello")
            await wait_for(
                lambda: [m.content for m in server.replies_to(first)] == ["short answer"]
            )
            second = await server.send_message(general, alice, "long one")
            await wait_for(lambda: bool(server.replies_to(second)))
            await bot.close()
            await engine.aclose()
            await asyncio.wait_for(task, 10)
            assert server.replies_to(second)[-1].content.endswith(STOPPED)
            pool = http._transport._pool  # type: ignore[attr-defined]
            assert all(c.is_idle() for c in pool.connections)
        # The stand-in notices the closed stream on its side a moment later.
        await wait_for(lambda: llm.open_streams == 0)
    await wait_for(lambda: tasks_now() <= before)
    assert tasks_now() - before == set()
    runner = llm._runner
    assert runner is not None
    await wait_for(lambda: not runner.server.connections)  # type: ignore[union-attr]
