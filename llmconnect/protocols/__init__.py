"""Wire protocols: one module per protocol, each a ``stream_reply(call, state)`` async generator.

A protocol turns a :class:`Call` into text deltas (plain ``str``) and records the finish reason and
token usage on a :class:`ReplyState`. Reasoning ("thinking") is yielded as a :class:`Thought`, a
``str`` subclass, so the answer's deltas stay plain strings and the client tells the two apart with
one class test per delta. The per-chunk path stays on bytes, dicts and strings; typed
objects are built once per reply by the client.
"""

from __future__ import annotations

import asyncio
import base64
import weakref
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from json import JSONDecodeError, loads
from time import monotonic
from types import AsyncGeneratorType
from typing import Any, Final

import httpx

from ..errors import (
    EventTooLargeError,
    LLMError,
    LLMTimeoutError,
    StreamInterruptedError,
    TimeLimitError,
)
from ..sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder
from ..tools import Tool
from ..transport import Timeouts, open_stream, shared_http_client

__all__ = [
    "END",
    "PROTOCOLS",
    "Call",
    "EventFn",
    "JsonFn",
    "Pieces",
    "RawCall",
    "ReplyState",
    "StreamFn",
    "Thought",
    "b64",
    "data_url",
    "split_think",
    "stream_sse",
]


@dataclass(slots=True)
class Call:
    """Everything one request needs; built per reply by the client."""

    provider: str
    model: str
    base_url: str
    api_key: str | None = field(repr=False)  # a secret: never in a repr
    #: Conversation turns, ``{"role": "user"|"assistant", "content": ...}``, ending with the user
    #: turn; a content is a ``str`` or a list of ``str``/``Image``/``Document`` parts the model
    #: takes (``llmconnect.parts.prepare_messages`` converted the rest), mapped per protocol.
    messages: list[dict[str, Any]]
    system: str | None
    options: dict[str, Any]
    http: httpx.AsyncClient | None
    timeouts: Timeouts
    stream_usage: bool = True
    #: When the whole reply must be over (``time.monotonic()``), from ``timeouts.max_duration``.
    deadline: float | None = None
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    #: Tools offered to the model (``None``: none; the request carries no tool field). When set,
    #: ``messages`` may hold tool turns (``tool_calls`` on an assistant turn, ``role: "tool"``
    #: turns with ``tool_results``), each protocol encodes them its own way.
    tools: list[Tool] | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.api_key,) if self.api_key else ()


@dataclass(slots=True)
class ReplyState:
    """Filled in while streaming; read by the client once the stream ends."""

    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    #: Inline ``<think>`` at the start of the content (:func:`split_think`): ``THINK_UNDECIDED``
    #: until the content shows whether it opens with the tag, ``THINK_INSIDE`` within it,
    #: ``THINK_DONE`` after it (or when there was none): from then on content is plain text.
    think: int = 0
    #: Tool calls still arriving, by the protocol's index (OpenAI-compatible ``tool_calls[i]``,
    #: Anthropic's content block index); ``None`` until the first one starts.
    calls: dict[int, RawCall] | None = None
    #: ``think`` as it was before :data:`THINK_CALLS` (OpenAI-compatible calls being read).
    think_before_calls: int = 0
    #: Anthropic ``thinking``/``redacted_thinking`` blocks of a reply given tools, kept whole
    #: (with their signatures) for its first tool call: Anthropic wants them back with the calls.
    blocks: list[dict[str, Any]] | None = None
    #: Content held back by :func:`split_think` (what may be the start of ``<think>`` or
    #: ``</think>``); the client hands it out when the stream ends (:meth:`held_back`).
    held: str = ""

    def held_back(self) -> str:
        """What :func:`split_think` still holds at the end of the stream, as text or as a
        :class:`Thought` (a reply that never closed its ``<think>``)."""
        held, self.held = self.held, ""
        if not held:
            return ""
        return Thought(held) if self.think == THINK_INSIDE else held


@dataclass(slots=True, eq=False)
class RawCall:
    """A tool call as a protocol read it: the client makes it a :class:`~llmconnect.ToolCall`
    once it is complete (arguments parsed once, never per chunk)."""

    id: str
    name: str
    #: The JSON text of the arguments, in the pieces it arrived in.
    pieces: list[str] = field(default_factory=list)
    #: Arguments sent whole, as an object (Gemini, a non-streamed reply).
    value: dict[str, Any] | None = None
    signature: str | None = None


class Pieces(str):
    """Several things one event carried, in order: text (``str``), reasoning (:class:`Thought`)
    and finished tool calls (:class:`RawCall`). Yielded like a delta (its own ``str`` value means
    nothing); rare, so the plain-text path keeps its one class test per delta."""

    pieces: list[str | RawCall]

    @classmethod
    def of(cls, pieces: list[str | RawCall]) -> Pieces:
        made = cls("<pieces>")
        made.pieces = pieces
        return made


def finished_calls(state: ReplyState, before: str | None = None) -> str | None:
    """Every call of ``state.calls`` (they are complete: the reply finished, or the next one
    began), in index order, after ``before`` (the event's text, if any): a :class:`Pieces`."""
    if state.think == THINK_CALLS:
        state.think = state.think_before_calls
    calls = state.calls
    if not calls:
        return before
    pieces: list[str | RawCall] = [before] if before else []
    pieces += [calls[index] for index in sorted(calls)]
    calls.clear()
    return Pieces.of(pieces)


class Thought(str):
    """A piece of the model's reasoning (not of its answer), yielded by a protocol like text.

    ``then`` is answer text that arrived in the same event, after the reasoning (a chunk that
    closes ``</think>`` and goes on with the answer); ``""`` when there is none.
    """

    then: str = ""

    @classmethod
    def of(cls, reasoning: str, then: str = "") -> str | None:
        """``reasoning`` as a Thought followed by ``then``; just ``then`` (or None) when there is
        no reasoning."""
        if not reasoning:
            return then or None
        thought = cls(reasoning)
        if then:
            thought.then = then
        return thought


THINK_UNDECIDED: Final = 0
THINK_INSIDE: Final = 1
THINK_DONE: Final = 2
#: Just after ``</think>``: the whitespace that separates it from the answer is dropped.
THINK_AFTER: Final = 3
#: OpenAI-compatible tool calls are being read: the next content closes them. Set as ``think``
#: so the text path, which tests ``think`` already, pays nothing more per chunk.
THINK_CALLS: Final = 4
_OPEN = "<think>"
_CLOSE = "</think>"


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def split_think(state: ReplyState, content: str) -> str | None:
    """Content of a reply that may open with ``<think>…</think>`` (Ollama, Qwen, DeepSeek-R1
    distills): the reasoning as a :class:`Thought`, the rest as text.

    Only a tag at the very start of the content counts (after optional whitespace); a tag split
    across chunks at any character (``<th`` + ``ink>``) is held until it is whole. Called only
    while ``state.think`` is not ``THINK_DONE``: once the content is known to be plain, a protocol
    returns it as it is.
    """
    text = state.held + content
    state.held = ""
    if state.think == THINK_AFTER:
        text = text.lstrip()
        if text:
            state.think = THINK_DONE
        return text or None
    if state.think == THINK_UNDECIDED:
        start = text.lstrip()
        if not start or (len(start) < len(_OPEN) and _OPEN.startswith(start)):
            state.held = text  # whitespace, or what may become "<think>": wait for more
            return None
        if not start.startswith(_OPEN):
            state.think = THINK_DONE
            return text
        state.think = THINK_INSIDE
        text = start[len(_OPEN) :]
    end = text.find(_CLOSE)
    if end < 0:
        keep = _partial_suffix(text, _CLOSE)
        if keep:
            text, state.held = text[:-keep], text[-keep:]
        return Thought(text) if text else None
    then = text[end + len(_CLOSE) :].lstrip()
    state.think = THINK_DONE if then else THINK_AFTER
    return Thought.of(text[:end], then)


StreamFn = Callable[[Call, ReplyState], AsyncGenerator[str, None]]


class _End(str):
    __slots__ = ()


#: Returned by an :data:`EventFn` for the event that says the reply is over (``[DONE]``,
#: ``message_stop``). A non-empty ``str`` so the hot loop tests one truthiness, then identity.
END: Final = _End("<end>")

#: One SSE event ``(call, state, event_name, data)`` → its text, ``None``, or :data:`END`.
EventFn = Callable[[Call, ReplyState, str, str], "str | None"]
#: A whole JSON body ``(call, state, parsed)`` → the reply's text; sets ``state.finish_reason``
#: when the body is a reply, else leaves it ``None`` (or raises for an error body).
JsonFn = Callable[[Call, ReplyState, Any], str]


class _Watch:
    """The idle timeout and the time limit of one streaming request, on one timer.

    The idle clock restarts on each read that completes a content event (the stream loop stores
    :attr:`last`; no timer is touched per event). The timer wakes at the earliest moment either
    limit could be reached; if an event came meanwhile it just sleeps again. When a limit is
    reached while the stream waits for the network, the task reading it is cancelled and
    :meth:`raise_for` turns that into the error (as ``asyncio.timeout`` does). While the caller
    holds a delta (the generator is suspended at ``yield``) nobody is cancelled: the idle clock
    restarts (the caller, not the provider, is slow), and a passed time limit is raised at the
    next read (:attr:`expired`) or, if the stream is silent by then, by a check every
    ``_RECHECK`` s.
    """

    __slots__ = (
        "_cancelling",
        "_gen",
        "_handle",
        "_loop",
        "_task",
        "deadline",
        "expired",
        "fired",
        "idle",
        "last",
    )

    _RECHECK = 0.05

    def __init__(self, idle: float, deadline: float | None) -> None:
        self.idle = idle
        self.deadline = deadline
        #: The time limit passed while the caller held a delta.
        self.expired = False
        #: ``"idle"`` or ``"total"`` once this watch cancelled the task.
        self.fired: str | None = None
        self.last = 0.0
        self._gen: weakref.ref[AsyncGeneratorType[str, None]] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._loop = asyncio.get_running_loop()

    def bind(self, gen: AsyncGenerator[str, None]) -> None:
        assert isinstance(gen, AsyncGeneratorType)  # ag_running tells where it is suspended
        self._gen = weakref.ref(gen)

    def start(self) -> None:
        """Arm; called from inside the generator's first step (the current task reads it)."""
        self._task = asyncio.current_task()
        self._cancelling = self._task.cancelling() if self._task else 0
        self.last = monotonic()
        self._arm(self.last)

    def _arm(self, now: float) -> None:
        due = self.last + self.idle
        if self.deadline is not None and self.deadline < due:
            due = self.deadline
        self._handle = self._loop.call_later(max(due - now, 0.0), self._check)

    def _check(self) -> None:
        now = monotonic()
        if self.deadline is not None and now >= self.deadline:
            kind = "total"
        elif now - self.last >= self.idle:
            kind = "idle"
        else:
            self._arm(now)
            return
        gen = self._gen() if self._gen else None
        if gen is None or self._task is None:
            return
        if not gen.ag_running:
            # The caller holds a delta: the stream is not what is slow.
            if kind == "idle":
                self.last = now
                self._arm(now)
            else:
                self.expired = True
                self._handle = self._loop.call_later(self._RECHECK, self._check)
            return
        self.fired = kind
        self._handle = None
        self._task.cancel()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def raise_for(self, call: Call) -> None:
        """After a ``CancelledError``: raise the timeout it stands for if this watch caused it
        (and nobody else cancelled the task meanwhile); else return, to let it propagate."""
        if self.fired is None or self._task is None:
            return
        if self._task.uncancel() > self._cancelling:
            return  # also cancelled from outside: that wins
        self.raise_expired(call, self.fired)

    def raise_expired(self, call: Call, kind: str) -> None:
        if kind == "total":
            limit = call.timeouts.max_duration or 0.0
            raise TimeLimitError(
                f"{call.provider}: the reply ran past its time limit ({limit:g} s)",
                provider=call.provider,
                user_message=f"The reply was cut at the time limit ({limit:g} s).",
            )
        raise LLMTimeoutError(
            f"{call.provider}: no content for {self.idle:g} s (keep-alives and partial lines "
            "do not count)",
            provider=call.provider,
        )


def stream_sse(
    call: Call,
    state: ReplyState,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    on_event: EventFn,
    on_json: JsonFn,
    *,
    pings: bool = False,
) -> AsyncGenerator[str, None]:
    """POST ``body`` and yield the text of each SSE event, as ``on_event`` reads it.

    The one streaming loop of every SSE protocol: bytes → :class:`SSEDecoder` → ``on_event`` →
    ``str``. A stream that ends without its end event and without a finish reason was cut off.
    A server that ignores ``stream: true`` and answers one JSON body is read with ``on_json``.
    Bounded by the idle timeout and the time limit (:class:`_Watch`) and by
    ``call.max_event_bytes`` per event (the JSON body counts as one event). ``pings``: the
    protocol sends ``event: ping`` keep-alives (Anthropic), which do not count as content.
    """
    watch = _Watch(call.timeouts.idle, call.deadline)
    gen = _stream_sse(call, state, url, headers, body, on_event, on_json, watch, pings)
    watch.bind(gen)
    return gen


async def _stream_sse(
    call: Call,
    state: ReplyState,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    on_event: EventFn,
    on_json: JsonFn,
    watch: _Watch,
    pings: bool,
) -> AsyncGenerator[str, None]:
    watch.start()
    try:
        async with open_stream(
            call.http or shared_http_client(),
            call.provider,
            "POST",
            url,
            headers=headers,
            json_body=body,
            timeouts=call.timeouts,
            secrets=call.secrets,
            watched=True,  # the watch bounds the head and every read: no timer per read
        ) as response:
            if _is_json(response.headers.get("content-type", "")):
                whole = await _whole_reply(call, state, response, on_json)
                watch.stop()
                if whole:
                    yield whole
                return
            decoder = SSEDecoder(call.max_event_bytes)
            now = monotonic  # the loop's clock on asyncio; a plain C call (loop.time is not)
            async for raw in response.aiter_bytes():
                events = decoder.feed(raw)
                if not events:
                    continue  # a comment, a partial line: not content, the idle clock runs on
                if watch.expired:
                    watch.raise_expired(call, "total")
                if not pings or _content(events):
                    watch.last = now()
                for event, data in events:
                    text = on_event(call, state, event, data)
                    if text:
                        if text is END:
                            watch.stop()
                            return
                        yield text
                        if watch.expired:  # one read can hold many events: a slow caller's
                            watch.raise_expired(call, "total")  # limit is checked per event
            watch.stop()
            for event, data in decoder.flush():
                text = on_event(call, state, event, data)
                if text:
                    if text is END:
                        return
                    yield text
    except asyncio.CancelledError:
        watch.raise_for(call)
        raise
    except (AttributeError, TypeError, KeyError, IndexError, ValueError):
        # A chunk that is JSON but not the shape the protocol reads (``data: 1``, a list...):
        # the provider's fault, reported like any malformed chunk (no cost per chunk: a try).
        raise StreamInterruptedError(
            f"{call.provider}: malformed chunk in stream", provider=call.provider
        ) from None
    except EventTooLargeError as exc:
        if exc.provider is not None:
            raise
        raise EventTooLargeError(  # from the decoder, which does not know the provider
            f"{call.provider}: {exc.message}", provider=call.provider, user_message=exc.user_message
        ) from None
    finally:
        watch.stop()
    if state.finish_reason is None:
        raise _final(
            StreamInterruptedError(
                f"{call.provider}: the stream ended before the reply was complete",
                provider=call.provider,
            )
        )


def _content(events: list[tuple[str, str]]) -> bool:
    """Whether a read completed anything but Anthropic's ``ping`` keep-alive events."""
    return any(name != "ping" for name, _ in events)


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _final(exc: LLMError) -> LLMError:
    """``exc``, never retried: a 200 whose body was read to the end is paid for; asking again
    would pay again for the same answer."""
    exc.retryable = False
    return exc


async def _whole_reply(
    call: Call, state: ReplyState, response: httpx.Response, on_json: JsonFn
) -> str:
    """The text of a whole JSON body answering a streaming request (a proxy that ignores
    ``stream: true``): read at most ``call.max_event_bytes``, then parsed once."""
    pieces: list[bytes] = []
    size = 0
    async for raw in response.aiter_bytes():
        size += len(raw)
        if size > call.max_event_bytes:
            raise EventTooLargeError(
                f"{call.provider}: a JSON reply of over {call.max_event_bytes} bytes",
                provider=call.provider,
                user_message=(
                    "The provider sent a reply piece larger than allowed "
                    f"({call.max_event_bytes} bytes)."
                ),
            )
        pieces.append(raw)
    try:
        payload = loads(b"".join(pieces))
    except (JSONDecodeError, UnicodeDecodeError):
        payload = None
    try:
        text = on_json(call, state, payload) if isinstance(payload, dict | list) else ""
    except LLMError as exc:
        raise _final(exc) from None
    if state.finish_reason is None:
        raise _final(
            StreamInterruptedError(
                f"{call.provider}: a JSON body that is not a reply", provider=call.provider
            )
        )
    return text


def _load() -> dict[str, StreamFn]:
    from . import anthropic, echo, gemini, openai

    return {
        "openai": openai.stream_reply,
        "anthropic": anthropic.stream_reply,
        "gemini": gemini.stream_reply,
        "echo": echo.stream_reply,
    }


PROTOCOLS: dict[str, StreamFn] = {}


def protocol(name: str) -> StreamFn:
    if not PROTOCOLS:
        PROTOCOLS.update(_load())
    return PROTOCOLS[name]


def b64(data: bytes) -> str:
    """``data`` in base64 (ASCII), as every protocol sends bytes."""
    return base64.b64encode(data).decode("ascii")


def data_url(media_type: str, data: bytes) -> str:
    """A ``data:`` URL (OpenAI's ``image_url`` and ``file_data``)."""
    return f"data:{media_type};base64,{b64(data)}"
