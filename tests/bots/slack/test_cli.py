"""``llmconnect slack`` as a real process: configuration errors, and HTTP mode end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile

import aiohttp

from bots.slack import EVENTS_PATH
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import CHANNEL, SECRET, SlackClient, wait_for

CLI = [sys.executable, "-m", "bots.console", "slack"]


def cli_env(extra: dict[str, str]) -> dict[str, str]:
    """The test process's environment without any Slack, LLM or provider setting."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "LLM", "DISCORD_"))
        and not k.endswith(("_API_KEY", "_BASE_URL", "_API"))
    }
    return {**keep, **extra}


async def start(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(env),
        cwd=tempfile.gettempdir(),  # no .env there
    )


async def run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await start(*args, env=env)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, err.decode()


async def test_missing_settings_name_the_variable() -> None:
    code, err = await run(env={})
    assert (code, "SLACK_BOT_TOKEN" in err) == (2, True)

    code, err = await run(env={"SLACK_BOT_TOKEN": "xoxb-1"})
    assert (code, "SLACK_APP_TOKEN" in err) == (2, True)

    code, err = await run("--http", "--port", "0", env={"SLACK_BOT_TOKEN": "xoxb-1"})
    assert (code, "SLACK_SIGNING_SECRET" in err) == (2, True)
    assert "xoxb-1" not in err


async def test_http_mode_serves_signed_requests_until_terminated(slack_api: FakeSlackAPI) -> None:
    env = {
        "SLACK_BOT_TOKEN": slack_api.bot_token,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack_api.api_url,
        "LLMCONNECT_MODEL": "echo",
        "SLACK_EDIT_INTERVAL": "0.01",
        "SLACK_HTTP_HOST": "127.0.0.1",  # the flag's default comes from the setting
        "SLACK_HTTP_PORT": "3999",  # the flag wins over the setting
    }
    proc = await start("--http", "--port", "0", env=env)
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert line.startswith("Slack bot listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        assert url.endswith(EVENTS_PATH)
        async with aiohttp.ClientSession() as session:
            await SlackClient(url, session, slack_api).mention("hello from Slack")
        await wait_for(lambda: slack_api.texts(CHANNEL) == ["[echo] You said: hello from Slack"])
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert slack_api.bot_token not in err.decode()
