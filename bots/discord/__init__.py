"""The Discord front end (discord.py 2.x): mentions and slash commands, answers streamed by edits.

Run it with ``llmconnect discord`` (``DISCORD_TOKEN``). Absolute imports only: this package is
``bots.discord`` and must never shadow the ``discord`` library.
"""

from __future__ import annotations

from .bot import DiscordBot, configure_endpoints, invite_url
from .rest import NO_MENTIONS, DiscordRest, DiscordRestError
from .run import run_discord
from .sink import MAX_LEN, ChannelSink, InteractionSink

__all__ = [
    "MAX_LEN",
    "NO_MENTIONS",
    "ChannelSink",
    "DiscordBot",
    "DiscordRest",
    "DiscordRestError",
    "InteractionSink",
    "configure_endpoints",
    "invite_url",
    "run_discord",
]
