"""The ``llmconnect`` command line: ``run`` (the web chat plus every configured bot),
``doctor`` (checks the configuration), ``chat`` (a terminal chat that streams tokens; with
``--tools`` the model may call the configured MCP servers' tools), ``models``, and one front end
alone: ``discord``, ``slack``, ``web``.

Loads ``.env`` first (python-dotenv), so provider keys set there work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

from dotenv import load_dotenv

from core.settings import Settings, SettingsError, load_settings
from llmconnect import (
    TEXT,
    APIClientFactory,
    AsyncAPIClient,
    LLMError,
    aclose_shared_clients,
    list_models,
    provider_status,
    supports_tools,
)

if TYPE_CHECKING:
    from core.engine import ChatEngine
    from core.mcp import ToolSpec

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
        self._ended = False

    async def readline(self) -> str | None:
        """The next line; ``None`` at the end of input (and for ever after)."""
        if self._ended:
            return None
        line = await self._queue.get()
        self._ended = line is None
        return line


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
    tools: str | None = None,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """``tools``: ``None`` (no tools), ``"*"`` (every configured MCP server) or a
    comma-separated list of server names."""
    if tools is not None:
        return await _tool_chat(
            settings,
            tools,
            model=model,
            system=system,
            prompt=prompt,
            stdin=stdin,
            out=out,
            err=err,
        )
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
        holder = [client]

        async def ask(text: str) -> bool:
            return await _stream_reply(holder[0], text, out, err)

        async def command(name: str, arg: str) -> None:
            holder[0] = _command(settings, holder[0], name, arg, err)

        err.write(f"llmconnect chat — model {client.model}. {HELP}\n")
        return await _repl(_LineReader(stdin), ask, command, out, err)
    finally:
        await aclose_shared_clients()


async def _repl(
    reader: _LineReader,
    ask: Callable[[str], Coroutine[Any, Any, bool]],
    command: Callable[[str, str], Awaitable[None]],
    out: TextIO,
    err: TextIO,
) -> int:
    """Read prompts and ``/commands`` until the end of input or ``/quit``; Ctrl-C stops the
    reply that is streaming (it cancels ``ask``), else leaves."""
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
                name, _, arg = text[1:].partition(" ")
                if name in ("quit", "exit"):
                    return 0
                await command(name, arg.strip())
                continue
            reply = asyncio.create_task(ask(text))
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


# ----------------------------------------------------------------------------- chat --tools

TOOLS_HELP = """Commands: /model <provider/model>  /system <text|clear>  /reset  /tools  /help  /quit
Ctrl-C stops a reply (and a tool call that runs); Ctrl-D (or /quit) leaves."""
#: The conversation of the terminal chat in the engine's (in-memory) store.
CONSOLE_KEY_PLATFORM = "console"


def _chosen_servers(configured: Sequence[str], tools: str) -> list[str]:
    """The servers ``--tools`` names (``*``: all configured); :class:`SettingsError` for a name
    that is not configured, or when none is."""
    if not configured:
        raise SettingsError(["--tools: no MCP servers are configured (MCP_SERVERS)"])
    if tools == "*":
        return list(configured)
    names = list(dict.fromkeys(n.strip() for n in tools.split(",") if n.strip()))
    unknown = [n for n in names if n not in configured]
    if unknown or not names:
        raise SettingsError(
            [
                f"--mcp-servers: {', '.join(map(repr, unknown)) or 'no name given'}: "
                f"the configured servers are {', '.join(configured)}"
            ]
        )
    return names


class _TerminalApproval:
    """Asks y/N on the terminal before each call to a ``confirm`` server (one question at a
    time: parallel calls wait their turn). No answer (the end of input) is no."""

    def __init__(self, reader: _LineReader, err: TextIO) -> None:
        self.reader = reader
        self.err = err
        self._one_at_a_time = asyncio.Lock()

    async def __call__(self, spec: ToolSpec, arguments: Mapping[str, Any]) -> bool:
        from core.engine import shown_arguments

        async with self._one_at_a_time:
            self.err.write(f"Allow {spec.name}({shown_arguments(arguments)})? [y/N] ")
            self.err.flush()
            line = await self.reader.readline()
            allowed = line is not None and line.strip().lower() in ("y", "yes")
            self.err.write("" if line is not None else "\n")
            self.err.write(f"{'allowed' if allowed else 'denied'}: {spec.name}\n")
            return allowed


def _server_lines(engine: ChatEngine) -> list[str]:
    """One line per server of the session: its state and tools."""
    lines = []
    for state in engine.mcp.states.values():
        if state.tools:
            what = f"{len(state.tools)} tools: {', '.join(t.tool for t in state.tools)}"
        else:
            what = f"{state.status}" + (f" ({state.problem})" if state.problem else "")
        ask = " — asks before each call" if state.config.confirm else ""
        lines.append(f"🔧 {state.name}: {what}{ask}")
    return lines


async def _model_line(engine: ChatEngine, key: Any) -> str:
    """``model: M``, and whether it takes tools (llmconnect's per-model fact)."""
    model = engine.model_of(await engine.conversation(key))
    if supports_tools(model, engine.env):
        return f"model: {model}"
    return (
        f"model: {model} — it takes no tools, none are offered (LLMCONNECT_TOOL_MODELS adds models)"
    )


async def _tool_chat(
    settings: Settings,
    tools: str,
    *,
    model: str | None,
    system: str | None,
    prompt: str | None,
    stdin: TextIO,
    out: TextIO,
    err: TextIO,
) -> int:
    """The terminal chat on the bots' engine (an in-memory conversation), so its tool loop,
    limits (``TOOL_*``), progress lines and history are the bots' own."""
    from core.conversations import ConversationKey, MemoryStore
    from core.engine import ChatEngine, Refused
    from core.mcp import McpManager

    try:
        configs = settings.mcp_server_configs()
        names = _chosen_servers(list(configs), tools)
    except SettingsError as exc:
        err.write(f"{exc}\n")
        return 2
    # The terminal's user runs the bot: the bots' channel and model lists do not apply.
    settings = settings.model_copy(
        update={
            "mcp_default_servers": names,
            "allowed_channels": [],
            "blocked_channels": [],
            "llmconnect_allowed_models": [],
        }
    )
    reader = _LineReader(stdin)
    mcp = McpManager(
        {n: configs[n] for n in names}, approve=_TerminalApproval(reader, err), errlog=err
    )
    key = ConversationKey(CONSOLE_KEY_PLATFORM, "terminal")
    try:
        engine = ChatEngine(settings, MemoryStore(), mcp=mcp)
    except LLMError as exc:
        err.write(f"{exc}\n")
        return 2
    try:
        try:
            if model:
                await engine.set_model(key, model)
            if system is not None:
                await engine.set_system(key, system)
        except Refused as exc:
            err.write(f"{exc.user_message}\n")
            return 2
        await engine.start()
        await engine.mcp.wait_ready()
        err.write("\n".join(_server_lines(engine)) + "\n")
        if prompt is not None and not supports_tools(
            engine.model_of(await engine.conversation(key)), engine.env
        ):
            err.write(await _model_line(engine, key) + "\n")

        async def ask(text: str) -> bool:
            return await _stream_engine_reply(engine, key, text, out, err)

        async def command(name: str, arg: str) -> None:
            await _tool_command(engine, key, name, arg, err)

        if prompt is not None:
            return 0 if await ask(prompt) else 1
        err.write(f"llmconnect chat with tools — {await _model_line(engine, key)}\n{TOOLS_HELP}\n")
        return await _repl(reader, ask, command, out, err)
    finally:
        await engine.aclose()
        await aclose_shared_clients()


async def _stream_engine_reply(
    engine: ChatEngine, key: Any, text: str, out: TextIO, err: TextIO
) -> bool:
    """One reply: its text to ``out``, each tool call's progress line to ``err`` when it starts
    and again when it ends (``…`` then ``✓``/``✗``), the final note to ``err``; False when it
    failed. Cancelling it stops the reply (a running tool call is cancelled)."""
    from core.conversations import Status
    from core.delivery import final_note
    from core.engine import TOOLS, Refused

    try:
        reply = await engine.submit(key, text)
    except Refused as exc:
        err.write(f"⚠️ {exc.user_message}\n")
        return False
    shown: list[str] = []  # the progress lines as printed last
    at_line_start = True
    after_tools = False

    def show_progress(text: str) -> None:
        nonlocal shown, at_line_start, after_tools
        lines = text.splitlines()
        if not at_line_start:
            out.write("\n")
            at_line_start = True
        out.flush()
        for i, line in enumerate(lines):
            if i >= len(shown) or shown[i] != line:
                err.write(line + "\n")
        err.flush()
        shown, after_tools = lines, True

    try:
        async for kind, value in reply.events():
            if kind == TOOLS:
                show_progress(value)
            elif kind == TEXT and value:
                if after_tools and at_line_start:
                    value = value.lstrip("\n")  # the engine's paragraph break, already made
                    if not value:
                        continue
                after_tools = False
                out.write(value)
                out.flush()
                at_line_start = value.endswith("\n")
    except asyncio.CancelledError:
        reply.cancel()
        await reply
        if reply.tool_progress:
            show_progress(reply.tools_text)  # the calls it cancelled: ✗
        raise
    await reply
    if not at_line_start or reply.status is Status.COMPLETE:
        out.write("\n")
    out.flush()
    note = final_note(reply)
    if note and reply.status is not Status.CANCELLED:
        err.write(note + "\n")
    return reply.status is Status.COMPLETE


async def _tool_command(engine: ChatEngine, key: Any, name: str, arg: str, err: TextIO) -> None:
    from core.engine import Refused

    try:
        if name == "model":
            if arg:
                await engine.set_model(key, arg)
            err.write(await _model_line(engine, key) + "\n")
        elif name == "system":
            await engine.set_system(key, None if arg in ("", "clear") else arg)
            system = engine.system_of(await engine.conversation(key))
            err.write(f"system prompt: {system or '(none)'}\n")
        elif name == "reset":
            await engine.reset(key)
            err.write("history cleared\n")
        elif name == "tools":
            err.write("\n".join(_server_lines(engine)) + "\n")
        else:
            err.write(TOOLS_HELP + "\n")
    except Refused as exc:
        err.write(f"⚠️ {exc.user_message}\n")


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
    p_chat.add_argument(
        "--tools",
        action="store_true",
        help="let the model call the tools of every configured MCP server (MCP_SERVERS)",
    )
    p_chat.add_argument(
        "--mcp-servers",
        metavar="NAMES",
        help="with tools, only these MCP servers (comma-separated names; implies --tools)",
    )
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
        tools = args.mcp_servers if args.mcp_servers is not None else "*" if args.tools else None
        coro = chat(settings, model=args.model, system=args.system, prompt=args.prompt, tools=tools)
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
