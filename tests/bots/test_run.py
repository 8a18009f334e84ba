"""``llmconnect run``: every configured front end in one process over one engine.

As a real process (an empty environment, a Slack stand-in, SIGTERM mid-reply) and in-process
(where the engine's messages can be inspected after a shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from io import StringIO
from pathlib import Path

import aiohttp
import discord as discord_lib
import httpx
import pytest
from httpx_sse import aconnect_sse

from bots.discord import DiscordFrontEnd, DiscordSettings
from bots.run import SERVING_GC_THRESHOLDS, Runner
from bots.slack import SlackFrontEnd, SlackSettings
from bots.web import WebFrontEnd, WebSettings
from core.conversations import FINAL, ConversationKey
from core.mcp import ServerStatus
from core.settings import load_settings
from tests.bots.slack.conftest import CHANNEL, SECRET, SlackClient, wait_for
from tests.fakes.discord_server import FakeDiscordServer
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.mcp_server import stdio_servers
from tests.fakes.slack_api import FakeSlackAPI

CLI = [sys.executable, "-m", "bots.console", "run"]
WEB_URL = re.compile(r"Web chat:\s+(http://127\.0\.0\.1:\d+)")


@pytest.fixture(autouse=True)
def no_machine_settings(clean_settings_env: None) -> None:
    """Every test here: no setting from this machine, no ``.env`` (tests/conftest.py)."""


def empty_env(**extra: str) -> dict[str, str]:
    """Only what starting Python needs; no setting, no key."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {**{k: v for k, v in os.environ.items() if k in keep}, **extra}


class Process:
    """``llmconnect run`` as a child process; its output read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def read_until(self, text: str) -> str:
        assert self.proc.stdout is not None
        while text not in self.output:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
            if not line:
                raise AssertionError(f"exited before printing {text!r}:\n{self.output}")
            self.lines.append(line.decode())
        return self.output

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        assert self.proc.stdout is not None
        rest = await asyncio.wait_for(self.proc.stdout.read(), 30)
        self.lines.append(rest.decode())
        return await asyncio.wait_for(self.proc.wait(), 30)


@contextlib.asynccontextmanager
async def started(env: dict[str, str], cwd: Path, *args: str) -> AsyncIterator[Process]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    process = Process(proc)
    try:
        yield process
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_an_empty_environment_serves_the_web_chat_on_echo(tmp_path: Path) -> None:
    async with started(empty_env(WEB_PORT="0"), tmp_path) as process:
        output = await process.read_until("Ctrl-C stops.")
        match = WEB_URL.search(output)
        assert match, output
        url = match.group(1)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            page = await client.get("/")
            await client.post("/chat/hello/send-message", json={"text": "hi there"})
            async with aconnect_sse(client, "GET", "/chat/hello/bot-stream") as source:
                end = [json.loads(e.data) async for e in source.aiter_sse() if e.event == "end"]
        code = await process.stop(signal.SIGINT)
    assert page.status_code == 200
    assert 'id="composer"' in page.text
    assert end[0]["content"] == "[echo] You said: hi there"
    assert end[0]["status"] == "complete"
    assert "default model echo/echo" in output
    # It says what would add a real model or a platform.
    for var in ("GROQ_API_KEY", "LLMCONNECT_MODEL", "DISCORD_TOKEN", "SLACK_BOT_TOKEN"):
        assert var in output
    assert code == 0
    assert "Stopped." in process.output


async def test_sigterm_mid_reply_stops_it_and_leaves_it_final(tmp_path: Path) -> None:
    async with FakeLLMServer(models=["slow"]) as llm:
        llm.enqueue(Reply(text=" ".join(["word"] * 400), delay=0.05))
        env = empty_env(
            WEB_PORT="0", LOCAL_BASE_URL=llm.openai_base_url, LLMCONNECT_MODEL="local/slow"
        )
        async with started(env, tmp_path) as process:
            output = await process.read_until("Ctrl-C stops.")
            url = WEB_URL.search(output).group(1)  # type: ignore[union-attr]
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                await client.post("/chat/long/send-message", json={"text": "go on"})
                events: list[tuple[str, str]] = []
                async with aconnect_sse(client, "GET", "/chat/long/bot-stream") as source:
                    async for event in source.aiter_sse():
                        events.append((event.event, event.data))
                        if event.event == "delta" and len(events) == 3:
                            process.proc.send_signal(signal.SIGTERM)
            code = await process.stop()
    assert events[-1][0] == "end"
    end = json.loads(events[-1][1])
    assert end["status"] == "cancelled"
    assert end["content"].startswith("word word")
    assert code == 0
    assert "Stopping" in process.output
    assert "Stopped." in process.output


async def test_with_a_slack_stand_in_it_starts_slack_and_the_web_chat(tmp_path: Path) -> None:
    async with FakeSlackAPI() as slack:
        env = empty_env(
            WEB_PORT="0",
            SLACK_BOT_TOKEN=slack.bot_token,
            SLACK_APP_TOKEN=slack.app_token,
            SLACK_API_URL=slack.api_url,
        )
        async with started(env, tmp_path) as process:
            output = await process.read_until("Ctrl-C stops.")
            await slack.wait_connected()
            url = WEB_URL.search(output).group(1)  # type: ignore[union-attr]
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                page = await client.get("/")
            code = await process.stop()
    assert "Slack bot:" in output
    assert "Socket Mode" in output
    assert page.status_code == 200
    assert "Slack:" not in output  # no hint to configure what runs
    assert slack.bot_token not in process.output
    assert slack.app_token not in process.output
    assert code == 0


async def test_slack_over_http_is_served_where_the_settings_say(tmp_path: Path) -> None:
    async with FakeSlackAPI() as slack, aiohttp.ClientSession() as session:
        env = empty_env(
            SLACK_BOT_TOKEN=slack.bot_token,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=slack.api_url,
            SLACK_HTTP_HOST="127.0.0.1",
            SLACK_HTTP_PORT="0",
            SLACK_EDIT_INTERVAL="0.01",
        )
        async with started(env, tmp_path, "--no-web") as process:
            output = await process.read_until("Ctrl-C stops.")
            match = re.search(r"events at (http://127\.0\.0\.1:\d+/slack/events)", output)
            assert match, output
            await SlackClient(match.group(1), session, slack).mention("over http")
            await wait_for(lambda: slack.texts(CHANNEL) == ["[echo] You said: over http"])
            code = await process.stop()
    assert code == 0
    assert "Web chat" not in output


async def test_with_discord_and_slack_configured_one_process_serves_all_three(
    tmp_path: Path,
) -> None:
    """One engine behind the web chat, the Discord bot and the Slack bot, each answering."""
    async with FakeSlackAPI() as slack, FakeDiscordServer() as discord:
        guild = discord.add_guild()
        general = discord.add_channel(guild, "general")
        alice = discord.add_member(guild, "alice")
        env = empty_env(
            WEB_PORT="0",
            **discord.bot_env(),
            DISCORD_EDIT_INTERVAL="0.05",
            SLACK_BOT_TOKEN=slack.bot_token,
            SLACK_APP_TOKEN=slack.app_token,
            SLACK_API_URL=slack.api_url,
        )
        async with started(env, tmp_path) as process:
            output = await process.read_until("Ctrl-C stops.")
            url = WEB_URL.search(output).group(1)  # type: ignore[union-attr]
            await slack.wait_connected()
            await discord.wait_ready(tries=3000)
            asked = await discord.send_message(general, alice, "hello discord")
            await slack.send_envelope("events_api", mention(slack, "hello slack"))
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                await client.post("/chat/web/send-message", json={"text": "hello web"})
                async with aconnect_sse(client, "GET", "/chat/web/bot-stream") as source:
                    ends = [
                        json.loads(e.data) async for e in source.aiter_sse() if e.event == "end"
                    ]
            await wait_until(
                lambda: (
                    [m.content for m in discord.replies_to(asked)]
                    == ["[echo] You said: hello discord"]
                )
            )
            await wait_until(
                lambda: any("You said: hello slack" in m.text for m in slack.bot_messages())
            )
            code = await process.stop()
    assert ends[0]["content"] == "[echo] You said: hello web"
    for name in ("Web chat:", "Discord bot:", "Slack bot:"):
        assert name in output
    # Nothing left to add.
    assert "Discord:" not in output
    assert "Slack:" not in output
    assert discord.token not in process.output
    assert code == 0


def mention(slack: FakeSlackAPI, text: str, ts: str = "1690000000.000001") -> dict[str, object]:
    """An ``app_mention`` Events API payload from the user ``U0USER`` in ``C0GENERAL``."""
    return {
        "team_id": slack.team_id,
        "event": {
            "type": "app_mention",
            "user": "U0USER",
            "text": f"<@{slack.bot_user_id}> {text}",
            "channel": "C0GENERAL",
            "ts": ts,
            "event_ts": ts,
        },
        "event_id": f"Ev{ts}",
        "type": "event_callback",
    }


# --------------------------------------------------------------------------- in-process


async def wait_until(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    """Check ``predicate`` every 10 ms until it holds (at most ``limit`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def test_shutdown_mid_reply_leaves_every_message_final_on_web_and_slack() -> None:
    """One engine for both: a web reply and a Slack reply stream; a stop ends both cleanly."""
    async with FakeSlackAPI() as slack:
        values: dict[str, object] = {
            "web_port": 0,
            "slack_bot_token": slack.bot_token,
            "slack_app_token": slack.app_token,
            "slack_api_url": slack.api_url,
            "slack_streaming": "update",
            "slack_edit_interval": 0.05,
        }
        web = WebFrontEnd(load_settings(WebSettings, **values))
        frontends = [web, SlackFrontEnd(load_settings(SlackSettings, **values))]
        out = StringIO()
        runner = Runner(
            load_settings(**values), frontends, env={}, options={"delay": 0.05}, out=out
        )
        task = asyncio.create_task(runner.run(install_signal_handlers=False))
        await asyncio.wait_for(runner.started.wait(), 30)
        await slack.wait_connected()
        assert web.url is not None
        prompt = " ".join(["again"] * 200)
        await slack.send_envelope("events_api", mention(slack, prompt))
        async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:
            await client.post("/chat/both/send-message", json={"text": prompt})
            events: list[tuple[str, str]] = []
            async with aconnect_sse(client, "GET", "/chat/both/bot-stream") as source:
                async for event in source.aiter_sse():
                    events.append((event.event, event.data))
                    if event.event == "delta" and len(events) == 3:
                        await wait_until(
                            lambda: any("again" in m.text for m in slack.bot_messages())
                        )
                        runner.request_stop()
        code = await asyncio.wait_for(task, 30)
        slack_texts = [m.text for m in slack.bot_messages()]
        engine = runner.engine
        keys = [ConversationKey("web", "both")]
        stored = engine.store.keys()  # type: ignore[attr-defined]
        keys += [k for k in stored if k.platform == "slack"]
        conversations = [await engine.store.get(k) for k in keys]

    assert code == 0
    assert json.loads(events[-1][1])["status"] == "cancelled"
    assert len(conversations) >= 2
    for conversation in conversations:
        assert conversation is not None
        assert conversation.messages
        assert all(m.status in FINAL for m in conversation.messages), conversation.key
    assert slack_texts
    assert not any("▌" in text for text in slack_texts), slack_texts
    assert any("stopped" in text for text in slack_texts), slack_texts
    assert "Slack bot:" in out.getvalue()


async def test_a_port_in_use_is_reported_with_the_variable_to_change() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        out = StringIO()
        web = WebFrontEnd(load_settings(WebSettings, web_port=port))
        runner = Runner(load_settings(), [web], env={}, out=out)
        code = await runner.run(install_signal_handlers=False)
    assert code == 2
    assert "WEB_PORT" in out.getvalue()


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """settle_heap changes the collector of the whole process: put it back for the next test."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
@pytest.mark.parametrize("tune_gc", [True, False])
async def test_the_serving_process_settles_its_heap_once_started(tune_gc: bool) -> None:
    # run() (the process's own runner) freezes what start-up made and collects less often;
    # a Runner embedded elsewhere (tests, a host application) leaves the collector alone.
    gc.unfreeze()
    before = gc.get_threshold()
    web = WebFrontEnd(load_settings(WebSettings, web_port=0))
    runner = Runner(load_settings(), [web], env={}, out=StringIO(), tune_gc=tune_gc)
    task = asyncio.create_task(runner.run(install_signal_handlers=False))
    await asyncio.wait_for(runner.started.wait(), 30)
    frozen, thresholds = gc.get_freeze_count(), gc.get_threshold()
    assert web.url is not None
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:
        await client.post("/chat/gc/send-message", json={"text": "still answers"})
        async with aconnect_sse(client, "GET", "/chat/gc/bot-stream") as source:
            end = [json.loads(e.data) async for e in source.aiter_sse() if e.event == "end"]
    runner.request_stop()
    assert await asyncio.wait_for(task, 30) == 0
    assert end[0]["content"] == "[echo] You said: still answers"
    if tune_gc:
        assert frozen > 0
        assert thresholds == SERVING_GC_THRESHOLDS
    else:
        assert frozen == 0
        assert thresholds == before


async def test_a_configured_key_is_suggested_instead_of_echo() -> None:
    out = StringIO()
    runner = Runner(load_settings(), [], env={"GROQ_API_KEY": "gsk_not_a_real_key"}, out=out)
    hints = "\n".join(text for _, text in runner.hints())
    assert "LLMCONNECT_MODEL=groq" in hints
    assert "gsk_not_a_real_key" not in hints


async def test_a_default_model_without_its_key_names_the_key() -> None:
    runner = Runner(load_settings(llmconnect_model="groq"), [], env={}, out=StringIO())
    hints = dict(runner.hints())
    assert hints["the model"] == "GROQ_API_KEY (groq/llama-3.3-70b-versatile needs it)"


@pytest.fixture
def restore_discord_endpoints() -> Iterator[None]:
    """The Discord bot points discord.py's class-level endpoints at the stand-in; undo that."""
    base = discord_lib.http.Route.BASE
    gateway = discord_lib.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord_lib.http.Route.BASE = base
    discord_lib.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway


@pytest.mark.usefixtures("restore_discord_endpoints")
async def test_a_rejected_discord_token_stops_run_and_says_why() -> None:
    async with FakeDiscordServer() as discord:
        values: dict[str, object] = {
            "web_port": 0,
            "discord_token": "not-the-right-token",
            "discord_api_url": discord.api_url,
            "discord_gateway_url": discord.gateway_url,
        }
        frontends = [
            WebFrontEnd(load_settings(WebSettings, **values)),
            DiscordFrontEnd(load_settings(DiscordSettings, **values)),
        ]
        out = StringIO()
        runner = Runner(load_settings(**values), frontends, env={}, out=out)
        code = await runner.run(install_signal_handlers=False)
    assert code == 1
    assert "Discord bot stopped: Discord rejected DISCORD_TOKEN" in out.getvalue()
    assert "not-the-right-token" not in out.getvalue()
    assert "Stopped." in out.getvalue()


async def test_the_mcp_servers_start_with_the_runner_and_close_with_it() -> None:
    web = WebFrontEnd(load_settings(WebSettings, web_port=0))
    runner = Runner(
        load_settings(mcp_servers=stdio_servers("files")), [web], env={}, out=StringIO()
    )
    task = asyncio.create_task(runner.run(install_signal_handlers=False))
    await asyncio.wait_for(runner.started.wait(), 30)
    manager = runner.engine.mcp
    await asyncio.wait_for(manager.wait_ready(), 30)
    state = manager.states["files"]
    assert state.status is ServerStatus.READY
    assert len(state.tools) == 6
    runner.request_stop()
    assert await asyncio.wait_for(task, 30) == 0
    assert state.status is ServerStatus.CLOSED
    assert manager.tools(["files"]) == []
