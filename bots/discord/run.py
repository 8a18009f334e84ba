"""``llmconnect discord``: run the bot until interrupted."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TextIO

import discord

from core.engine import ChatEngine
from core.settings import Settings
from llmconnect import LLMError, aclose_shared_clients

from .bot import DiscordBot

__all__ = ["run_discord", "serve"]


async def serve(settings: Settings, *, out: TextIO | None = None) -> None:
    """Connect with ``DISCORD_TOKEN`` and serve until the connection ends or is cancelled."""
    if settings.discord_token is None:
        raise ValueError("DISCORD_TOKEN is not set")
    engine = ChatEngine(settings)
    bot = DiscordBot(settings, engine, out=out)
    try:
        async with bot:
            await bot.start(settings.discord_token.get_secret_value())
    finally:
        await engine.aclose()
        await aclose_shared_clients()


def run_discord(settings: Settings, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """The CLI entry: exit code 0 on a clean stop, 2 on a configuration problem."""
    token = settings.discord_token
    if token is None or not token.get_secret_value().strip():
        err.write(
            "DISCORD_TOKEN is not set: create a bot at https://discord.com/developers/applications "
            "and put its token in .env (see README, Discord).\n"
        )
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(settings, out=out))
    except KeyboardInterrupt:
        return 130
    except discord.LoginFailure:
        err.write("Discord rejected DISCORD_TOKEN (401): check the bot token.\n")
        return 2
    except LLMError as exc:
        err.write(f"{exc}\n")
        return 2
    return 0
