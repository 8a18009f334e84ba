"""MCP servers: ``MCP_SERVERS`` read and checked, each server connected through the official
``mcp`` SDK (stdio or streamable HTTP), kept up, and its tools called safely.

Why here: every front end offers the same tools, so the servers are the engine's (started with
the bot, closed with it). A stdio server that dies is started again with a growing backoff; an
HTTP server that drops the session is reconnected the same way. A tool is named ``server.tool``
for people and ``server__tool`` on the wire (model APIs take no dots in function names).

A call (:meth:`McpManager.call`) never raises for the tool's sake: an unknown tool, arguments its
JSON schema refuses, a failure, a time-out (``TOOL_TIMEOUT``) all come back as an error
:class:`ToolResult` the model reads; a result longer than ``TOOL_MAX_RESULT_CHARS`` is cut with a
note. The secrets the configuration holds (header values, env values, URL credentials and query)
never reach a log line, a repr, an exception or a message: every text about a server is
:meth:`McpServerConfig.redact`-ed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

import anyio
from jsonschema import SchemaError
from jsonschema.validators import validator_for

from .clock import Clock, MonotonicClock

__all__ = [
    "MAX_BACKOFF",
    "RESTART_BACKOFF",
    "Approver",
    "McpManager",
    "McpServerConfig",
    "ServerState",
    "ServerStatus",
    "ToolResult",
    "ToolSpec",
    "cut_result",
    "parse_mcp_servers",
]

log = logging.getLogger("llmconnect.mcp")

#: The first wait before a dead server is started again; doubled each time, at most
#: :data:`MAX_BACKOFF`; back to the first after it stayed up :data:`MAX_BACKOFF` seconds.
RESTART_BACKOFF = 1.0
MAX_BACKOFF = 60.0
#: How long a server may take to connect and list its tools before it counts as down.
CONNECT_TIMEOUT = 30.0

_SERVER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_WIRE_NAME = re.compile(r"[^A-Za-z0-9_-]")
_KEYS = frozenset({"command", "env", "url", "headers", "confirm"})
#: Model APIs limit function names to 64 characters of ``[A-Za-z0-9_-]``.
_WIRE_MAX = 64


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True, repr=False)
class McpServerConfig:
    """One entry of ``MCP_SERVERS``: a stdio ``command`` (with extra ``env``) or a streamable
    HTTP ``url`` (with ``headers``); ``confirm``: each call needs the asker's approval."""

    name: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    confirm: bool = False

    @property
    def kind(self) -> str:
        return "stdio" if self.command else "http"

    @property
    def where(self) -> str:
        """What may be shown of it: the program's name, or the URL without credentials and
        query."""
        if self.command:
            return self.command[0].rsplit("/", 1)[-1]
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    def __repr__(self) -> str:  # never a header, an env value or a URL's credentials
        return f"McpServerConfig(name={self.name!r}, kind={self.kind!r}, where={self.where!r})"

    __str__ = __repr__

    def secrets(self) -> list[str]:
        """Every value that must never be shown: header and env values (and their words, so
        the token of ``Bearer <token>`` alone is caught too), the URL's user, password and
        query values. Longest first, so a value is replaced before a part of it."""
        found: set[str] = set()
        for value in [*self.headers.values(), *self.env.values()]:
            found.add(value)
            found.update(word for word in value.split() if len(word) >= 6)
        if self.url:
            parts = urlsplit(self.url)
            found.update(v for v in (parts.username, parts.password) if v)
            found.update(v for _, v in parse_qsl(parts.query) if v)
            if parts.query:
                found.add(parts.query)
        return sorted((s for s in found if s.strip()), key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every one of :meth:`secrets` replaced by ``***``."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text


def parse_mcp_servers(raw: str | Mapping[str, Any]) -> dict[str, McpServerConfig]:
    """``MCP_SERVERS`` (JSON text or a mapping) as configurations; :class:`ValueError` naming the
    server and the key that is wrong, never a value (it may be a secret)."""
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            # The position only: the text itself may hold a token.
            raise ValueError(f"not valid JSON (line {_line_of(exc)})") from None
    else:
        data = raw
    if not isinstance(data, Mapping):
        raise ValueError('a JSON object of servers: {"name": {"command": [...]} | {"url": ...}}')
    servers: dict[str, McpServerConfig] = {}
    for name, entry in data.items():
        if not isinstance(name, str) or not _SERVER_NAME.fullmatch(name) or "__" in name:
            raise ValueError(
                "a server name is 1 to 32 letters, digits, - or _ (no __): "
                f"{_safe_name(name)} is not"
            )
        servers[name] = _server(name, entry)
    return servers


def _line_of(exc: ValueError) -> int:
    return int(getattr(exc, "lineno", 1))


def _safe_name(name: object) -> str:
    # A wrong name is shown only when it is a short word or two (no digits): a token pasted in
    # the wrong place must not be echoed.
    text = str(name)
    if re.fullmatch(r"[A-Za-z_.\- ]{1,24}", text):
        return repr(text)
    return "one"


def _server(name: str, entry: object) -> McpServerConfig:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{name}: an object with command (stdio) or url (streamable HTTP)")
    unknown = sorted(str(k) for k in entry if k not in _KEYS)
    if unknown:
        shown = ", ".join(_safe_name(k) for k in unknown)
        raise ValueError(
            f"{name}: unknown key {shown} (known: command, env, url, headers, confirm)"
        )
    has_command, has_url = "command" in entry, "url" in entry
    if has_command == has_url:
        raise ValueError(f"{name}: give either command (stdio) or url (streamable HTTP)")
    confirm = entry.get("confirm", False)
    if not isinstance(confirm, bool):
        raise ValueError(f"{name}: confirm is true or false")
    if has_command:
        command = entry["command"]
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(c, str) and c for c in command)
        ):
            raise ValueError(f'{name}: command is a list of strings, e.g. ["python", "-m", "x"]')
        if "headers" in entry:
            raise ValueError(f"{name}: headers go with url; a stdio server takes env")
        env = _strings(name, "env", entry.get("env", {}))
        return McpServerConfig(name, command=tuple(command), env=env, confirm=confirm)
    url = entry["url"]
    if "env" in entry:
        raise ValueError(f"{name}: env goes with command; an HTTP server takes headers")
    if not isinstance(url, str):
        raise ValueError(f"{name}: url is a string, http:// or https://")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ValueError(f"{name}: url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name}: url must be http:// or https:// with a host")
    headers = _strings(name, "headers", entry.get("headers", {}))
    return McpServerConfig(name, url=url, headers=headers, confirm=confirm)


def _strings(server: str, key: str, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{server}: {key} is an object of strings")
    return dict(value)


# ----------------------------------------------------------------------------- tools and results


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool of one server: ``name`` is ``server.tool`` (shown), ``wire_name`` what a model
    calls it by, ``schema`` its arguments' JSON schema."""

    server: str
    tool: str
    wire_name: str
    description: str
    schema: Mapping[str, Any]

    @property
    def name(self) -> str:
        return f"{self.server}.{self.tool}"


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a call gave the model: its text, and whether it is an error."""

    text: str
    is_error: bool = False


def cut_result(text: str, limit: int) -> str:
    """``text`` when at most ``limit`` characters, else its first ``limit`` and a note."""
    if len(text) <= limit:
        return text
    return (
        f"{text[:limit]}\n[cut: {len(text) - limit:,} more characters not shown "
        f"(TOOL_MAX_RESULT_CHARS={limit:,})]"
    )


def _wire_name(server: str, tool: str, taken: set[str]) -> str:
    base = _WIRE_NAME.sub("_", f"{server}__{tool}")[:_WIRE_MAX]
    name, n = base, 2
    while name in taken:
        suffix = f"_{n}"
        name, n = base[: _WIRE_MAX - len(suffix)] + suffix, n + 1
    taken.add(name)
    return name


def _result_text(result: Any) -> str:
    """A ``CallToolResult``'s content as text: text blocks as they are, other blocks as a short
    line; structured content when there is nothing else."""
    pieces: list[str] = []
    for block in getattr(result, "content", None) or ():
        kind = getattr(block, "type", "")
        if kind == "text":
            pieces.append(str(getattr(block, "text", "")))
        elif kind in ("image", "audio"):
            pieces.append(f"[{kind}: {getattr(block, 'mime_type', '') or 'binary'}]")
        elif kind == "resource":
            resource = getattr(block, "resource", None)
            text = getattr(resource, "text", None)
            uri = getattr(resource, "uri", "")
            pieces.append(str(text) if text is not None else f"[resource: {uri}]")
        elif kind == "resource_link":
            pieces.append(f"[resource: {getattr(block, 'uri', '')}]")
        else:
            pieces.append(f"[{kind or 'content'}]")
    structured = getattr(result, "structured_content", None)
    if not pieces and structured is not None:
        pieces.append(json.dumps(structured, ensure_ascii=False, default=str))
    return "\n".join(pieces)


def validate_arguments(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> str | None:
    """Why ``arguments`` do not fit ``schema`` (one line), or ``None`` when they do."""
    try:
        plain = dict(schema)
        cls = validator_for(plain)
        cls.check_schema(plain)
        error = next(iter(cls(plain).iter_errors(dict(arguments))), None)
    except SchemaError:
        return "the tool's own argument schema is not valid JSON Schema"
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


# ----------------------------------------------------------------------------- servers

#: Asks the user whether a call to a ``confirm`` server's tool may run (the tool, its checked
#: arguments): True to run it. See :class:`McpManager`'s ``approve``.
Approver = Callable[[ToolSpec, Mapping[str, Any]], Awaitable[bool]]


class ServerStatus(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DOWN = "down"  # failed or died: retried after the backoff
    CLOSED = "closed"


@dataclass(slots=True)
class ServerState:
    """One server as :class:`McpManager` keeps it."""

    config: McpServerConfig
    status: ServerStatus = ServerStatus.STARTING
    tools: list[ToolSpec] = field(default_factory=list)
    #: Why it is down (redacted), for ``/tools`` and the logs.
    problem: str = ""
    #: How many times it was (re)started.
    starts: int = 0
    client: Any = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.config.name


class McpManager:
    """Every configured server, kept connected in a task of its own (the SDK's connections are
    anyio task groups: entered and left by one task); calls come from any task.

    ``backoff``/``max_backoff`` and ``clock``: the restart waits (tests shorten them and drive
    a fake clock). ``errlog``: where stdio servers' standard error goes. ``approve``: who is
    asked before each call to a ``confirm`` server's tool (the terminal chat asks y/N); without
    it the engine asks the asker by buttons (:meth:`needs_approval`) and calls with
    ``approved=True``, and a call without either is denied.
    """

    def __init__(
        self,
        servers: Mapping[str, McpServerConfig],
        *,
        clock: Clock | None = None,
        backoff: float = RESTART_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        connect_timeout: float = CONNECT_TIMEOUT,
        errlog: TextIO | None = None,
        approve: Approver | None = None,
    ) -> None:
        self.approve = approve
        self.clock = clock or MonotonicClock()
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.errlog = errlog
        self.states: dict[str, ServerState] = {
            name: ServerState(config) for name, config in servers.items()
        }
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self._wire: dict[str, ToolSpec] = {}

    def __repr__(self) -> str:
        return f"McpManager(servers={sorted(self.states)!r})"

    @property
    def names(self) -> list[str]:
        return list(self.states)

    @property
    def confirming(self) -> bool:
        """Whether a server is marked ``confirm`` (its calls need Approve/Deny buttons)."""
        return any(state.config.confirm for state in self.states.values())

    def start(self) -> None:
        """Connect every server in the background (a slow one delays nobody)."""
        if self.states:
            _guard_sdk_logs([state.config for state in self.states.values()])
        for name, state in self.states.items():
            if name not in self._tasks:
                self._tasks[name] = asyncio.create_task(self._keep(state), name=f"mcp {name}")

    async def wait_ready(self, names: Iterable[str] | None = None) -> None:
        """Until the named servers (default: all) have listed their tools once."""
        for name in self.names if names is None else names:
            await self.states[name].ready.wait()

    async def aclose(self) -> None:
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._tasks.clear()
        for state in self.states.values():
            state.status, state.client, state.tools = ServerStatus.CLOSED, None, []
        self._wire.clear()
        # Nothing of these servers logs any more: the log filter forgets their secrets.
        mine = {id(state.config) for state in self.states.values()}
        _REDACTING.configs = [c for c in _REDACTING.configs if id(c) not in mine]

    # -- tools ---------------------------------------------------------------------------------

    def tools(self, servers: Iterable[str]) -> list[ToolSpec]:
        """The tools of the named servers that are up now (in their order); a ``confirm``
        server's too (the engine asks the asker to approve each call: :meth:`needs_approval`)."""
        found: list[ToolSpec] = []
        for name in servers:
            state = self.states.get(name)
            if state is not None and state.status is ServerStatus.READY:
                found += state.tools
        return found

    def needs_approval(self, spec: ToolSpec) -> bool:
        """Whether a call of ``spec`` waits for the asker's approval (``"confirm": true``) by
        the engine's buttons; not with an ``approve`` of the manager's own (the terminal asks)."""
        state = self.states.get(spec.server)
        return state is not None and state.config.confirm and self.approve is None

    def check(
        self, name: str, arguments: Mapping[str, Any], *, allowed: Iterable[str]
    ) -> tuple[ToolSpec | None, ToolResult | None]:
        """``(the tool, None)`` when ``name`` may be called with ``arguments`` here, else
        ``(the tool or None, the error result)``: an unknown tool (or one of a server not
        ``allowed``), arguments its schema refuses. What :meth:`call` checks first; the engine
        checks before asking for an approval (an invalid call is not worth one)."""
        spec = self.find(name)
        if spec is None or spec.server not in set(allowed):
            return None, ToolResult(
                f"Unknown tool {name!r}: it is not one of the tools offered.", True
            )
        problem = validate_arguments(spec.schema, arguments)
        if problem is not None:
            return spec, ToolResult(f"Invalid arguments for {spec.name}: {problem}", True)
        return spec, None

    def find(self, name: str) -> ToolSpec | None:
        """A tool by its wire name (``server__tool``) or its shown one (``server.tool``)."""
        spec = self._wire.get(name)
        if spec is not None:
            return spec
        server, _, tool = name.partition(".")
        state = self.states.get(server)
        if state is None:
            return None
        return next((t for t in state.tools if t.tool == tool), None)

    async def call(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        allowed: Iterable[str],
        time_limit: float,
        max_chars: int,
        approved: bool = False,
    ) -> ToolResult:
        """Run tool ``name`` (wire or shown name) with ``arguments``, when its server is one of
        ``allowed`` (a ``confirm`` server's only when ``approved``); always a :class:`ToolResult` (an error one for whatever went wrong), cut at
        ``max_chars``; after ``time_limit`` seconds of the manager's clock the call is cancelled;
        cancelling the caller cancels the call."""
        spec, refused = self.check(name, arguments, allowed=allowed)
        if refused is not None or spec is None:
            return refused or ToolResult(f"Unknown tool {name!r}.", True)
        state = self.states[spec.server]
        if state.config.confirm and not approved and self.approve is None:
            # A safety net: only the engine calls, and only once the asker approved.
            return ToolResult(f"{spec.name} needs the user's approval: the call was denied.", True)
        client = state.client
        if client is None or state.status is not ServerStatus.READY:
            return ToolResult(f"{spec.name} is unavailable: its server is {state.status}.", True)
        # Asked before the time limit starts: the user's thinking is not the tool's time.
        approve = self.approve if state.config.confirm and not approved else None
        if approve is not None and not await approve(spec, arguments):
            return ToolResult(f"The user denied the call to {spec.name}.", True)
        call = asyncio.ensure_future(
            # The SDK's own read timeout only backs up the clock's (TOOL_TIMEOUT) below.
            client.call_tool(spec.tool, dict(arguments), read_timeout_seconds=time_limit + 60)
        )
        timer = asyncio.ensure_future(self.clock.sleep(time_limit))
        try:
            await asyncio.wait((call, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not call.done():
                call.cancel()
                with contextlib.suppress(BaseException):
                    await call
        if call.cancelled():
            return ToolResult(f"{spec.name} timed out after {time_limit:g} s (TOOL_TIMEOUT).", True)
        exc = call.exception()
        if exc is not None:
            reason = state.config.redact(f"{type(exc).__name__}: {exc}")
            log.warning("mcp %s: %s failed (%s)", spec.server, spec.tool, reason)
            return ToolResult(f"{spec.name} failed: {reason}", True)
        result = call.result()
        text = cut_result(_result_text(result), max_chars)
        if getattr(result, "is_error", False):
            return ToolResult(f"{spec.name} failed: {text or 'no details'}", True)
        return ToolResult(text)

    # -- keeping a server up -----------------------------------------------------------------

    async def _keep(self, state: ServerState) -> None:
        """Connect, list the tools, wait until the connection ends; again after the backoff."""
        failures = 0
        config = state.config
        while not self._closing:
            state.status, state.starts = ServerStatus.STARTING, state.starts + 1
            since = self.clock.now()
            try:
                await self._serve(state)
                state.problem = "the connection ended"
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # an anyio group's ExceptionGroup too
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                state.problem = config.redact(_describe(exc))
            finally:
                state.client = None
                self._drop_tools(state)
                if state.status is not ServerStatus.CLOSED:
                    state.status = ServerStatus.DOWN
                state.ready.set()  # its first try is over: whoever waits sees it down
            if self._closing:
                return
            if self.clock.now() - since >= self.max_backoff:
                failures = 0  # it had been up a good while: a fresh start
            wait = min(self.backoff * 2**failures, self.max_backoff)
            failures += 1
            log.warning(
                "mcp %s (%s) is down: %s; trying again in %.3g s",
                config.name,
                config.where,
                state.problem,
                wait,
            )
            await self.clock.sleep(wait)

    async def _serve(self, state: ServerState) -> None:
        from mcp import Client

        config = state.config
        died = asyncio.Event()
        async with (
            _transport(config, died, self.errlog) as transport,
            # read_timeout_seconds bounds the handshake and the listing; calls pass their own.
            Client(transport, read_timeout_seconds=self.connect_timeout) as client,
        ):
            tools = await _list_tools(client)
            self._set_tools(state, tools)
            state.client, state.status, state.problem = client, ServerStatus.READY, ""
            state.ready.set()
            log.info(
                "mcp %s (%s): %d tools: %s",
                config.name,
                config.where,
                len(state.tools),
                ", ".join(t.tool for t in state.tools),
            )
            try:
                await died.wait()
            finally:
                state.client = None

    def _set_tools(self, state: ServerState, tools: list[Any]) -> None:
        self._drop_tools(state)
        taken = set(self._wire)
        specs = []
        for tool in tools:
            spec = ToolSpec(
                server=state.name,
                tool=str(tool.name),
                wire_name=_wire_name(state.name, str(tool.name), taken),
                description=str(tool.description or ""),
                schema=dict(tool.input_schema or {"type": "object"}),
            )
            specs.append(spec)
            self._wire[spec.wire_name] = spec
        state.tools = specs

    def _drop_tools(self, state: ServerState) -> None:
        for spec in state.tools:
            self._wire.pop(spec.wire_name, None)
        state.tools = []


class _Redacting(logging.Filter):
    """Replaces the configured secrets in a record of the SDK or its HTTP client (a URL with
    a token in its query, an error echoing a header) before any handler sees it."""

    def __init__(self) -> None:
        super().__init__("llmconnect-mcp-redact")
        self.configs: list[McpServerConfig] = []

    def redact(self, text: str) -> str:
        for config in self.configs:
            text = config.redact(text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: show nothing of it rather than fail
            message = str(record.msg)
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


_REDACTING = _Redacting()
#: The loggers of the libraries a connection goes through (their modules' loggers are made at
#: import: each gets the filter, as a logger's filters apply to its own records only).
_SDK_LOGGERS = ("mcp", "httpx2", "httpcore2", "mcp_types")


def _guard_sdk_logs(configs: list[McpServerConfig]) -> None:
    import httpx2  # noqa: F401 - imported so that its loggers exist
    import mcp.client.client
    import mcp.client.stdio
    import mcp.client.streamable_http  # noqa: F401

    known = {id(c) for c in _REDACTING.configs}
    _REDACTING.configs += [c for c in configs if id(c) not in known]
    manager = logging.Logger.manager
    names = [n for n in list(manager.loggerDict) if n.split(".", 1)[0] in _SDK_LOGGERS]
    for name in [*_SDK_LOGGERS, *names]:
        logger = logging.getLogger(name)
        if _REDACTING not in logger.filters:
            logger.addFilter(_REDACTING)


async def _list_tools(client: Any) -> list[Any]:
    tools: list[Any] = []
    cursor: str | None = None
    for _ in range(100):  # a server that pages for ever cannot hang the start
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _describe(exc: BaseException) -> str:
    """One line for an exception (the first of a group's)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.asynccontextmanager
async def _transport(
    config: McpServerConfig, died: asyncio.Event, errlog: TextIO | None
) -> AsyncIterator[Any]:
    """The SDK's transport for ``config``, its read stream watched: when the server ends it
    (a stdio process exits, an HTTP session drops), ``died`` is set."""
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.message import SessionMessage

    if config.command:
        params = StdioServerParameters(
            command=config.command[0], args=list(config.command[1:]), env=dict(config.env) or None
        )
        inner = stdio_client(params, errlog=errlog or sys.stderr)
        http = None
    else:
        import httpx2

        http = httpx2.AsyncClient(
            headers=dict(config.headers), timeout=httpx2.Timeout(30.0, read=300.0)
        )
        inner = streamable_http_client(config.url, http_client=http)
    async with contextlib.AsyncExitStack() as stack:
        if http is not None:
            await stack.enter_async_context(http)
        read, write = await stack.enter_async_context(inner)
        sender, receiver = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def pump() -> None:
            try:
                async with sender:
                    async for message in read:
                        await sender.send(message)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
                pass
            finally:
                died.set()

        group = await stack.enter_async_context(anyio.create_task_group())
        group.start_soon(pump)
        try:
            yield _Streams(receiver, write)
        finally:
            group.cancel_scope.cancel()


class _Streams:
    """A ready-made transport (an async context manager of the two streams) for ``Client``."""

    def __init__(self, read: Any, write: Any) -> None:
        self.streams = (read, write)

    async def __aenter__(self) -> tuple[Any, Any]:
        return self.streams

    async def __aexit__(self, *exc: object) -> None:
        return None
