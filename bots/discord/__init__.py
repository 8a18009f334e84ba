"""The Discord front end (discord.py 2.x): mentions and slash commands, answers streamed by edits.

Run it with ``llmconnect discord`` (``DISCORD_TOKEN``). Absolute imports only: this package is
``bots.discord`` and must never shadow the ``discord`` library.

The names below load on first use (PEP 562): ``bots.discord.settings`` and
``bots.discord.frontend`` are importable without importing discord.py (``llmconnect doctor``, the
front-end registry).
"""

from __future__ import annotations

from bots.lazy import lazy_attributes

__all__ = [
    "MAX_LEN",
    "NO_MENTIONS",
    "ChannelSink",
    "DiscordBot",
    "DiscordFrontEnd",
    "DiscordRest",
    "DiscordRestError",
    "DiscordSettings",
    "InteractionSink",
    "configure_endpoints",
    "invite_url",
]

_WHERE = {
    "DiscordBot": "bot",
    "configure_endpoints": "bot",
    "invite_url": "bot",
    "NO_MENTIONS": "rest",
    "DiscordRest": "rest",
    "DiscordRestError": "rest",
    "MAX_LEN": "sink",
    "ChannelSink": "sink",
    "InteractionSink": "sink",
    "DiscordFrontEnd": "frontend",
    "DiscordSettings": "settings",
}

__getattr__ = lazy_attributes(__name__, _WHERE)
