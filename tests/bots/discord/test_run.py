"""``llmconnect discord`` as a real process against the stand-in (echo model, no LLM server)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile

from bots.discord import invite_url

from .conftest import World, wait_for

CLI = [sys.executable, "-m", "bots.console", "discord"]


def cli_env(extra: dict[str, str]) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_BASE_URL", "_API"))
        and not k.startswith(("LLM", "DISCORD"))
    }
    return {**keep, **extra}


async def test_without_a_token_it_names_the_variable() -> None:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env({}),
        cwd=tempfile.gettempdir(),
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"DISCORD_TOKEN" in err


async def test_the_cli_serves_mentions_until_interrupted(world: World) -> None:
    server = world.server
    env = cli_env(
        {
            "DISCORD_TOKEN": server.token,
            "DISCORD_API_URL": server.api_url,
            "DISCORD_GATEWAY_URL": server.gateway_url,
            "DISCORD_EDIT_INTERVAL": "0.05",
            "LLMCONNECT_MODEL": "echo",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.decode().strip() == f"Invite the bot with: {invite_url(server.application_id)}"
        await server.wait_ready(tries=3000)
        prompt = await server.send_message(world.general, world.alice, "hello there")
        await wait_for(
            lambda: (
                [m.content for m in server.replies_to(prompt)] == ["[echo] You said: hello there"]
            ),
            tries=3000,
        )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode in (0, 130)
    assert server.token.encode() not in out + err
    assert b"Traceback" not in err


async def test_a_rejected_token_exits_2_and_says_why(world: World) -> None:
    """The only front end cannot run with this configuration: exit code 2, as a missing one."""
    server = world.server
    env = cli_env(
        {
            "DISCORD_TOKEN": "not-the-right-token",
            "DISCORD_API_URL": server.api_url,
            "DISCORD_GATEWAY_URL": server.gateway_url,
        }
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"Discord rejected DISCORD_TOKEN" in err
    assert b"not-the-right-token" not in out + err
    assert b"Traceback" not in err
