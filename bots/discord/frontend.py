"""The Discord bot as a :class:`~bots.frontend.FrontEnd` (``llmconnect discord``, and
``llmconnect run`` once ``DISCORD_TOKEN`` is set).

Importable without discord.py (it loads in :meth:`DiscordFrontEnd.start`).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, ClassVar, TextIO

from bots.frontend import RunError

from .settings import DiscordSettings

if TYPE_CHECKING:
    from core.engine import ChatEngine

    from .bot import DiscordBot

__all__ = ["DiscordFrontEnd"]


class DiscordFrontEnd:
    """Connects with ``DISCORD_TOKEN``; the invite URL is printed once Discord accepted it."""

    name = "Discord bot"
    label: ClassVar[str] = "Discord"
    hint: ClassVar[str] = "DISCORD_TOKEN"
    settings_class: ClassVar[type[DiscordSettings]] = DiscordSettings

    @classmethod
    def configured(cls, settings: DiscordSettings) -> bool:
        return settings.configured

    def __init__(self, settings: DiscordSettings, *, out: TextIO | None = None) -> None:
        self.settings = settings
        #: Where the invite URL goes (standard output: a script can read it).
        self.out = out if out is not None else sys.stdout
        self.notes: list[str] = []
        self.bot: DiscordBot | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, engine: ChatEngine) -> str:
        token = self.settings.discord_token
        if token is None or not token.get_secret_value().strip():
            raise RunError(
                "DISCORD_TOKEN is not set: create a bot at "
                "https://discord.com/developers/applications and put its token in .env (see "
                "README, Discord)."
            )
        from .bot import DiscordBot  # imported here: discord.py loads slowly

        self.bot = DiscordBot(self.settings, engine, out=self.out)
        self._task = asyncio.create_task(
            self._serve(self.bot, token.get_secret_value()), name="discord"
        )
        return "connecting with DISCORD_TOKEN"

    @staticmethod
    async def _serve(bot: DiscordBot, token: str) -> None:
        import discord

        try:
            await bot.start(token)
        except discord.LoginFailure:
            raise RunError("Discord rejected DISCORD_TOKEN (check the bot token).") from None

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    async def aclose(self, grace: float) -> None:
        """End the bot's replies (``grace`` seconds to show their final text), disconnect."""
        if self.bot is None:
            return
        self.bot.close_grace = grace
        await self.bot.close()

    def hurry(self) -> None:
        """Nothing to hurry: the bot's close is bounded by the grace already."""

    async def ready(self) -> tuple[bool, str]:
        """Every shard's gateway connection open, and Discord's READY received. (discord.py's
        ``is_ready()`` alone stays true while the gateway is down and it reconnects.)"""
        bot = self.bot
        if bot is None or bot.is_closed():
            return False, "not connected"
        shards = bot.shards
        if not bot.is_ready() or not shards or any(s.is_closed() for s in shards.values()):
            return False, "gateway not connected"
        return True, "ok"
