"""The ``llmconnect`` command line: ``run`` (the web chat plus every configured bot),
``doctor`` (checks the configuration), ``chat`` (a terminal chat that streams tokens), ``models``,
and one front end alone: ``discord``, ``slack``, ``web``.

Loads ``.env`` first (python-dotenv), so provider keys set there work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, Literal, TextIO, cast

from dotenv import load_dotenv

from core.settings import Settings, SettingsError, load_settings
from llmconnect import (
    APIClientFactory,
    AsyncAPIClient,
    LLMError,
    aclose_shared_clients,
    list_models,
    provider_status,
)

__all__ = ["main"]

HELP = """Commands: /model <provider/model>  /system <text|clear>  /reset  /help  /quit
Ctrl-C stops a reply that is streaming; Ctrl-D (or /quit) leaves."""


class _LineReader:
    """stdin lines delivered to the event loop by a daemon thread (a blocked read never holds
    up exit, unlike ``asyncio.to_thread``)."""

    def __init__(self, stream: TextIO) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump() -> None:
            for line in stream:
                loop.call_soon_threadsafe(self._queue.put_nowait, line)
            loop.call_soon_threadsafe(self._queue.put_nowait, None)

        threading.Thread(target=pump, name="stdin", daemon=True).start()

    async def readline(self) -> str | None:
        return await self._queue.get()


def _new_client(settings: Settings, model: str, system: str | None) -> AsyncAPIClient:
    return APIClientFactory.create(
        model=model,
        system=system or None,
        timeouts=settings.timeouts(),
        retry=settings.retry_policy(),
        max_event_bytes=settings.llm_max_event_bytes,
    )


async def _stream_reply(client: AsyncAPIClient, text: str, out: TextIO, err: TextIO) -> bool:
    """Stream one reply to ``out``; False when it failed (the error line went to ``err``)."""
    replies = await client.chat(text, stream=True)
    try:
        async for delta in replies:
            out.write(delta)
            out.flush()
        out.write("\n")
        if replies.truncated:
            err.write("[reply cut at the token limit]\n")
    except LLMError as exc:
        out.write("\n")
        err.write(f"⚠️ {exc.user_message}\n")
        return False
    finally:
        await replies.aclose()
        out.flush()
    return True


async def chat(
    settings: Settings,
    *,
    model: str | None,
    system: str | None,
    prompt: str | None,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    model = model or settings.llmconnect_model
    system = system if system is not None else settings.llmconnect_system_prompt
    try:
        client = _new_client(settings, model, system)
    except LLMError as exc:
        err.write(f"{exc}\n")
        return 2
    try:
        if prompt is not None:
            # A script can tell: 1 when the reply failed (its text so far is still printed).
            return 0 if await _stream_reply(client, prompt, out, err) else 1
        return await _repl(settings, client, stdin, out, err)
    finally:
        await aclose_shared_clients()


async def _repl(
    settings: Settings, client: AsyncAPIClient, stdin: TextIO, out: TextIO, err: TextIO
) -> int:
    err.write(f"llmconnect chat — model {client.model}. {HELP}\n")
    reader = _LineReader(stdin)
    loop = asyncio.get_running_loop()
    reply: asyncio.Task[bool] | None = None
    main = asyncio.current_task()

    def on_sigint() -> None:
        if reply is not None and not reply.done():
            reply.cancel()
        elif main is not None:
            main.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        while True:
            err.write("you> ")
            err.flush()
            line = await reader.readline()
            if line is None:
                err.write("\n")
                return 0
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                command, _, arg = text[1:].partition(" ")
                if command in ("quit", "exit"):
                    return 0
                client = _command(settings, client, command, arg.strip(), err)
                continue
            reply = asyncio.create_task(_stream_reply(client, text, out, err))
            try:
                await reply
            except asyncio.CancelledError:
                if main is not None and main.cancelling():
                    raise
                out.write("\n")
                err.write("[stopped]\n")
    except asyncio.CancelledError:
        err.write("\n")
        return 130
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


def _command(
    settings: Settings, client: AsyncAPIClient, command: str, arg: str, err: TextIO
) -> AsyncAPIClient:
    if command == "model":
        if not arg:
            err.write(f"model: {client.model}\n")
            return client
        try:
            new = _new_client(settings, arg, client.system)
        except LLMError as exc:
            err.write(f"⚠️ {exc}\n")
            return client
        new.messages = client.messages
        err.write(f"model: {new.model}\n")
        return new
    if command == "system":
        client.system = None if arg in ("", "clear") else arg
        err.write(f"system prompt: {client.system or '(none)'}\n")
    elif command == "reset":
        client.reset()
        err.write("history cleared\n")
    else:
        err.write(HELP + "\n")
    return client


async def models(provider: str | None, *, online: bool, out: TextIO = sys.stdout) -> int:
    rows = provider_status()
    if provider:
        rows = [r for r in rows if r.spec.name == provider.lower()]
        if not rows:
            out.write(f"unknown provider {provider!r}\n")
            return 2
    out.write(f"{'provider':<12} {'configured':<11} {'key variable':<18} default model\n")
    for r in rows:
        status = "yes" if r.configured else "no"
        out.write(
            f"{r.spec.name:<12} {status:<11} {r.key_var or '-':<18} "
            f"{r.spec.name}/{r.spec.default_model or '<model>'}\n"
        )
    try:
        for r in rows:
            if not (online and r.configured and r.spec.protocol != "echo"):
                continue
            try:
                names = await list_models(r.spec.name)
            except LLMError as exc:
                out.write(f"\n{r.spec.name}: {exc.user_message}\n")
                continue
            out.write(f"\n{r.spec.name}: {len(names)} models\n")
            for name in names:
                out.write(f"  {r.spec.name}/{name}\n")
    finally:
        await aclose_shared_clients()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmconnect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_chat = sub.add_parser(
        "chat",
        help="chat in the terminal, tokens streamed as they arrive",
        description="Chat in the terminal, tokens streamed as they arrive. With a PROMPT: answer "
        "it and exit with status 0, or 1 when the reply failed (the error on stderr), or 2 when "
        "the model is not configured.",
    )
    p_chat.add_argument(
        "prompt",
        nargs="?",
        help="answer this one prompt and exit (status 1 if the reply fails)",
    )
    p_chat.add_argument("--model", "-m", help="provider/model, or a bare provider name")
    p_chat.add_argument("--system", "-s", help="system prompt")
    p_models = sub.add_parser("models", help="list providers, their configuration and models")
    p_models.add_argument("--provider", "-p", help="only this provider")
    p_models.add_argument(
        "--offline", action="store_true", help="do not ask configured providers for their models"
    )
    sub.add_parser("discord", help="run the Discord bot (DISCORD_TOKEN)")
    p_slack = sub.add_parser(
        "slack",
        help="run the Slack bot: Socket Mode (SLACK_APP_TOKEN), or --http (SLACK_SIGNING_SECRET)",
    )
    p_slack.add_argument(
        "--http", action="store_true", help="serve Slack's requests at /slack/events over HTTP"
    )
    p_slack.add_argument("--port", type=int, help="HTTP port (default SLACK_HTTP_PORT, 3000)")
    p_slack.add_argument("--host", help="HTTP address (default SLACK_HTTP_HOST, 0.0.0.0)")
    p_web = sub.add_parser("web", help="run the web chat alone (no bot)")
    p_web.add_argument("--host", help="web chat address (default WEB_HOST, 127.0.0.1)")
    p_web.add_argument("--port", type=int, help="web chat port (default WEB_PORT, 8000)")
    p_run = sub.add_parser(
        "run",
        help="run the web chat and every configured bot (Discord, Slack) on one shared engine",
    )
    p_run.add_argument("--host", help="web chat address (default WEB_HOST, 127.0.0.1)")
    p_run.add_argument("--port", type=int, help="web chat port (default WEB_PORT, 8000)")
    p_run.add_argument("--no-web", action="store_true", help="do not start the web chat")
    p_doctor = sub.add_parser(
        "doctor", help="check the configuration: what is set, what is missing, malformed tokens"
    )
    p_doctor.add_argument(
        "--online", action="store_true", help="also ask each provider and platform in use"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_dotenv()
    if args.command == "doctor":  # before loading settings: it reports invalid ones itself
        from bots.doctor import doctor

        return asyncio.run(doctor(online=args.online))
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    coro: Coroutine[Any, Any, int]
    if args.command in ("run", "discord", "slack", "web"):
        try:
            coro = _serve(args, settings)
        except SettingsError as exc:
            print(exc, file=sys.stderr)
            return 2
    elif args.command == "chat":
        coro = chat(settings, model=args.model, system=args.system, prompt=args.prompt)
    else:
        coro = models(args.provider, online=not args.offline)
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace, settings: Settings) -> Coroutine[Any, Any, int]:
    """``run`` (every configured front end) or one front end alone, on the runner; a wrong
    setting raises :class:`SettingsError` before anything starts."""
    # Imported here: only these commands need them (the platforms' libraries load on start).
    from bots.frontend import FrontEnd, RunSettings
    from bots.run import configured, load_all, run

    if args.command == "run":
        from bots.registry import FRONT_ENDS
        from bots.web.frontend import WebFrontEnd

        classes = [cls for cls in FRONT_ENDS if not (args.no_web and cls is WebFrontEnd)]
        problems: list[str] = []  # every wrong value at once, the runner's and the front ends'
        run_settings = RunSettings.model_construct()  # replaced below unless a value is wrong
        try:
            run_settings = cast(RunSettings, load_all([RunSettings])[0])
        except SettingsError as exc:
            problems += exc.problems
        try:
            frontends, hints = configured(classes, web_host=args.host, web_port=args.port)
        except SettingsError as exc:
            raise SettingsError(problems + exc.problems) from None
        if problems:
            raise SettingsError(problems)
        return run(
            settings,
            frontends,
            grace=run_settings.shutdown_grace,
            hints=hints,
            metrics_host=run_settings.metrics_host,
            metrics_port=run_settings.metrics_port,
        )
    frontend: FrontEnd
    if args.command == "discord":
        from bots.discord.frontend import DiscordFrontEnd
        from bots.discord.settings import DiscordSettings

        loaded = load_all([RunSettings, DiscordSettings])
        frontend = DiscordFrontEnd(cast(DiscordSettings, loaded[1]))
    elif args.command == "slack":
        from bots.slack.frontend import SlackFrontEnd
        from bots.slack.settings import SlackSettings

        loaded = load_all(
            [RunSettings, SlackSettings], slack_http_host=args.host, slack_http_port=args.port
        )
        mode: Literal["http", "socket"] = "http" if args.http else "socket"
        frontend = SlackFrontEnd(cast(SlackSettings, loaded[1]), mode=mode)
    else:
        from bots.web.frontend import WebFrontEnd
        from bots.web.settings import WebSettings

        loaded = load_all([RunSettings, WebSettings], web_host=args.host, web_port=args.port)
        frontend = WebFrontEnd(cast(WebSettings, loaded[1]))
    run_settings = cast(RunSettings, loaded[0])
    # One front end alone talks on standard error (the Discord invite URL stays on stdout).
    return run(
        settings,
        [frontend],
        grace=run_settings.shutdown_grace,
        brief=True,
        out=sys.stderr,
        metrics_host=run_settings.metrics_host,
        metrics_port=run_settings.metrics_port,
    )


if __name__ == "__main__":
    sys.exit(main())
