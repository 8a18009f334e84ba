"""The web chat as a :class:`~bots.frontend.FrontEnd`: FastAPI on uvicorn, over the shared engine.

Importable without FastAPI or uvicorn (they load in :meth:`WebFrontEnd.start`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar

from bots.frontend import RunError

from .settings import LOOPBACK_HOSTS, WebSettings, is_loopback

if TYPE_CHECKING:
    from bots.health import Health
    from core.engine import ChatEngine

    from .app import WebChat
    from .server import Server

__all__ = ["WebFrontEnd"]


class WebFrontEnd:
    """The web chat: always on under ``llmconnect run`` (``--no-web`` leaves it out)."""

    name = "Web chat"
    label: ClassVar[str] = "Web chat"
    hint: ClassVar[str] = ""
    settings_class: ClassVar[type[WebSettings]] = WebSettings

    @classmethod
    def configured(cls, settings: WebSettings) -> bool:
        return True  # it needs nothing: the embedded default

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.notes: list[str] = []
        #: Where to open it, once started (``http://127.0.0.1:8000``).
        self.url: str | None = None
        #: The app's state (its live replies; ``closing`` refuses new prompts).
        self.chat: WebChat | None = None
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        #: What ``/readyz`` checks, set by the runner (every front end and the store); the web
        #: chat serves ``/metrics``, ``/healthz`` and ``/readyz`` on its port.
        self.health: Health | None = None

    async def start(self, engine: ChatEngine) -> str:
        import uvicorn  # imported here: the registry and doctor stay light

        from .app import create_app
        from .server import Server, listen, url_of

        s = self.settings
        token = s.web_auth_token.get_secret_value() if s.web_auth_token else None
        loopback = is_loopback(s.web_host)
        app = create_app(
            engine,
            s,
            auth_token=s.web_auth_token if token else None,
            allowed_hosts=LOOPBACK_HOSTS if loopback else None,
            health=self.health,
        )
        self.chat = app.state.web
        sock = listen(s.web_host, s.web_port)
        port = int(sock.getsockname()[1])
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: any client on this machine
        # could then pose as any address and escape the sign-in throttle. Forwarded headers
        # count only from WEB_TRUSTED_PROXIES.
        proxies = s.web_trusted_proxies
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            proxy_headers=bool(proxies),
            forwarded_allow_ips=list(proxies) or None,
        )
        self._server = Server(config)
        # The socket already listens, so the URL works at once: connections wait in its backlog
        # until uvicorn accepts them. Should uvicorn fail, wait() ends and the runner says so.
        self._task = asyncio.create_task(self._serve(self._server, sock), name="web chat")
        where = url_of(s.web_host, port)
        self.url = where.split(" ")[0]
        if token:
            self.notes.append("Sign in with WEB_AUTH_TOKEN.")
        elif not loopback:
            self.notes.append(
                f"Warning: WEB_HOST={s.web_host} without WEB_AUTH_TOKEN: anyone who reaches "
                "this port can use the chat. Set WEB_AUTH_TOKEN."
            )
        return where

    @staticmethod
    async def _serve(server: Server, sock: object) -> None:
        try:
            await server.serve(sockets=[sock])  # type: ignore[list-item]
        except SystemExit:  # uvicorn's way to fail at start-up; it logged why
            raise RunError("the web server could not start") from None

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    async def aclose(self, grace: float) -> None:
        """Refuse new prompts, stop the replies this chat started (each open stream then sends
        its ``end``), and let uvicorn close its connections within ``grace`` seconds."""
        if self.chat is not None:
            self.chat.closing = True
            await self.chat.stop_all()
        if self._server is None or self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = grace  # type: ignore[assignment]
        self._server.should_exit = True
        await asyncio.wait([self._task])

    def hurry(self) -> None:
        if self._server is not None:
            self._server.force_exit = True

    async def ready(self) -> tuple[bool, str]:
        server = self._server
        if server is None or not server.started or server.should_exit:
            return False, "not serving"
        return True, "ok"
