"""The front ends ``llmconnect run`` knows, in the order its banner lists them.

Adding one: a package in ``bots/`` whose class follows :class:`bots.frontend.FrontEndClass`, and
one line here. Each class says itself whether it is configured and what would turn it on; its
module must import without its platform's library (``llmconnect doctor`` reads this list).
"""

from __future__ import annotations

from pydantic_settings import BaseSettings

from core.settings import Settings

from .discord.frontend import DiscordFrontEnd
from .frontend import FrontEndClass, RunSettings
from .slack.frontend import SlackFrontEnd
from .web.frontend import WebFrontEnd

__all__ = ["FRONT_ENDS", "settings_classes"]

FRONT_ENDS: tuple[FrontEndClass, ...] = (WebFrontEnd, DiscordFrontEnd, SlackFrontEnd)


def settings_classes() -> list[type[BaseSettings]]:
    """Every settings class a process may read: the core's, the runner's, each front end's."""
    return [Settings, RunSettings, *(fe.settings_class for fe in FRONT_ENDS)]
