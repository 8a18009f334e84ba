"""``ChatEngine``: runs every generation as a background task and makes it observable.

For each request: append the user turn and an assistant placeholder, build the client from the
conversation's model and history (``APIClientFactory``, one client per reply),
stream, keep the placeholder current, and end it ``complete``, ``error`` or ``cancelled``.

One generation at a time per conversation: a second request in the same channel waits its turn, in
order; different channels run concurrently. Adapters get a :class:`Reply` they can iterate for
deltas and await for the final state; a late observer (a reloaded web page) gets the text so far,
then the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import unicodedata
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any

import httpx

from llmconnect import (
    REASONING,
    TEXT,
    TOOL_CALL,
    APIClientFactory,
    AsyncAPIClient,
    ConfigurationError,
    Document,
    Image,
    LLMError,
    Part,
    ProviderSpec,
    ReplyStream,
    Timeouts,
    Tool,
    ToolCall,
    ToolResult,
    Usage,
    assistant_turn,
    base_url_variable,
    parse_model,
    provider_status,
    resolve,
    supports_tools,
    tool_results_turn,
)

from .catalogue import Catalogue, closest
from .clock import Clock, MonotonicClock, wall_time
from .cluster import Cluster, cluster_for
from .conversations import (
    FINAL,
    Conversation,
    ConversationKey,
    ConversationStore,
    HistoryPart,
    Message,
    MessageAttachment,
    Status,
    ToolStep,
    clean_text,
    tools_line,
)
from .fallback import open_reply
from .feedback import Counts, FeedbackStore
from .logs import log_reply_end, new_reply_id, reply_context
from .mcp import McpManager
from .metrics import Metrics
from .model_options import options_for
from .policy import AccessPolicy, Actor
from .settings import Settings
from .stores import close_store, locks_for, open_store
from .usage import Tokens, UsageReport, UsageStore, quota_refusal, utc_day

if TYPE_CHECKING:
    from .attachments import Attachment

__all__ = [
    "DENIED",
    "NOT_APPROVED",
    "NOT_IN_HISTORY",
    "NOT_LATEST",
    "NOT_WAITING",
    "ONLY_ASKER",
    "TOOLS",
    "ChatEngine",
    "Refused",
    "Reply",
    "StoreUnavailable",
    "ToolProgress",
    "parse_progress_line",
    "shown_arguments",
]

log = logging.getLogger("llmconnect.engine")

#: The error of a reply found unfinished in the store (its process stopped while it streamed).
INTERRUPTED = "This reply was interrupted (the bot restarted)."
#: The error of a reply whose turn could not be stored.
STORE_FAILED = "Could not save this conversation right now; please try again."
#: The refusal when the conversation store (Redis) cannot be reached.
STORE_UNAVAILABLE = "I cannot reach my conversation store right now; please try again shortly."
#: The error of a reply shown in full whose final save failed: it will not be remembered.
NOT_SAVED = (
    "This answer could not be saved (the conversation store is unreachable): "
    "it will not be part of the conversation's history."
)
#: A reply's Stop or Regenerate pressed by someone else than its asker (or an admin).
ONLY_ASKER = "Only the asker can do that."
#: Regenerate pressed on a reply that a newer one (or a queued prompt) followed.
NOT_LATEST = "Only the latest reply here can be regenerated."
#: Approve or Deny pressed on a call that no longer waits (answered, timed out, stopped).
NOT_WAITING = "This call is no longer waiting for approval."
#: What the model reads when the asker pressed Deny on a call.
DENIED = "{name}: the user denied this call."
#: What the model reads when nobody approved a call in ``TOOL_CONFIRM_TIMEOUT`` seconds.
NOT_APPROVED = (
    "{name}: the user did not approve this call within {seconds:g} s "
    "(TOOL_CONFIRM_TIMEOUT): it was denied."
)
#: A control pressed on a reply that has left the history (trimmed, reset, evicted).
NOT_IN_HISTORY = "That reply is no longer in this conversation's history."
#: How long ``stop`` waits for a generation running in another process to end, polling.
REMOTE_STOP_WAIT = 10.0
REMOTE_STOP_POLL = 0.05
#: Seconds a reply waits for its front end's first sign (``submit(heard=...)``) before the LLM
#: is asked anyway: a platform that is slow to show it must not hold the answer back.
HEARD_WAIT = 1.0
#: At most this many models are named after "Available:" in a refused model's answer.
LISTED_IN_REFUSAL = 10

#: The kind of :meth:`Reply.events` that carries the tool progress lines (one per call).
TOOLS = "tools"
#: At most this many characters of a call's arguments are shown in its progress line.
SHOWN_ARGUMENTS = 60

HELP_TEXT = (
    "Ask me anything: mention me with your question. Commands: help, model [name], "
    "models [filter], reset, system [text|clear], stop, status, tools."
)


class Refused(Exception):
    """A request the engine will not run; ``user_message`` says why, briefly."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class StoreUnavailable(Refused):
    """The conversation store (Redis, the SQLite file) cannot be reached: nothing was done.

    Every engine operation that needs the store raises this rather than the store's own error,
    so a front end can tell "try again shortly" (the web: 503) from a refusal of the request.
    """

    def __init__(self, user_message: str = "") -> None:
        super().__init__(user_message or STORE_UNAVAILABLE)


class ToolProgress:
    """One tool call of a reply as its progress line shows it."""

    __slots__ = ("approval", "arguments", "name", "state")

    def __init__(self, name: str, arguments: str) -> None:
        self.name = name
        self.arguments = arguments
        #: ``running``, ``waiting`` (for the asker's approval), ``ok``, ``error`` or ``denied``.
        self.state = "running"
        #: While ``waiting``: resolved True (approved) or False (denied) by a button.
        self.approval: asyncio.Future[bool] | None = None

    @property
    def waiting(self) -> bool:
        """Waiting for the asker's Approve or Deny (:meth:`ChatEngine.answer_approval`)."""
        return self.state == "waiting" and self.approval is not None and not self.approval.done()

    @property
    def line(self) -> str:
        """``🔧 files.read(path='a.txt') …``, then ``✓`` or ``✗``; ``— waiting for approval``
        while a ``confirm`` server's call waits, ``✗ denied`` once denied."""
        if self.state == "waiting":
            return f"🔧 {self.name}({self.arguments}) — waiting for approval"
        mark = {"running": "…", "ok": "✓", "denied": "✗ denied"}.get(self.state, "✗")
        return f"🔧 {self.name}({self.arguments}) {mark}"


_PROGRESS_STATES = {"…": "running", "✓": "ok", "✗": "error"}


def parse_progress_line(line: str) -> tuple[str, str]:
    """A :attr:`ToolProgress.line` back as ``(call, state)``: ``("files.read(path='a.txt')",
    "running")``, state ``running``, ``ok`` or ``error``; for a renderer that shows each call
    its own way (Slack's task cards). A line of another shape is ``(line, "running")``."""
    head, _, mark = line.rpartition(" ")
    state = _PROGRESS_STATES.get(mark)
    if not head or state is None:
        return line, "running"
    return head.removeprefix("🔧 "), state


def shown_arguments(arguments: Mapping[str, Any]) -> str:
    """``path='a.txt', n=3``: a call's arguments, short (each value and the whole cut)."""
    pieces = []
    for name, value in arguments.items():
        text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        pieces.append(f"{name}={text if len(text) <= 30 else text[:29] + '…'}")
    joined = ", ".join(pieces)
    return joined if len(joined) <= SHOWN_ARGUMENTS else joined[: SHOWN_ARGUMENTS - 1] + "…"


class Reply:
    """One generation, observable while it runs and after it ends."""

    __slots__ = (
        "__weakref__",  # front ends may keep per-reply marks that must not keep it alive
        "_final",
        "_on_end",
        "_waiters",
        "attachments",
        "deltas",
        "error_kind",
        "first_token",
        "heard",
        "id",
        "key",
        "message",
        "model",
        "prompt",
        "reasoning",
        "reasoning_since",
        "replaced_refs",
        "replaces",
        "started",
        "stored",
        "task",
        "tool_progress",
        "tool_version",
        "usage",
        "user",
    )

    def __init__(self, key: ConversationKey, message: Message, model: str) -> None:
        self.key = key
        self.message = message
        self.model = model
        self.task: asyncio.Task[None] | None = None
        #: The files the prompt carries (as its user message keeps them).
        self.attachments: tuple[MessageAttachment, ...] = ()
        # The figures of its log line at the end (core.logs.log_reply_end); times are the
        # engine clock's.
        self.id = new_reply_id()
        self.prompt = ""
        self.started = 0.0
        self.first_token: float | None = None
        self.deltas = 0
        self.usage: Usage | None = None
        #: Who asked (the actor's user id; ``None`` without one), for the per-user token count.
        self.user: str | None = None
        #: The model's reasoning pieces, as they arrive (never in the conversation or the store),
        #: and when the first came (the engine clock's): see :meth:`events`.
        self.reasoning: list[str] = []
        self.reasoning_since: float | None = None
        #: Why it failed, for logs: the LLMError's class name, ``store`` or ``not_saved``.
        self.error_kind: str | None = None
        #: The front end's first sign that it heard the question (typing, a status, a pending
        #: message), started before ``submit``: the LLM is asked once it is shown (or after
        #: :data:`HEARD_WAIT`).
        self.heard: asyncio.Future[Any] | None = None
        #: A regeneration's: the id of the reply it replaces (:meth:`ChatEngine.regenerate`).
        self.replaces: str | None = None
        #: A regeneration's: the platform messages the replaced reply was shown in, in order,
        #: when known (:attr:`~core.conversations.Message.refs`); ``()``: only the clicked one.
        self.replaced_refs: tuple[str, ...] = ()
        #: True once its turn is in the conversation (saved): the reply can be regenerated
        #: and rated (a prompt stopped while queued never is).
        self.stored = False
        #: Its tool calls, in order, as their progress lines show them; ``tool_version`` counts
        #: the changes (a front end shows the lines again when it moved).
        self.tool_progress: list[ToolProgress] = []
        self.tool_version = 0
        self._on_end: Callable[[Reply], None] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._final: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def status(self) -> Status:
        return self.message.status

    @property
    def text(self) -> str:
        return self.message.text

    @property
    def error(self) -> str | None:
        return self.message.error

    @property
    def unavailable(self) -> tuple[str, ...]:
        """The models that were unavailable before :attr:`model` answered (fallbacks)."""
        return self.message.unavailable

    @property
    def notes(self) -> tuple[str, ...]:
        """Lines about the prompt's files (skipped ones, a cut text file), shown under it."""
        return self.message.notes

    @property
    def done(self) -> bool:
        return self._final.done()

    def cancel(self) -> bool:
        """Stop this very reply, whether it runs or still waits its turn; False when it has
        already ended. It ends ``cancelled``: a running one keeps (and saves) its text so far, a
        queued one never runs. Returns at once; ``await reply`` waits until it has ended.

        Unlike :meth:`ChatEngine.stop`, which stops whichever reply of the conversation runs.
        """
        task = self.task
        if self.done or task is None:
            return False
        task.cancel()
        return True

    def _push(self, delta: str) -> None:
        # Per-delta path: the delta is already in message.parts; wake observers, if any.
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    @property
    def tool_steps(self) -> tuple[ToolStep, ...]:
        return self.message.tool_steps

    @property
    def tools_text(self) -> str:
        """The progress lines of its tool calls, one per call (``""``: none)."""
        return "\n".join(p.line for p in self.tool_progress)

    @property
    def tools_line(self) -> str | None:
        """The one line it keeps about the tools it used (``None``: none)."""
        return tools_line([(p.name, p.state == "ok") for p in self.tool_progress])

    def _tools_moved(self) -> None:
        self.tool_version += 1
        self._push("")

    @property
    def reasoning_text(self) -> str:
        """All of the model's reasoning so far (``""`` for a model that shows none)."""
        return "".join(self.reasoning)

    def _reason(self, text: str, now: float) -> None:
        if self.reasoning_since is None:
            self.reasoning_since = now
        self.reasoning.append(text)
        self._push("")

    def _finish(self) -> None:
        if not self._final.done():
            if self._on_end is not None:
                self._on_end(self)  # before anyone awaiting the reply resumes
            self._final.set_result(None)
        self._push("")

    def __await__(self) -> Generator[Any, None, Reply]:
        return self._wait().__await__()

    async def _wait(self) -> Reply:
        await asyncio.shield(self._final)
        return self

    async def __aiter__(self) -> AsyncIterator[str]:
        """Deltas; a late observer first gets everything so far as one delta."""
        sent = 0  # characters handed out
        index = 0  # parts handed out, while streaming
        while True:
            parts = self.message.parts
            if parts is not None:
                if index < len(parts):
                    chunk = parts[index] if index + 1 == len(parts) else "".join(parts[index:])
                    index = len(parts)
                    sent += len(chunk)
                    yield chunk
                    continue
            elif self.message.status is not Status.PENDING:
                # Final: whatever the last wake-up did not hand out yet.
                text = self.message.content
                if len(text) > sent:
                    yield text[sent:]
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    async def events(self) -> AsyncIterator[tuple[str, str]]:
        """``(kind, text)``: ``("reasoning", …)`` pieces of the model's thinking, ``("text",
        …)`` deltas of the answer, as :meth:`__aiter__` hands out the deltas, and ``("tools",
        lines)`` each time a tool call starts or ends: every call's progress line (a late
        observer first gets everything so far: the reasoning, the tool lines, then the text)."""
        thought = 0  # reasoning pieces handed out
        sent = 0  # characters of text handed out
        index = 0  # parts handed out, while streaming
        tools = 0  # the tool_version handed out
        while True:
            reasoning = self.reasoning
            if thought < len(reasoning):
                chunk = "".join(reasoning[thought:])
                thought = len(reasoning)
                yield REASONING, chunk
                continue
            parts = self.message.parts
            if parts is not None and index < len(parts):
                chunk = parts[index] if index + 1 == len(parts) else "".join(parts[index:])
                index = len(parts)
                sent += len(chunk)
                yield TEXT, chunk
                continue
            if tools != self.tool_version:  # after the text that came before the calls
                tools = self.tool_version
                yield TOOLS, self.tools_text
                continue
            if parts is None and self.message.status is not Status.PENDING:
                text = self.message.content
                if len(text) > sent:
                    yield TEXT, text[sent:]
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


class ChatEngine:
    """Conversations, their models, and the generations that answer them."""

    def __init__(
        self,
        settings: Settings,
        store: ConversationStore | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        cluster: Cluster | None = None,
        metrics: Metrics | None = None,
        mcp: McpManager | None = None,
    ) -> None:
        self.settings = settings
        #: Prometheus metrics (``GET /metrics``), recorded per reply, never per delta.
        self.metrics = metrics if metrics is not None else Metrics()
        #: ``STORE_URL``'s store unless one is given; one this engine opened, it also closes.
        self.store: ConversationStore = store if store is not None else open_store(settings)
        self._owns_store = store is None
        #: Cross-process part of "one generation at a time" (Redis); in-process FIFO is ``_locks``.
        self.locks = locks_for(self.store)
        #: Conversations a generation of this process holds right now: every change made here
        #: (model, system prompt, reset) goes to that object, which the generation saves last.
        self._live: dict[ConversationKey, Conversation] = {}
        #: Final saves in flight (shielded from cancellation; ``aclose`` waits for them).
        self._saving: set[asyncio.Future[None]] = set()
        self.http_client = http_client
        self.clock = clock or MonotonicClock()
        self.env = os.environ if env is None else env
        #: Provider options for every generation (``temperature``, ``max_tokens``; echo's
        #: ``words`` and ``delay``), forwarded as ``**options`` to ``APIClientFactory.create``.
        self.options: dict[str, Any] = dict(options or {})
        self.policy = AccessPolicy(settings)
        #: What the processes serving this bot share besides the store: the per-user prompt
        #: limit, repeated-event checks, /stop, request budgets (``core.cluster``).
        self.cluster: Cluster = (
            cluster if cluster is not None else cluster_for(self.store, self.clock)
        )
        self._stop_listener: asyncio.Task[None] | None = None
        self.default_model = str(parse_model(settings.llmconnect_model, env=self.env))
        self._locks: dict[ConversationKey, asyncio.Lock] = {}
        #: Replies not yet final, per conversation, in submission order (the first one runs).
        self._queues: dict[ConversationKey, list[Reply]] = {}
        #: The latest reply per conversation, for late observers; bounded like the store.
        self._last: OrderedDict[ConversationKey, Reply] = OrderedDict()
        self._tasks: dict[asyncio.Task[None], Reply] = {}
        #: Every configured provider's models, refreshed in the background (``core.catalogue``).
        self.catalogue = Catalogue(
            self.env,
            clock=self.clock,
            ttl=settings.model_list_ttl,
            http_client=http_client,
            timeouts=_list_timeouts(settings),
        )
        #: ``LLMCONNECT_FALLBACK_MODELS`` as ``provider/model`` names.
        self.fallback_models = _fallbacks(settings, self.env)
        #: ``MCP_SERVERS``: connected by :meth:`start`, closed by :meth:`aclose`.
        self.mcp = (
            mcp if mcp is not None else McpManager(settings.mcp_server_configs(), clock=self.clock)
        )

    async def start(self) -> None:
        """What runs beside the generations: the MCP servers connect in the background (their
        tools are offered once they have listed them). Idempotent; the runner calls it."""
        self.mcp.start()

    def update_settings(self, settings: Settings) -> None:
        """Use ``settings`` from the next prompt on (a configuration reload): the default model,
        the access policy and every limit; a reply under way keeps what it started with. The
        store is not reopened: the caller changes only what may change live.
        :class:`LLMError` (nothing changed) when the default model names an unknown provider."""
        default_model = str(parse_model(settings.llmconnect_model, env=self.env))
        fallback_models = _fallbacks(settings, self.env)
        self.settings = settings
        self.policy = AccessPolicy(settings)
        self.default_model = default_model
        self.fallback_models = fallback_models
        self.catalogue.ttl = settings.model_list_ttl
        self.catalogue.timeouts = _list_timeouts(settings)

    # ----------------------------------------------------------------- conversations

    async def conversation(
        self, key: ConversationKey, parent: ConversationKey | None = None
    ) -> Conversation:
        """``key``'s conversation, created when new; :class:`StoreUnavailable` when the store
        cannot be reached (so does every operation below that needs the store)."""
        live = self._live.get(key)
        if live is not None:
            return live
        with _reaching_store(key):
            return await self.store.get_or_create(key, parent)

    async def get(self, key: ConversationKey) -> Conversation | None:
        """A conversation as it is now (a running reply's text included), without creating it."""
        live = self._live.get(key)
        if live is not None:
            return live
        with _reaching_store(key):
            return await self.store.get(key)

    async def conversation_keys(self, platform: str) -> list[ConversationKey]:
        """``platform``'s stored conversations, most recently saved first (the store's
        ``list_keys``); :class:`StoreUnavailable` when the store cannot be reached."""
        with _reaching_store(ConversationKey(platform, "*")):
            return await self.store.list_keys(platform)

    def model_of(self, conversation: Conversation) -> str:
        return conversation.model or self.default_model

    def system_of(self, conversation: Conversation) -> str | None:
        if conversation.system is not None:
            return conversation.system or None
        return self.settings.llmconnect_system_prompt or None

    def reply_for(self, key: ConversationKey) -> Reply | None:
        """The running reply of a conversation, else its latest one (for late observers)."""
        queue = self._queues.get(key)
        if queue and queue[0].status is not Status.PENDING:
            return queue[0]
        return self._last.get(key)

    def is_busy(self, key: ConversationKey) -> bool:
        return key in self._queues

    def replies(self, key: ConversationKey) -> list[Reply]:
        """``key``'s replies in this process that have not ended, in order: the first one runs
        (or is next), the others wait their turn."""
        return [reply for reply in self._queues.get(key, ()) if not reply.done]

    # ----------------------------------------------------------------- models

    def available_models(self) -> list[str]:
        """Models a user may pick: each configured provider's models as the catalogue knows them
        (its list, else its default model), filtered by ``LLMCONNECT_ALLOWED_MODELS`` (in its
        order; an exact entry is offered as it is). Never waits: a list that is missing or old
        is refreshed in the background (:class:`~core.catalogue.Catalogue`)."""
        default_provider = self.default_model.split("/", 1)[0]
        configured = {
            r.spec.name: r.spec
            for r in provider_status(self.env)
            if r.configured
            and (r.spec.needs_key or _pointed_at(r.spec, self.env, default_provider))
        }
        defaults = {name: spec.default_model for name, spec in configured.items()}
        if default_provider in defaults and not defaults[default_provider]:
            # A provider without a default model of its own (a custom FOO_BASE_URL one): until
            # its list is known, LLMCONNECT_MODEL's model stands in.
            defaults[default_provider] = self.default_model.split("/", 1)[1]
        catalogue = self.catalogue
        allowed = self.settings.llmconnect_allowed_models
        if not allowed:
            return [
                model
                for name, default in defaults.items()
                for model in catalogue.models(name, default).models
            ]
        models: list[str] = []
        for entry in allowed:
            entry = entry.strip()
            provider, _, model = entry.partition("/")
            if provider not in defaults:
                continue
            if model and not model.endswith("*"):
                models.append(entry)
                continue
            known = catalogue.models(provider, defaults[provider]).models
            models += [m for m in known if _allows(entry, m)]
        return list(dict.fromkeys(models))

    def validate_model(self, name: str) -> str:
        """``provider/model`` for ``name``, or :class:`Refused` saying why, with the closest
        available names ("did you mean") and what is available."""
        try:
            # resolve checks the id with llmconnect.validate_model_id (letters, digits and
            # ._-:/@+, no ".." part): nothing that could change a provider URL's path or query.
            resolved = resolve(name, self.env)
            ref = resolved.ref
        except ConfigurationError as exc:
            raise Refused(f"{exc.user_message}{self._suggest(name)}") from None
        if not resolved.configured:
            raise Refused(
                f"{ref.provider} is not configured (set {resolved.key_var}).{self._suggest(name)}"
            )
        full = str(ref)
        allowed = self.settings.llmconnect_allowed_models
        if allowed and not any(_allows(entry, full) for entry in allowed):
            raise Refused(f"{full} is not allowed here.{self._suggest(full)}")
        return full

    def _suggest(self, name: str) -> str:
        """`` Did you mean a, b? Available: …`` for a refused model name: the 5 closest available
        names, then the available ones (the first :data:`LISTED_IN_REFUSAL`, and how many more)."""
        available = self.available_models()
        near = closest(name, available, 5)
        text = f" Did you mean {', '.join(near)}?" if near else ""
        if not available:
            return f"{text} Available: none configured."
        shown = ", ".join(available[:LISTED_IN_REFUSAL])
        more = len(available) - LISTED_IN_REFUSAL
        if more > 0:
            return f"{text} Available: {shown} and {more} more (the models command lists them)."
        return f"{text} Available: {shown}."

    def model_hint(self, full: str) -> str | None:
        """A note for a model its provider's list (as the catalogue has it) does not hold, with
        the closest listed names; ``None`` when it is listed, or no list is known. A name not
        listed is still accepted: lists miss aliases, fine-tunes and deployments."""
        provider, _, model = full.partition("/")
        entry = self.catalogue.cached(provider)
        if entry is None or not entry.listed or full in entry.models:
            return None
        if any(m.startswith(f"{full}:") for m in entry.models):  # ollama's tags: llama3.2:latest
            return None
        near = closest(full, entry.models, 5)
        hint = f"{provider} does not list {model}"
        return f"{hint}; did you mean {', '.join(near)}?" if near else f"{hint}."

    async def set_model(self, key: ConversationKey, name: str) -> str:
        full = self.validate_model(clean_text(name))
        with _reaching_store(key):
            conversation = await self.conversation(key)
            conversation.model = full
            await self.store.save(conversation)
        return full

    def tool_servers_of(self, conversation: Conversation) -> list[str]:
        """The MCP servers ``conversation`` may use: its own choice (``/tools``), else
        ``MCP_DEFAULT_SERVERS``; only configured ones, in ``MCP_SERVERS``' order."""
        chosen = conversation.tools
        if chosen is None:
            chosen = tuple(self.settings.mcp_default_servers)
        return [name for name in self.mcp.names if name in chosen]

    async def set_tool_server(self, key: ConversationKey, name: str, enabled: bool) -> list[str]:
        """Enable or disable MCP server ``name`` in ``key``'s conversation; the servers it may
        use now. :class:`Refused` for a server that is not configured."""
        name = clean_text(name).strip()
        if name not in self.mcp.names:
            known = ", ".join(self.mcp.names) or "none configured (MCP_SERVERS)"
            raise Refused(f"No tool server {name!r}. Servers: {known}.")
        with _reaching_store(key):
            conversation = await self.conversation(key)
            servers = self.tool_servers_of(conversation)
            if enabled and name not in servers:
                servers.append(name)
            elif not enabled and name in servers:
                servers.remove(name)
            conversation.tools = tuple(n for n in self.mcp.names if n in servers)
            await self.store.save(conversation)
        return list(conversation.tools)

    async def set_system(self, key: ConversationKey, text: str | None) -> None:
        with _reaching_store(key):
            conversation = await self.conversation(key)
            conversation.system = None if text is None else clean_text(text)
            await self.store.save(conversation)

    # ----------------------------------------------------------------- generations

    async def check(
        self,
        key: ConversationKey,
        text: str,
        actor: Actor | None,
        parent: ConversationKey | None = None,
        attachments: Sequence[Attachment] = (),
    ) -> str:
        """The prompt to run, or :class:`Refused` with a clear, short reason. A prompt with no
        text is run when it carries a file that was read (its text is then ``""``)."""
        reason = self.policy.refusal(actor, key.channel, parent.channel if parent else None)
        if reason:
            raise Refused(reason)
        prompt = clean_text(text).strip()  # every front end's prompt, as valid Unicode
        if not any(_visible(c) for c in prompt):  # empty, or only zero-width/direction marks
            if any(a.kind != "skipped" for a in attachments):
                prompt = ""
            else:
                raise Refused(_nothing_to_answer(attachments))
        limit = self.settings.max_input_chars
        if len(prompt) > limit:
            raise Refused(
                f"That message is {len(prompt):,} characters; the limit is {limit:,}. "
                "Please shorten it."
            )
        await self._check_limits(key, actor)
        return prompt

    async def _check_limits(self, key: ConversationKey, actor: Actor | None) -> None:
        """:class:`Refused` when the queue is full, a daily token cap is reached or ``actor``
        sends too fast (in that order: a refused prompt takes no rate-limit slot)."""
        self._check_queue(key)
        await self._check_quota(key, actor)
        if actor is not None:
            settings = self.settings
            wait = await self.cluster.retry_after(
                actor.user_id, settings.user_rate_limit, settings.user_rate_window
            )
            if wait > 0:
                # Rounded up: "try again in 0 s" while still refused would be a lie.
                raise Refused(
                    f"You are sending messages too fast; try again in {math.ceil(wait)} s."
                )

    async def submit(
        self,
        key: ConversationKey,
        text: str,
        *,
        actor: Actor | None = None,
        parent: ConversationKey | None = None,
        attachments: Sequence[Attachment] = (),
        heard: Awaitable[object] | None = None,
    ) -> Reply:
        """Queue a prompt; returns at once with the observable :class:`Reply`.

        ``heard``: the front end's first visible sign that it heard the question (started when
        the question arrived): the LLM is asked only once it is done, so the sign comes first,
        or after :data:`HEARD_WAIT` seconds. Its failure is the front end's; it never fails the
        reply, nor does a refusal cancel it.

        ``attachments`` (:mod:`core.attachments`): the ones read go with the prompt to the model
        and stay in its user message; every file's note (a skipped one's reason) is a line of the
        reply's final note (:attr:`Reply.notes`, :func:`core.delivery.final_note`)."""
        # The store (and with it the shared rate limit) unreachable: say so; run nothing.
        with _reaching_store(key):
            prompt = await self.check(key, text, actor, parent, attachments)
            if self.cluster.shared and self._stop_listener is None:
                await self._listen_for_stops()
            conversation = await self.conversation(key, parent)
        stored = tuple(s for a in attachments if (s := a.stored()) is not None)
        notes = tuple(a.note for a in attachments if a.note)
        user = actor.user_id if actor is not None else None
        return self._enqueue(key, conversation, prompt, user, parent, stored, notes, heard=heard)

    def _enqueue(
        self,
        key: ConversationKey,
        conversation: Conversation,
        prompt: str,
        user: str | None,
        parent: ConversationKey | None,
        attachments: tuple[MessageAttachment, ...] = (),
        notes: tuple[str, ...] = (),
        replaces: str | None = None,
        heard: Awaitable[object] | None = None,
    ) -> Reply:
        """Queue a checked prompt (with its stored files) behind ``key``'s replies."""
        self._check_queue(key)  # again: other prompts may have been queued while this waited
        placeholder = Message("assistant", status=Status.PENDING)
        reply = Reply(key, placeholder, self.model_of(conversation))
        reply.prompt, reply.started, reply._on_end = prompt, self.clock.now(), self._ended
        reply.user, reply.replaces = user, replaces
        placeholder.id, placeholder.user = reply.id, user
        reply.attachments, placeholder.notes = attachments, notes
        if heard is not None:
            reply.heard = asyncio.ensure_future(heard)
            reply.heard.add_done_callback(_ignore_failure)
        self._queues.setdefault(key, []).append(reply)
        lock = self._locks.setdefault(key, asyncio.Lock())
        task = asyncio.create_task(self._run(reply, prompt, lock, parent), name=f"reply {key}")
        reply.task = task
        self._tasks[task] = reply
        task.add_done_callback(lambda t: self._task_done(reply, t))
        return reply

    # ----------------------------------------------------------------- reply controls

    async def find_reply(
        self, key: ConversationKey, reply_id: str
    ) -> tuple[Message | None, Message | None, bool]:
        """``(the assistant message with id reply_id, the latest assistant message, whether a
        prompt is queued or running here)`` of ``key``'s conversation as it is now (a running
        reply included); ``(None, None, busy)`` when there is no conversation.
        :class:`StoreUnavailable` when the store cannot be reached."""
        conversation = await self.get(key)
        for reply in self._queues.get(key, ()):
            if reply.id == reply_id:
                latest = reply.message if reply is self._queues[key][-1] else None
                return reply.message, latest, True
        if conversation is None:
            return None, None, self.is_busy(key)
        found = latest = None
        for message in reversed(conversation.messages):
            if message.role != "assistant":
                continue
            if latest is None:
                latest = message
            if message.id == reply_id:
                found = message
                break
        return found, latest, self.is_busy(key)

    async def regenerate(
        self,
        key: ConversationKey,
        reply_id: str,
        *,
        actor: Actor | None = None,
        parent: ConversationKey | None = None,
    ) -> Reply:
        """Ask the prompt of the reply ``reply_id`` again (with its files), the conversation's
        current model answering; the old answer leaves the history first (so the model does not
        see it). Returns the new :class:`Reply` at once, like :meth:`submit`.

        :class:`Refused` when ``actor`` is neither the asker nor an admin
        (:data:`ONLY_ASKER`), the reply is not the conversation's latest
        (:data:`NOT_LATEST`) or has not ended, it has left the history, or a limit applies
        (the access lists, the queue, the quotas, the per-user rate)."""
        reason = self.policy.refusal(actor, key.channel, parent.channel if parent else None)
        if reason:
            raise Refused(reason)
        with _reaching_store(key):
            found, latest, busy = await self.find_reply(key, reply_id)
            if found is None:
                raise Refused(NOT_IN_HISTORY)
            if not self.policy.may_control(actor, found.user):
                raise Refused(ONLY_ASKER)
            if found is not latest or (busy and found.status in FINAL):
                raise Refused(NOT_LATEST)
            if found.status not in FINAL:
                raise Refused("This reply is still being written: stop it first.")
            conversation = await self.conversation(key, parent)
            asked = _asked(conversation, reply_id)
            if asked is None:
                raise Refused(NOT_IN_HISTORY)
            await self._check_limits(key, actor)
            if self.cluster.shared and self._stop_listener is None:
                await self._listen_for_stops()
        # The reply stays the asker's (they may stop it), whoever pressed the button.
        reply = self._enqueue(
            key,
            conversation,
            asked.content,
            found.user,
            parent,
            asked.attachments,
            found.notes,
            replaces=reply_id,
        )
        refs = found.refs
        last = self._last.get(key)
        if not refs and last is not None and last.id == reply_id:
            refs = last.message.refs  # shown a moment ago: its save may still be under way
        reply.replaced_refs = refs
        return reply

    async def remember_messages(self, reply: Reply, refs: Sequence[str]) -> None:
        """Keep the platform messages ``reply`` was shown in (in order) with its turn, so that
        a regeneration, in this process or another, after a restart too, renders into all of
        them (:attr:`Message.refs <core.conversations.Message.refs>`). At once in this process;
        in the store by one more save of the conversation (as :meth:`set_model` saves). Never
        raises: a reply not remembered is regenerated into the clicked message only."""
        refs = tuple(refs)
        reply.message.refs = refs
        key = reply.key
        try:
            with _reaching_store(key):
                conversation = await self.get(key)
                if conversation is None:
                    return
                for message in reversed(conversation.messages):
                    if message.id == reply.id and message.role == "assistant":
                        message.refs = refs
                        await self.store.save(conversation)
                        return
        except Exception as exc:
            log.warning("%s: could not remember the reply's messages (%s)", key, type(exc).__name__)

    async def stop_reply(self, key: ConversationKey, reply_id: str) -> bool:
        """Stop the reply ``reply_id`` when it runs or waits its turn (here, or in another
        process sharing the store); False when it has ended (or is unknown). Unlike
        :meth:`stop`, never another reply of the conversation."""
        for reply in self._queues.get(key, ()):
            if reply.id == reply_id:
                if reply is self._queues[key][0]:
                    return await self.stop(key)
                return reply.cancel()
        if self.cluster.shared and key not in self._live:
            with _reaching_store(key):
                stored = await self.store.get(key)
            last = _latest_answer(stored)
            if last is not None and last.id == reply_id and last.status not in FINAL:
                return await self.stop(key)
        return False

    async def vote(self, key: ConversationKey, reply_id: str, user: str, vote: int) -> int:
        """``user``'s vote (:data:`core.feedback.UP`, :data:`~core.feedback.DOWN`) on the
        reply ``reply_id``: the same vote again withdraws it, the other replaces it. Returns
        the vote now kept (0: none). :class:`Refused` when the reply is not in the history (or
        has not ended), or the store keeps no votes."""
        store = self.store
        if not isinstance(store, FeedbackStore):
            raise Refused("Feedback is not kept by this store.")
        with _reaching_store(key):
            found, _, _ = await self.find_reply(key, reply_id)
            if found is None or found.status not in FINAL:
                raise Refused(
                    NOT_IN_HISTORY if found is None else "This reply is still being written."
                )
            before = await store.vote_of(key, reply_id, user)
            now = 0 if before == vote else vote
            await store.set_vote(key, reply_id, user, found.model or self.default_model, now)
        return now

    async def vote_of(self, key: ConversationKey, reply_id: str, user: str) -> int:
        """``user``'s vote on the reply ``reply_id`` (0: none, or a store that keeps none)."""
        store = self.store
        if not isinstance(store, FeedbackStore):
            return 0
        with _reaching_store(key):
            return await store.vote_of(key, reply_id, user)

    async def feedback_of(self, key: ConversationKey) -> dict[str, Counts] | None:
        """``key``'s votes per model; ``None`` when the store keeps none."""
        store = self.store
        if not isinstance(store, FeedbackStore):
            return None
        with _reaching_store(key):
            return await store.read_feedback(key)

    def _ended(self, reply: Reply) -> None:
        log_reply_end(log, reply, self.clock.now(), content=self.settings.log_content)

    def _check_queue(self, key: ConversationKey) -> None:
        """:class:`Refused` when ``MAX_QUEUED_PROMPTS`` prompts already wait behind the reply
        running in ``key``: a flood of prompts must not pile up without bound."""
        limit = self.settings.max_queued_prompts
        queue = self._queues.get(key)
        if queue is None or len(queue) <= limit:
            return
        if limit == 0:
            raise Refused("Please wait for the answer being written here (or stop it) first.")
        raise Refused(
            f"{limit} prompts are already waiting here, the most allowed; please wait for the "
            "answers (or stop them) and try again."
        )

    def _task_done(self, reply: Reply, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not reply.done:
            # Cancelled (stop, shutdown) before its first step: ``_run`` never ran, so none of its
            # handlers did either. End the reply here, or it would stay pending for ever.
            reply.message.finish(Status.CANCELLED)
            reply._finish()
            self._dequeue(reply)

    async def _run(
        self, reply: Reply, prompt: str, lock: asyncio.Lock, parent: ConversationKey | None
    ) -> None:
        reply_context(reply.key, reply.id, reply.model)  # this task's log records are the reply's
        try:
            async with lock, self.locks.lock(reply.key):
                await self._generate(reply, prompt, parent)
        except asyncio.CancelledError:
            # Stopped (or shut down) while still queued: end in a final state, quietly.
            if reply.message.status is Status.PENDING:
                reply.message.finish(Status.CANCELLED)
            reply._finish()
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            self._dequeue(reply)

    def _dequeue(self, reply: Reply) -> None:
        key = reply.key
        queue = self._queues.get(key, [])
        if reply in queue:
            queue.remove(reply)
        if not queue:
            self._queues.pop(key, None)
            self._locks.pop(key, None)

    async def _generate(self, reply: Reply, prompt: str, parent: ConversationKey | None) -> None:
        # Read under the lock: with a shared store this sees another process's last turn.
        conversation = await self.conversation(reply.key, parent)
        self._live[reply.key] = conversation
        try:
            await self._stream(reply, prompt, conversation)
        finally:
            if self._live.get(reply.key) is conversation:
                del self._live[reply.key]

    async def _stream(self, reply: Reply, prompt: str, conversation: Conversation) -> None:
        key = reply.key
        # A reply keeps the settings it started with, whatever a reload changes meanwhile.
        settings = self.settings
        for message in conversation.messages:
            if message.status not in FINAL:
                # Nothing else generates for this conversation now (we hold its lock): a reply
                # still open in the store was cut off by a crash or a restart.
                message.finish(Status.ERROR, INTERRUPTED)
        placeholder = reply.message
        reply.model = self.model_of(conversation)
        reply_context(key, reply.id, reply.model)
        if reply.replaces is not None and not _drop_answer(conversation, reply.replaces):
            # A newer turn came in since Regenerate was pressed: nothing is replaced.
            placeholder.finish(Status.ERROR, NOT_LATEST)
            reply._finish()
            return
        conversation.messages.append(Message("user", prompt, attachments=reply.attachments))
        history, content = _history_and_prompt(conversation, reply, settings.history_max_images)
        conversation.messages.append(placeholder)
        conversation.trim(settings.history_max_messages, settings.history_max_chars)
        try:
            await self.store.save(conversation)
        except Exception:
            # The store is unreachable (Redis down, disk full): say so rather than answer
            # a turn that would not be remembered.
            log.exception("could not save the conversation")  # which: the reply's log context
            reply.error_kind = "store"
            placeholder.finish(Status.ERROR, STORE_FAILED)
            reply._finish()
            return
        reply.stored = True
        self._last[key] = reply
        self._last.move_to_end(key)
        if len(self._last) > settings.max_conversations:
            self._last.popitem(last=False)
        parts: list[str] = []
        placeholder.parts = parts
        placeholder.status = Status.STREAMING
        reply._push("")
        frontend = key.platform
        metrics = self.metrics
        metrics.reply_started(frontend)
        started = self.clock.now()
        stream: ReplyStream | None = None
        error: str | None = None
        usage: Usage | None = None
        servers = self.tool_servers_of(conversation)
        tools = self._tools(servers, reply.model)
        try:
            await self._wait_heard(reply)
            # The first event apart (the fallbacks: the next model answers only before it).
            stream, events, first, client = await self._open(
                reply, content, history, conversation, settings, tools
            )
            steps = 0
            offered = tools  # this round's: none after the last round allowed
            while True:
                round_start = len(parts)
                try:
                    if steps == 0:
                        # Up to the first answer text, reasoning goes to the reply only (never
                        # to the conversation); the first text apart (for the first-token
                        # metric), then the same generator goes on.
                        pending = first
                        while pending is not None:
                            kind, delta = pending
                            if kind is TEXT:
                                reply.first_token = self.clock.now()
                                metrics.first_delta(frontend, self.clock.now() - started)
                                parts.append(delta)
                                reply._push(delta)
                                break
                            if kind == REASONING:
                                reply._reason(delta, self.clock.now())
                            elif kind == TOOL_CALL and offered:
                                self._called(reply, delta)
                            pending = await anext(events, None)
                    separate = steps > 0 and bool(parts) and not parts[-1].endswith("\n")
                    async for kind, delta in events:  # valid Unicode: llmconnect repairs each
                        if kind is TEXT:
                            if separate:  # a round's text after the last one's: a new paragraph
                                separate = False
                                parts.append("\n\n")
                            parts.append(delta)
                            reply._push(delta)
                        elif kind == REASONING:
                            reply._reason(delta, self.clock.now())
                        elif kind == TOOL_CALL and offered:
                            self._called(reply, delta)
                finally:
                    await stream.aclose()
                usage = _added(usage, stream.usage)
                calls = stream.tool_calls
                if not calls or not offered or stream.tools_dropped:
                    break
                results = await self._run_tools(reply, calls, servers, settings)
                placeholder.tool_steps += (
                    ToolStep(
                        "".join(parts[round_start:]),
                        tuple(c.to_dict() for c in calls),
                        tuple(r.to_dict() for r in results),
                        tuple(self._shown_name(c.name) for c in calls),
                    ),
                )
                steps += 1
                # The last round allowed: the model gets the results without tools, so it
                # answers in text.
                offered = [] if steps >= settings.tool_max_steps else tools
                stream = await client.send_tool_results(results, stream=True, tools=offered or None)
                events = stream.events()
            placeholder.finish(Status.COMPLETE)
        except LLMError as exc:
            log.warning("reply failed: %s", exc)  # which: the reply's log context
            placeholder.finish(Status.ERROR, exc.user_message)
            error = type(exc).__name__
        except asyncio.CancelledError:
            placeholder.finish(Status.CANCELLED)
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            reply.deltas, reply.error_kind = len(parts), error
            reply.usage = usage
            placeholder.model = reply.model  # the model that answered (or failed last)
            metrics.reply_ended(
                frontend,
                reply.model.split("/", 1)[0],
                str(placeholder.status),
                usage=usage,
                error=error,
            )
            conversation.trim(settings.history_max_messages, settings.history_max_chars)
            await self._count_usage(reply)
            try:
                await self._save_final(conversation, placeholder)
                if placeholder.error and placeholder.error.endswith(NOT_SAVED):
                    reply.error_kind = "not_saved"
            finally:
                # Final once stored: whoever awaits the reply (or shuts down) finds it saved.
                reply._finish()

    async def _wait_heard(self, reply: Reply) -> None:
        """Until the front end's first sign is shown, at most :data:`HEARD_WAIT` seconds (on the
        engine clock); the sign itself is never cancelled from here."""
        heard = reply.heard
        if heard is None or heard.done():
            return
        timer = asyncio.ensure_future(self.clock.sleep(HEARD_WAIT))
        try:
            await asyncio.wait((heard, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()

    # ----------------------------------------------------------------- usage and quotas

    async def _check_quota(self, key: ConversationKey, actor: Actor | None) -> None:
        """:class:`Refused`, saying when it resets, when the user or the conversation has used
        its tokens of this UTC day (``USER_DAILY_TOKENS``, ``CHANNEL_DAILY_TOKENS``)."""
        user = actor.user_id if actor is not None else None
        refusal = await quota_refusal(self.store, self.settings, wall_time(self.clock), key, user)
        if refusal:
            raise Refused(refusal)

    async def _count_usage(self, reply: Reply) -> None:
        """Add a finished reply's tokens to the store's counters, when its provider reported
        them (else nothing: no estimate). Shielded like the final save (``aclose`` waits for
        it); a failure is logged, never the reply's."""
        usage, store = reply.usage, self.store
        if usage is None or not isinstance(store, UsageStore):
            return
        tokens = Tokens(max(0, usage.input_tokens), max(0, usage.output_tokens))
        day = utc_day(wall_time(self.clock))

        async def add() -> None:
            try:
                await store.add_usage(reply.key, reply.user, day, reply.model, tokens)
            except Exception as exc:
                log.warning("could not count the reply's tokens (%s: %s)", type(exc).__name__, exc)

        counting = asyncio.ensure_future(add())
        self._saving.add(counting)
        counting.add_done_callback(self._saving.discard)
        try:
            await asyncio.shield(counting)
        except asyncio.CancelledError:
            # Shut down meanwhile: the count goes on (``aclose`` waits for it), and so must
            # the final save that follows.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]

    async def usage_of(self, key: ConversationKey, actor: Actor | None) -> UsageReport | None:
        """``key``'s token counts of this UTC day and in total (and ``actor``'s of the day);
        ``None`` when the store keeps none. :class:`StoreUnavailable` when it cannot be read."""
        store = self.store
        if not isinstance(store, UsageStore):
            return None
        with _reaching_store(key):
            return await store.read_usage(
                key, actor.user_id if actor else None, utc_day(wall_time(self.clock))
            )

    # ----------------------------------------------------------------- tools

    def _tools(self, servers: Sequence[str], model: str) -> list[Tool]:
        """The tools offered to ``model`` for a reply: the enabled servers' that are up, none
        for a model that cannot take tools."""
        specs = self.mcp.tools(servers)
        if not specs or not supports_tools(model, self.env):
            return []
        offered = []
        for spec in specs:
            try:
                offered.append(Tool(spec.wire_name, spec.description, dict(spec.schema)))
            except (ValueError, TypeError) as exc:  # a schema llmconnect cannot send
                log.warning("tool %s is not offered: %s", spec.name, exc)
        return offered

    def _shown_name(self, wire_name: str) -> str:
        spec = self.mcp.find(wire_name)
        if spec is not None:
            return spec.name
        # A tool no server has: shown as the model named it, in the ``server.tool`` form users
        # see everywhere else when it has the wire form.
        server, sep, tool = wire_name.partition("__")
        return f"{server}.{tool}" if sep and server and tool else wire_name

    def _called(self, reply: Reply, call: ToolCall) -> None:
        """A call the model made: its progress line, running."""
        reply.tool_progress.append(
            ToolProgress(self._shown_name(call.name), shown_arguments(call.arguments))
        )
        reply._tools_moved()

    async def _run_tools(
        self, reply: Reply, calls: Sequence[ToolCall], servers: Sequence[str], settings: Settings
    ) -> list[ToolResult]:
        """Run one round's calls at once (parallel calls concurrently), each bounded by
        ``TOOL_TIMEOUT``; their results in order. Cancelling (``/stop``) cancels them all."""
        progress = reply.tool_progress[len(reply.tool_progress) - len(calls) :]
        if len(progress) != len(calls):  # the events did not name them all: lines for all
            progress = [
                ToolProgress(self._shown_name(c.name), shown_arguments(c.arguments)) for c in calls
            ]
            reply.tool_progress += progress
            reply._tools_moved()

        async def run(call: ToolCall, line: ToolProgress) -> ToolResult:
            try:
                spec, refused = self.mcp.check(call.name, call.arguments, allowed=servers)
                if call.error is not None:
                    result = call.result(call.error, is_error=True)
                elif refused is not None or spec is None:
                    text = refused.text if refused is not None else "Unknown tool."
                    result = call.result(text, is_error=True)
                elif (needs := self.mcp.needs_approval(spec)) and not await self._approved(
                    reply, line, settings
                ):
                    seconds = settings.tool_confirm_timeout
                    why = DENIED if line.state == "denied" else NOT_APPROVED
                    line.state = "denied"
                    return call.result(why.format(name=spec.name, seconds=seconds), is_error=True)
                else:
                    got = await self.mcp.call(
                        call.name,
                        call.arguments,
                        allowed=servers,
                        time_limit=settings.tool_timeout,
                        max_chars=settings.tool_max_result_chars,
                        # Approved here by the asker's button; else the manager's own approver
                        # (the terminal's y/N) is asked for a confirm server's call.
                        approved=needs,
                    )
                    result = call.result(got.text, is_error=got.is_error)
                line.state = "error" if result.is_error else "ok"
                return result
            except asyncio.CancelledError:
                line.state = "error"
                raise
            finally:
                reply._tools_moved()

        return list(
            await asyncio.gather(*(run(c, p) for c, p in zip(calls, progress, strict=True)))
        )

    async def _approved(self, reply: Reply, line: ToolProgress, settings: Settings) -> bool:
        """Wait for the asker's Approve or Deny of the call ``line`` shows (its buttons are the
        reply's while it waits: :func:`core.controls.approval_controls`), at most
        ``TOOL_CONFIRM_TIMEOUT`` seconds of the engine clock; True when approved. A denial
        leaves ``line`` ``denied``; a time-out ``waiting`` (the caller says which it was)."""
        approval: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        line.state, line.approval = "waiting", approval
        reply._tools_moved()
        timer = asyncio.ensure_future(self.clock.sleep(settings.tool_confirm_timeout))
        try:
            await asyncio.wait((approval, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not approval.done():
                approval.cancel()  # timed out or stopped: a late press finds it answered
        if approval.cancelled() or not approval.result():
            if not approval.cancelled():
                line.state = "denied"
            return False
        line.state = "running"
        reply._tools_moved()
        return True

    async def answer_approval(
        self, key: ConversationKey, reply_id: str, call: int, actor: Actor | None, approve: bool
    ) -> None:
        """Approve (``approve``) or deny the waiting call number ``call`` (its index among the
        reply's progress lines) of the reply ``reply_id`` running here. Approve is the asker's
        alone (an admin may not run a tool on someone else's behalf); Deny the asker's or an
        admin's, like Stop. :class:`Refused` (:data:`ONLY_ASKER`, :data:`NOT_WAITING`)
        otherwise."""
        reply = next((r for r in self._queues.get(key, ()) if r.id == reply_id), None)
        progress = reply.tool_progress if reply is not None else []
        line = progress[call] if 0 <= call < len(progress) else None
        if reply is None or line is None or not line.waiting or line.approval is None:
            raise Refused(NOT_WAITING)
        allowed = (
            actor is None or (reply.user is not None and actor.user_id == reply.user)
            if approve
            else self.policy.may_control(actor, reply.user)
        )
        if not allowed:
            raise Refused(ONLY_ASKER)
        line.approval.set_result(approve)

    async def _open(
        self,
        reply: Reply,
        prompt: str | list[Part],
        history: list[dict[str, Any]],
        conversation: Conversation,
        settings: Settings,
        tools: Sequence[Tool] = (),
    ) -> tuple[ReplyStream, AsyncIterator[tuple[str, Any]], tuple[str, Any] | None, AsyncAPIClient]:
        """The reply's stream, its events and the first one from the conversation's model or, when it is
        unavailable before its first token, the first fallback model that answers
        (:mod:`core.fallback`); each model with its own ``MODEL_OPTIONS``."""
        system = self.system_of(conversation)
        clients: list[AsyncAPIClient] = []

        async def start(model: str) -> ReplyStream:
            reply.model = model
            reply_context(reply.key, reply.id, model)
            client = APIClientFactory.create(
                model=model,
                messages=history,
                system=system,
                http_client=self.http_client,
                timeouts=settings.timeouts(),
                retry=settings.retry_policy(),
                env=self.env,
                max_event_bytes=settings.llm_max_event_bytes,
                **options_for(model, settings.model_options, self.options),
            )
            clients.append(client)
            return await client.chat(prompt, stream=True, tools=tools or None)

        chain = [reply.model, *(m for m in self.fallback_models if m != reply.model)]
        unavailable: list[str] = []
        try:
            stream, events, first = await open_reply(chain, start, unavailable)
            return stream, events, first, clients[-1]
        finally:
            if unavailable:
                reply.message.unavailable = tuple(unavailable)

    async def _save_final(self, conversation: Conversation, reply: Message) -> None:
        """Save a finished turn; a shutdown that cancels meanwhile does not cut the save short
        (``aclose`` waits for it before closing the store)."""
        save = asyncio.ensure_future(self._merge_and_save(conversation, reply))
        self._saving.add(save)
        save.add_done_callback(self._saving.discard)
        await asyncio.shield(save)

    async def _merge_and_save(self, conversation: Conversation, reply: Message) -> None:
        try:
            if self.locks.shared:
                # Another process may have changed the model or system prompt meanwhile.
                stored = await self.store.get(conversation.key)
                if stored is not None:
                    conversation.model, conversation.system = stored.model, stored.system
                    conversation.tools = stored.tools
            await self.store.save(conversation)
        except Exception as exc:
            # The user has seen the answer: it must not look "complete" (remembered) when the
            # next prompt will not have it in its history. Said on the reply, logged once.
            log.error(
                "could not save the finished reply (%s: %s); it is marked not saved",
                type(exc).__name__,
                exc,
            )
            before = reply.error or ("Stopped." if reply.status is Status.CANCELLED else "")
            reply.finish(Status.ERROR, f"{before} {NOT_SAVED}".strip())

    async def stop(self, key: ConversationKey) -> bool:
        """Cancel the generation of ``key`` that runs (or is next); False when there is none.

        Prompts queued behind it still run, in order. With processes sharing a store, the
        generation may run in another process: it is asked to stop, and this waits (up to
        :data:`REMOTE_STOP_WAIT` seconds) until it has ended and saved its turn.
        """
        queue = self._queues.get(key)
        reply = queue[0] if queue else None
        if key not in self._live and self.cluster.shared and await self._stopped_elsewhere(key):
            return True
        if reply is None or reply.task is None or not reply.cancel():
            return False
        await asyncio.wait([reply.task])
        return True

    async def _stopped_elsewhere(self, key: ConversationKey) -> bool:
        """Another process holds the conversation (ours, if any, waits behind it): ask it to
        stop and wait until it let go. False when none does (or the store is unreachable)."""
        try:
            if not await self.cluster.running(key):
                return False
            await self.cluster.request_stop(key)
            poll = REMOTE_STOP_POLL
            for _ in range(int(REMOTE_STOP_WAIT / poll)):
                if not await self.cluster.running(key):
                    return True
                await self.clock.sleep(poll)
        except Exception as exc:
            log.warning("%s: could not reach the other processes (%s)", key, type(exc).__name__)
            return False
        log.warning("%s: asked another process to stop; it still runs", key)
        return True

    async def _listen_for_stops(self) -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(self.cluster.listen_stops(self._stop_here, ready))
        self._stop_listener = task
        # Subscribed before this process takes any lock: no stop request can slip past.
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait(
            [waiter, task], timeout=REMOTE_STOP_WAIT, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if not ready.is_set():
            self._stop_listener = None  # the next prompt tries again
            if task.done():
                task.result()  # raises why (Redis away)
            task.cancel()
            raise TimeoutError("no answer from the store's pub/sub")

    def _stop_here(self, key: ConversationKey) -> None:
        """Another process asked: stop ``key``'s generation if this process runs it."""
        queue = self._queues.get(key)
        if key in self._live and queue:
            queue[0].cancel()

    async def reset(self, key: ConversationKey) -> None:
        """Stop what runs, drop what waits, forget the history (model and system prompt stay).

        Every reply of ``key`` in this process ends ``cancelled``: the running one with its text
        so far, the queued ones without running. A generation running in another process (shared
        store) is asked to stop, as by :meth:`stop`.
        """
        replies = list(self._queues.get(key, ()))
        for reply in replies:  # all at once: none starts when the one ahead of it ends
            reply.cancel()
        if replies:
            await asyncio.wait([r.task for r in replies if r.task is not None])
        await self.stop(key)
        with _reaching_store(key):
            if self.locks.shared and key not in self._live:
                # A generation in another process saves its turn when it ends: wait for it.
                async with self.locks.lock(key):
                    await self._clear(key)
            else:
                await self._clear(key)

    async def _clear(self, key: ConversationKey) -> None:
        conversation = await self.conversation(key)
        conversation.messages.clear()
        self._last.pop(key, None)
        await self.store.save(conversation)

    async def aclose(self) -> None:
        """Shutdown: cancel every generation; each ends in a final state; the MCP servers
        close after them (a generation's tool call ends first)."""
        await self.catalogue.aclose()
        tasks = list(self._tasks)
        for task in tasks:
            # A task whose reply is final only releases its lock now: let it.
            if not self._tasks[task].done:
                task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._saving:
            await asyncio.wait(self._saving)
        listener, self._stop_listener = self._stop_listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener])
        await self.mcp.aclose()
        if self._owns_store:
            await close_store(self.store)


def _ignore_failure(future: asyncio.Future[Any]) -> None:
    """A front end's sign that failed is its own affair (it logs it): read it, quietly."""
    if not future.cancelled() and future.exception() is not None:
        log.debug("a front end's first sign failed: %r", future.exception())


@contextlib.contextmanager
def _reaching_store(key: ConversationKey) -> Iterator[None]:
    """Turn any failure to reach the store (Redis away, a disk error) into
    :class:`StoreUnavailable`; a refusal passes through as it is."""
    try:
        yield
    except Refused:
        raise
    except Exception as exc:
        log.warning(
            "%s: the conversation store is unreachable (%s: %s)", key, type(exc).__name__, exc
        )
        raise StoreUnavailable() from None


def _latest_answer(conversation: Conversation | None) -> Message | None:
    if conversation is not None:
        for message in reversed(conversation.messages):
            if message.role == "assistant":
                return message
    return None


def _asked_at(conversation: Conversation, reply_id: str) -> int | None:
    """The index of the user message the reply ``reply_id`` answers, when that reply is the
    latest one (by identity, not equality: two turns may look alike)."""
    answer: int | None = None
    for index in range(len(conversation.messages) - 1, -1, -1):
        message = conversation.messages[index]
        if answer is None:
            if message.role == "assistant":
                if message.id != reply_id:
                    return None
                answer = index
        elif message.role == "user":
            return index
    return None


def _asked(conversation: Conversation, reply_id: str) -> Message | None:
    """The user message the reply ``reply_id`` answers, when that reply is the latest one."""
    index = _asked_at(conversation, reply_id)
    return None if index is None else conversation.messages[index]


def _drop_answer(conversation: Conversation, reply_id: str) -> bool:
    """Remove the latest turn (its user message and answer) when its answer is ``reply_id`` and
    has ended; False (nothing removed) otherwise."""
    index = _asked_at(conversation, reply_id)
    last = _latest_answer(conversation)
    if index is None or last is None or last.status not in FINAL:
        return False
    del conversation.messages[index:]
    return True


def _pointed_at(spec: ProviderSpec, env: Mapping[str, str], default_provider: str) -> bool:
    """A keyless provider is offered when it is echo (offline, always there), has its
    ``FOO_BASE_URL`` set, or serves the default model: a local server (ollama, lmstudio) is not
    offered merely because it needs no key (it is most often not running)."""
    return (
        spec.protocol == "echo"
        or bool(env.get(base_url_variable(spec.name)))
        or spec.name == default_provider
    )


def _nothing_to_answer(attachments: Sequence[Attachment]) -> str:
    """The refusal of a message with no text and no file that was read: its files' lines (why
    each was skipped), else the help."""
    notes = [a.note for a in attachments if a.note]
    if not notes:
        return HELP_TEXT
    return "\n".join([*notes, "No text and no file I can read: nothing to answer."])


def _llm_content(parts: list[HistoryPart]) -> str | list[Part]:
    """A turn's neutral parts as llmconnect's: text alone as a ``str``."""
    if len(parts) == 1 and parts[0][0] == "text":
        return parts[0][1]
    out: list[Part] = []
    for part in parts:
        if part[0] == "text":
            out.append(part[1])
        elif part[0] == "image":
            out.append(Image(part[1], part[2], name=part[3]))
        else:
            out.append(Document(part[1], name=part[2]))
    return out


def _history_and_prompt(
    conversation: Conversation, reply: Reply, max_images: int
) -> tuple[list[dict[str, Any]], str | list[Part]]:
    """The history sent to the model and the prompt's content, the user turn just appended
    being the last one; images for the last ``max_images`` turns that have images (the prompt's
    own always: ``HISTORY_MAX_IMAGES=0`` is "only the current message's"). The bytes of older
    images are dropped from the conversation for good. An assistant reply that used tools is
    its rounds (the text and calls, then the results) and then its last text."""
    keep = max(1, max_images) if any(a.kind == "image" for a in reply.attachments) else max_images
    sent = conversation.sent_messages()
    turns = conversation.llm_history_parts(keep)
    conversation.drop_old_images(keep)
    history: list[dict[str, Any]] = []
    for message, (role, parts) in zip(sent[:-1], turns[:-1], strict=True):
        if not message.tool_steps:
            history.append({"role": role, "content": _llm_content(parts)})
            continue
        for step in message.tool_steps:
            calls = [ToolCall.from_dict(c) for c in step.calls]
            history.append(assistant_turn(step.text.strip(), calls))
            results = [ToolResult.from_dict(r) for r in step.results]
            if results:
                history.append(tool_results_turn(results))
        # A reply stopped while its tools ran has no text after them: say so, as turns alternate.
        history.append({"role": "assistant", "content": message.final_text.strip() or "(stopped)"})
    return history, _llm_content(turns[-1][1])


def _added(total: Usage | None, more: Usage | None) -> Usage | None:
    """Token usage over the rounds of a reply (``None`` while no round reported any)."""
    if more is None:
        return total
    if total is None:
        return more
    return Usage(total.input_tokens + more.input_tokens, total.output_tokens + more.output_tokens)


def _visible(char: str) -> bool:
    # Cf: format characters (zero-width space/joiner, direction marks, BOM) show nothing.
    return not char.isspace() and unicodedata.category(char) != "Cf"


def _allows(entry: str, model: str) -> bool:
    """An allow-list entry: ``provider/model`` exactly, ``provider`` (all of its models), or a
    prefix ending in ``/*`` (``groq/*``, ``openrouter/meta-llama/*``)."""
    entry = entry.strip()
    if "/" not in entry:
        return model.split("/", 1)[0] == entry
    if entry.endswith("/*"):
        return model.startswith(entry[:-1])
    return model == entry


def _list_timeouts(settings: Settings) -> Timeouts:
    """A model list's: the connect timeout, at most 15 s without an answer."""
    return Timeouts(connect=settings.llm_connect_timeout, idle=min(settings.llm_idle_timeout, 15.0))


def _fallbacks(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """``LLMCONNECT_FALLBACK_MODELS`` as ``provider/model`` names (a bare provider: its default
    model); :class:`LLMError` for an unknown provider."""
    return [str(parse_model(name, env=env)) for name in settings.llmconnect_fallback_models]
