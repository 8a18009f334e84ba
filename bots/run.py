"""``llmconnect run``: every configured front end in one process, sharing one engine.

Why one process and one engine: a conversation's model, history and the "one generation at a time"
rule live in :class:`~core.engine.ChatEngine`; the front ends only translate events. The web chat
always runs (it is the embedded default: with nothing configured, ``llmconnect run`` is a local
chat on the offline ``echo`` model); Discord starts when ``DISCORD_TOKEN`` is set, Slack when
``SLACK_BOT_TOKEN`` and ``SLACK_APP_TOKEN`` (Socket Mode) or ``SLACK_SIGNING_SECRET`` (HTTP) are.

Shutdown (SIGINT/SIGTERM, or :meth:`Runner.request_stop`): stop taking requests, stop the
generations that run, let every front end write each reply's final text (no message is left with
a streaming marker; a stopped one says so), then close. A second signal stops waiting for open
web connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import uvicorn

from core.engine import ChatEngine
from core.settings import Settings
from llmconnect import PROVIDERS, LLMError, aclose_shared_clients, provider_status

from .web import LOOPBACK_HOSTS, WebChat, create_app, is_loopback

__all__ = ["FrontEnd", "RunError", "Runner", "run"]

log = logging.getLogger("llmconnect.run")

#: Seconds the front ends get to write their final edits at shutdown.
CLOSE_TIMEOUT = 10.0


class RunError(Exception):
    """A front end could not start; the message says why and what to change."""


@dataclass
class FrontEnd:
    """One running front end: what to print, the task that serves it, how to close it."""

    name: str
    where: str
    task: asyncio.Task[Any] | None = None
    #: Stop taking requests, end its replies on their final text, disconnect.
    close: Callable[[], Awaitable[None]] | None = None
    notes: list[str] = field(default_factory=list)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGINT/SIGTERM (uvicorn would
    re-raise the signal after its shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise RunError(
            f"The web chat cannot listen on {host}:{port} ({exc.strerror or exc}): set WEB_PORT "
            "(or WEB_HOST) to a free one, or stop the program that uses it."
        ) from None


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        return f"http://127.0.0.1:{port} (listening on every interface)"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def slack_configured(settings: Settings) -> bool:
    return settings.slack_bot_token is not None and (
        settings.slack_app_token is not None or settings.slack_signing_secret is not None
    )


class Runner:
    """Starts the front ends over one engine, waits for a stop, shuts down cleanly."""

    def __init__(
        self,
        settings: Settings,
        *,
        env: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        web: bool = True,
        host: str | None = None,
        port: int | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.settings = settings
        self.engine = ChatEngine(settings, env=env, options=options)
        self.web_enabled = web
        self.host = settings.web_host if host is None else host
        self.port = settings.web_port if port is None else port
        self.out = out if out is not None else sys.stdout
        self.frontends: list[FrontEnd] = []
        self.web_url: str | None = None
        self.web_chat: WebChat | None = None
        self.started = asyncio.Event()
        self._stop = asyncio.Event()
        self._server: _Server | None = None
        self._signals = 0

    # ----------------------------------------------------------------- life cycle

    def request_stop(self) -> None:
        """Begin the graceful shutdown (a second call stops waiting for web connections)."""
        self._signals += 1
        if self._signals > 1 and self._server is not None:
            self._server.force_exit = True
        self._stop.set()

    async def run(self, *, install_signal_handlers: bool = True) -> int:
        """Start, serve until stopped, shut down; the exit code."""
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        if install_signal_handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.request_stop)
                    handled.append(sig)
        code = 0
        try:
            try:
                await self.start()
            except RunError as exc:
                self.out.write(f"{exc}\n")
                code = 2
            except Exception as exc:
                log.debug("start-up failed", exc_info=exc)
                self.out.write(f"Could not start: {_describe(exc)}\n")
                code = 1
            else:
                code = await self._wait()
            await self.shutdown()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
        return code

    async def start(self) -> None:
        """Start every configured front end and say what runs where."""
        s = self.settings
        if self.web_enabled:
            self.frontends.append(await self._start_web())
        if s.discord_token is not None:
            self.frontends.append(await self._start_discord())
        if slack_configured(s):
            self.frontends.append(await self._start_slack())
        if not self.frontends:
            raise RunError("Nothing to run: the web chat is off and no bot is configured.")
        self.out.write(f"LLMConnect is running, default model {self.engine.default_model}:\n")
        for fe in self.frontends:
            self.out.write(f"  {fe.name + ':':<14}{fe.where}\n")
            for note in fe.notes:
                self.out.write(f"  {'':<14}{note}\n")
        hints = self.hints()
        if hints:
            self.out.write("To add more, set in .env or the environment:\n")
            for label, text in hints:
                self.out.write(f"  {label + ':':<14}{text}\n")
        self.out.write("`llmconnect doctor` checks the configuration. Ctrl-C stops.\n")
        self.out.flush()
        self.started.set()

    def hints(self) -> list[tuple[str, str]]:
        """What the operator could add, as (what, which variables): a real model, the platforms
        not configured."""
        s, hints = self.settings, []
        if self.engine.default_model.startswith("echo/"):
            keyed = [
                r for r in provider_status(self.engine.env) if r.has_key and r.spec.name != "echo"
            ]
            if keyed:
                names = ", ".join(r.spec.name for r in keyed)
                hints.append(
                    (
                        "a real model",
                        f"LLMCONNECT_MODEL={keyed[0].spec.name} (keys set: {names}; or pick a "
                        "model in the web chat)",
                    )
                )
            else:
                # The providers the table suggests to a newcomer, first the one to try.
                first, *others = sorted(
                    (spec for spec in PROVIDERS.values() if spec.suggested),
                    key=lambda spec: spec.suggested,
                )
                keys = ", ".join(spec.key_vars[0] for spec in others)
                hints.append(
                    (
                        "a real model",
                        f"a provider key, e.g. {first.key_vars[0]} (others: {keys}, ... in "
                        f".env.example), and LLMCONNECT_MODEL={first.name}",
                    )
                )
        else:
            provider = self.engine.default_model.split("/", 1)[0]
            for r in provider_status(self.engine.env):
                if r.spec.name == provider and not r.configured:
                    hints.append(
                        ("the model", f"{r.key_var} ({self.engine.default_model} needs it)")
                    )
        if s.discord_token is None:
            hints.append(("Discord", "DISCORD_TOKEN"))
        if not slack_configured(s):
            hints.append(
                (
                    "Slack",
                    "SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET "
                    "(HTTP)",
                )
            )
        return hints

    async def _wait(self) -> int:
        """Until a stop is requested (0) or a front end ends on its own (1)."""
        stop = asyncio.create_task(self._stop.wait())
        tasks = {fe.task: fe for fe in self.frontends if fe.task is not None}
        try:
            done, _ = await asyncio.wait({stop, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if stop in done:
            return 0
        for task in done:
            fe = tasks[task]
            reason = _failure(fe.name, task)
            self.out.write(f"{fe.name} stopped: {reason}\n")
        return 1

    async def shutdown(self) -> None:
        """No new requests; end every generation; let each front end write final texts; close."""
        self.out.write("Stopping: no new requests; ending the replies that run...\n")
        self.out.flush()
        if self.web_chat is not None:
            self.web_chat.closing = True
        if self._server is not None:
            self._server.should_exit = True
        closes = [fe.close() for fe in self.frontends if fe.close is not None]
        results = await asyncio.gather(
            *(asyncio.wait_for(c, CLOSE_TIMEOUT) for c in closes), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("a front end did not close cleanly: %r", result)
        # Every generation ends in a final state; open web streams then send their end event.
        await self.engine.aclose()
        tasks = [fe.task for fe in self.frontends if fe.task is not None and not fe.task.done()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await aclose_shared_clients()
        self.out.write("Stopped.\n")
        self.out.flush()

    # ----------------------------------------------------------------- front ends

    async def _start_web(self) -> FrontEnd:
        s = self.settings
        token = s.web_auth_token.get_secret_value() if s.web_auth_token else None
        loopback = is_loopback(self.host)
        app = create_app(
            self.engine,
            auth_token=s.web_auth_token if token else None,
            allowed_hosts=LOOPBACK_HOSTS if loopback else None,
        )
        self.web_chat = app.state.web
        sock = _listen(self.host, self.port)
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
            timeout_graceful_shutdown=int(CLOSE_TIMEOUT),
            proxy_headers=bool(proxies),
            forwarded_allow_ips=list(proxies) or None,
        )
        server = self._server = _Server(config)
        # The socket already listens, so the URL works at once: connections wait in its backlog
        # until uvicorn accepts them. Should uvicorn fail, its task ends and ``_wait`` says so.
        task = asyncio.create_task(server.serve(sockets=[sock]), name="web chat")
        self.web_url = _url(self.host, port).split(" ")[0]
        fe = FrontEnd("Web chat", _url(self.host, port), task)
        if token:
            fe.notes.append("Sign in with WEB_AUTH_TOKEN.")
        elif not loopback:
            fe.notes.append(
                f"Warning: WEB_HOST={self.host} without WEB_AUTH_TOKEN: anyone who reaches "
                "this port can use the chat. Set WEB_AUTH_TOKEN."
            )
        return fe

    async def _start_discord(self) -> FrontEnd:
        """Hook: the Discord bot over the shared engine (``bots.discord.DiscordBot``)."""
        from bots.discord import DiscordBot

        token = self.settings.discord_token
        assert token is not None
        bot = DiscordBot(self.settings, self.engine, out=self.out)
        task = asyncio.create_task(bot.start(token.get_secret_value()), name="discord")
        return FrontEnd("Discord bot", "connecting with DISCORD_TOKEN", task, close=bot.close)

    async def _start_slack(self) -> FrontEnd:
        """Hook: the Slack bot over the shared engine (``bots.slack.SlackBot``): Socket Mode when
        ``SLACK_APP_TOKEN`` is set, else HTTP (``SLACK_SIGNING_SECRET``) on ``SLACK_HTTP_HOST``
        / ``SLACK_HTTP_PORT``."""
        from bots.slack import EVENTS_PATH, SlackBot, SlackConfigError

        try:
            bot = SlackBot(self.settings, self.engine)
            await bot.start()
            if self.settings.slack_app_token is not None:
                await bot.start_socket_mode()
                where = "connected over Socket Mode"
            else:
                host = self.settings.slack_http_host
                port = await bot.serve_http(host, self.settings.slack_http_port)
                where = f"events at http://{host}:{port}{EVENTS_PATH}"
        except SlackConfigError as exc:
            raise RunError(f"Slack: {exc}") from None
        except Exception as exc:
            raise RunError(f"Slack did not start: {_describe(exc)}") from None
        return FrontEnd("Slack bot", where, close=bot.aclose)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _failure(name: str, task: asyncio.Task[Any]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    if exc is None:
        return "ended"
    if type(exc).__name__ == "LoginFailure":
        return "Discord rejected DISCORD_TOKEN (check the bot token)."
    if isinstance(exc, SystemExit):
        return "could not start"
    log.debug("%s failed", name, exc_info=exc)
    return _describe(exc)


async def run(
    settings: Settings,
    *,
    web: bool = True,
    host: str | None = None,
    port: int | None = None,
    out: TextIO | None = None,
) -> int:
    """The ``llmconnect run`` entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        runner = Runner(settings, web=web, host=host, port=port, out=out)
    except LLMError as exc:  # LLMCONNECT_MODEL names an unknown provider
        (out or sys.stdout).write(f"{exc}\n")
        return 2
    return await runner.run()
