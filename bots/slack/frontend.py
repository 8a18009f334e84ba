"""The Slack bot as a :class:`~bots.frontend.FrontEnd` (``llmconnect slack``, and ``llmconnect
run`` once its tokens are set): Socket Mode or HTTP.

Importable without slack-bolt (it loads in :meth:`SlackFrontEnd.start`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar, Literal

from bots.frontend import RunError, describe

from .settings import SlackSettings

if TYPE_CHECKING:
    from core.engine import ChatEngine

    from .app import SlackBot

__all__ = ["SlackFrontEnd"]

#: ``auto``: Socket Mode when ``SLACK_APP_TOKEN`` is set, else HTTP (``llmconnect run``);
#: ``socket`` / ``http``: that one (``llmconnect slack`` / ``llmconnect slack --http``).
Mode = Literal["auto", "socket", "http"]


class SlackFrontEnd:
    """Socket Mode with ``SLACK_APP_TOKEN``; else HTTP (``SLACK_SIGNING_SECRET``) on
    ``SLACK_HTTP_HOST`` / ``SLACK_HTTP_PORT``."""

    name = "Slack bot"
    label: ClassVar[str] = "Slack"
    hint: ClassVar[str] = (
        "SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP)"
    )
    settings_class: ClassVar[type[SlackSettings]] = SlackSettings

    @classmethod
    def configured(cls, settings: SlackSettings) -> bool:
        return settings.configured

    def __init__(self, settings: SlackSettings, *, mode: Mode = "auto") -> None:
        self.settings = settings
        self.mode = mode
        self.notes: list[str] = []
        self.bot: SlackBot | None = None
        #: Set by :meth:`aclose`: the bot has no task that could end on its own (bolt's Socket
        #: Mode client reconnects by itself; the HTTP server runs until closed).
        self._closed = asyncio.Event()

    async def start(self, engine: ChatEngine) -> str:
        from .app import EVENTS_PATH, SlackBot, SlackConfigError  # slack-bolt loads here

        s = self.settings
        socket_mode = s.socket_mode if self.mode == "auto" else self.mode == "socket"
        try:
            self.bot = bot = SlackBot(s, engine)
            if socket_mode and s.slack_app_token is None:
                raise RunError(
                    "SLACK_APP_TOKEN is not set: set it for Socket Mode, or run "
                    "`llmconnect slack --http --port N` (needs SLACK_SIGNING_SECRET)."
                )
            await bot.start()
            if socket_mode:
                await bot.start_socket_mode()
                return "connected over Socket Mode"
            host = s.slack_http_host
            port = await bot.serve_http(host, s.slack_http_port)
        except SlackConfigError as exc:
            raise RunError(f"Slack: {exc}") from None
        except RunError:
            raise
        except Exception as exc:
            raise RunError(f"Slack did not start: {describe(exc)}") from None
        return f"listening on http://{host}:{port}, events at http://{host}:{port}{EVENTS_PATH}"

    async def wait(self) -> None:
        await self._closed.wait()

    async def aclose(self, grace: float) -> None:
        """Stop taking requests, end the bot's replies (``grace`` seconds to show their final
        text), close its connections."""
        self._closed.set()
        if self.bot is not None:
            await self.bot.aclose(grace)

    def hurry(self) -> None:
        """Nothing to hurry: the bot's close is bounded by the grace already."""

    async def ready(self) -> tuple[bool, str]:
        if self.bot is None or self._closed.is_set():
            return False, "not started"
        if not await self.bot.connected():
            return False, "Socket Mode connection or HTTP listener down"
        return True, "ok"
