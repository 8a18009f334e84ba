"""``APIClientFactory`` and ``AsyncAPIClient``: the library's entry points.

::

    client = APIClientFactory.create(model="groq/llama-3.3-70b-versatile", messages=history)
    reply = await client.chat("Hello")                       # the whole reply
    async for delta in await client.chat("More", stream=True):  # text deltas as they arrive
        print(delta, end="")

    async with await client.chat("And?", stream=True) as reply:  # a ReplyStream
        async for delta in reply:
            print(delta, end="")
    print(reply.finish_reason, reply.usage)                  # this reply's outcome

``chat(..., stream=True)`` returns a :class:`ReplyStream`: an async iterator of the reply's text
deltas that carries, once the reply is complete, its ``text``, ``finish_reason`` and ``usage``.

Reasoning models also stream their thinking (``reasoning_content``/``reasoning`` deltas, an inline
``<think>…</think>`` at the start of the content, Anthropic ``thinking`` blocks, Gemini ``thought``
parts). The text iterator leaves it out; ``stream.events()`` yields every piece as a
``(kind, text)`` tuple, ``kind`` being ``"text"`` or ``"reasoning"`` (more kinds may come: ignore
the ones you do not know), and ``stream.reasoning`` holds all of it once the reply is over::

    async with await client.chat("Why?", stream=True) as reply:
        async for kind, text in reply.events():
            print(text, end="") if kind == "text" else show_thinking(text)
    print(reply.reasoning)

Reasoning never enters the history, so it is never sent back to the model. The client's
``finish_reason``, ``usage`` and ``truncated`` are those of its last completed reply.

Function calling (:mod:`llmconnect.tools`): pass ``tools=[Tool(...)]`` to :meth:`chat`; the model's
calls come as ``("tool_call", ToolCall)`` events, whole, between the text events, and in
``reply.tool_calls`` once the reply is over (``finish_reason == "tool_calls"``). Send their results
with :meth:`AsyncAPIClient.send_tool_results` (``tools=`` again), which streams the model's next
turn the same way; repeat while it makes calls. Without ``tools=`` nothing changes: no tool field
is sent and ``events()`` yields only text and reasoning. A model that does not take tools
(:func:`~llmconnect.supports_tools`) is sent none: the reply goes on without them and
``reply.tools_dropped`` says so.

The client holds its own in-memory history (a list of ``{"role", "content"}`` dicts, a content
being a ``str`` or, for a turn sent with parts, the list of parts: :class:`ChatMessage`). A reply is
atomic for the history: only a completed reply adds the user turn and the full assistant turn; an
error or a cancellation leaves the history exactly as it was, never half an answer. That includes a
reply cut at its time limit (:class:`~llmconnect.errors.TimeLimitError`): the deltas yielded so far
are the caller's to show, the history does not take them.

Every delta is valid Unicode (``delta.encode("utf-8")`` never fails): a UTF-16 surrogate pair that
a provider split across two chunks (``"\\ud83d"`` then ``"\\ude00"``) is joined, and a surrogate
without its pair becomes U+FFFD.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, NotRequired, TypedDict, overload

import httpx
from pydantic import SecretStr

from .errors import ConfigurationError, InvalidRequestError, LLMError
from .parts import (
    DEFAULT_MAX_DOCUMENT_CHARS,
    Content,
    Document,
    Part,
    documents_for,
    images_for,
    normalize_content,
    prepare_messages,
)
from .protocols import Call, Pieces, RawCall, ReplyState, Thought, protocol
from .protocols.echo import OPTIONS as ECHO_OPTIONS
from .providers import ModelRef, ProviderSpec, base_url_variable, resolve, validate_model_id
from .sse import DEFAULT_MAX_EVENT_BYTES
from .tools import (
    Tool,
    ToolCall,
    ToolResult,
    encode_tool_turns,
    has_tool_turns,
    normalize_tool_keys,
    parse_arguments,
    tool_results_turn,
    tools_for,
)
from .transport import RetryPolicy, Timeouts

__all__ = [
    "REASONING",
    "TEXT",
    "TOOL_CALL",
    "APIClientFactory",
    "AsyncAPIClient",
    "ChatMessage",
    "ReplyStream",
    "Usage",
]

#: The kinds of :meth:`ReplyStream.events`: a piece of the answer, a piece of the reasoning, a
#: tool call the model made (its value a :class:`~llmconnect.ToolCall`; only with ``tools=``).
TEXT = "text"
REASONING = "reasoning"
TOOL_CALL = "tool_call"

log = logging.getLogger("llmconnect")


def _valid_text(text: str) -> tuple[str, str]:
    """``text`` as valid Unicode, plus a high surrogate it ended on (held for the next delta).

    Called only for a non-ASCII delta (or one after a held surrogate): ``encode`` is the cheap
    test, the UTF-16 round trip joins pairs and turns a lone surrogate into U+FFFD.
    """
    try:
        text.encode()
        return text, ""
    except UnicodeEncodeError:
        pass
    held = ""
    if "\ud800" <= text[-1] <= "\udbff":
        text, held = text[:-1], text[-1]
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"), held


class ChatMessage(TypedDict):
    """One history entry: ``{"role": "user" | "assistant", "content": ...}``, the content a
    ``str`` or, for a user turn sent with parts, the list of parts as given
    (``["text", Image(...), Document(...)]``). An assistant turn that called tools also holds
    ``tool_calls``; their results are a ``{"role": "tool", "content": "", "tool_results":
    [...]}`` turn (:func:`~llmconnect.assistant_turn`, :func:`~llmconnect.tool_results_turn`)."""

    role: str
    content: Content
    tool_calls: NotRequired[list[ToolCall]]
    tool_results: NotRequired[list[ToolResult]]


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True, eq=False)
class _Outcome:
    """What the reply generator fills in. Apart from :class:`ReplyStream` so the generator does
    not hold the stream (a cycle would keep an abandoned stream, and its HTTP response, open
    until the cyclic garbage collector runs instead of closing it when the last reference goes)."""

    parts: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    #: Yield ``(kind, text)`` tuples (:meth:`ReplyStream.events`) instead of text deltas.
    kinds: bool = False
    started: bool = False
    finish_reason: str | None = None
    usage: Usage | None = None
    done: bool = False
    calls: list[ToolCall] = field(default_factory=list)
    #: Tools were given but not sent: the model does not take them.
    tools_dropped: bool = False


class ReplyStream:
    """One streamed reply: an async iterator of its text deltas, then its outcome.

    ``async for delta in reply`` reads the deltas; once the reply is complete, ``done`` is true
    and ``text``, ``finish_reason`` and ``usage`` describe it (a reply that failed or was
    closed early stays not done, its ``finish_reason`` and ``usage`` ``None``). ``aclose()``
    (or leaving ``async with``) stops it and closes its HTTP response at once.

    Iterating hands out the client's one reply generator itself (``__aiter__``), so reading
    through this object costs nothing per delta: the generator records each delta with the one
    append it always made.
    """

    __slots__ = ("_deltas", "_outcome")

    def __init__(
        self,
        client: AsyncAPIClient,
        user_msg: Content,
        tools: Sequence[Tool] | None = None,
        *,
        turn: dict[str, Any] | None = None,
    ) -> None:
        self._outcome = _Outcome()
        new_turn = turn if turn is not None else {"role": "user", "content": user_msg}
        self._deltas: AsyncGenerator[Any, None] = client._reply(new_turn, self._outcome, tools)

    @property
    def text(self) -> str:
        """The text so far: the whole reply once :attr:`done`."""
        return "".join(self._outcome.parts)

    @property
    def reasoning(self) -> str:
        """The model's reasoning so far (``""`` for a model that shows none): never part of
        :attr:`text` nor of the client's history."""
        return "".join(self._outcome.reasoning)

    @property
    def finish_reason(self) -> str | None:
        """``"stop"``, ``"length"`` (cut at max tokens), ... once the reply is complete."""
        return self._outcome.finish_reason

    @property
    def usage(self) -> Usage | None:
        """Token usage, once the reply is complete, when the provider reported it."""
        return self._outcome.usage

    @property
    def done(self) -> bool:
        """The reply completed and the client's history took it."""
        return self._outcome.done

    @property
    def truncated(self) -> bool:
        """The reply stopped at the token limit (``finish_reason == "length"``)."""
        return self._outcome.finish_reason == "length"

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls the model made, in order (so far; all of them once :attr:`done`).
        Answer each with a :class:`~llmconnect.ToolResult`
        (:meth:`AsyncAPIClient.send_tool_results`)."""
        return list(self._outcome.calls)

    @property
    def tools_dropped(self) -> bool:
        """Tools were given, but the model does not take them (:func:`~llmconnect.supports_tools`):
        the request carried none."""
        return self._outcome.tools_dropped

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas

    def __anext__(self) -> Awaitable[str]:
        return self._deltas.__anext__()

    def events(self) -> AsyncIterator[tuple[str, Any]]:
        """Every piece of the reply as ``(kind, value)``: ``("text", delta)`` for the answer,
        ``("reasoning", delta)`` for the model's thinking (both ``str``), and, for a reply
        given ``tools=``, ``("tool_call", ToolCall)`` for each call once it is whole. Other
        kinds may be added: skip what you do not know. Instead of iterating the stream itself,
        not after. (Iterating the stream itself yields the text alone; the calls are then in
        :attr:`tool_calls`.)
        """
        if self._outcome.started and not self._outcome.kinds:
            raise RuntimeError("events() after the text deltas were read")
        self._outcome.kinds = True
        return self._deltas

    async def aclose(self) -> None:
        await self._deltas.aclose()

    async def __aenter__(self) -> ReplyStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = f"done, finish_reason={self.finish_reason!r}" if self.done else "open"
        return f"ReplyStream({state}, {len(self._outcome.parts)} deltas)"


class AsyncAPIClient:
    """A conversation with one model: history in memory, replies whole or streamed."""

    def __init__(
        self,
        ref: ModelRef,
        spec: ProviderSpec,
        *,
        base_url: str,
        api_key: SecretStr | None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        system: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        options: Mapping[str, Any] | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        supports_images: bool | None = None,
        supports_documents: bool | None = None,
        max_document_chars: int = DEFAULT_MAX_DOCUMENT_CHARS,
        supports_tools: bool | None = None,
    ) -> None:
        validate_model_id(ref.model)
        self.ref = ref
        self.spec = spec
        self.base_url = base_url
        self._api_key = api_key
        self.messages: list[ChatMessage] = [_history_entry(m) for m in messages or ()]
        self.system = system
        self.http_client = http_client
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.options: dict[str, Any] = dict(options or {})
        #: Largest server-sent event (or whole JSON reply) accepted, in bytes.
        self.max_event_bytes = max_event_bytes
        #: The model is sent images as images (else a note replaces each): the provider row's
        #: patterns, the generic ones and ``LLMCONNECT_VISION_MODELS`` (:func:`supports_images`).
        self.supports_images = (
            images_for(spec, ref.model, os.environ) if supports_images is None else supports_images
        )
        #: The model is sent PDFs as documents (else their extracted text).
        self.supports_documents = (
            documents_for(spec, ref.model) if supports_documents is None else supports_documents
        )
        #: Most characters of a document's text sent to a model that does not read documents.
        self.max_document_chars = max_document_chars
        #: The model is sent tools (the provider row's ``tool_models``/``no_tool_models`` and
        #: ``LLMCONNECT_TOOL_MODELS``: :func:`~llmconnect.supports_tools`); else they are dropped.
        self.supports_tools = (
            tools_for(spec, ref.model, os.environ) if supports_tools is None else supports_tools
        )
        #: The outcome of the last reply that completed (the client's ``finish_reason``...).
        self._last: _Outcome | None = None
        #: A reply is streaming: the history is one conversation, one reply at a time.
        self._streaming = False

    @property
    def provider(self) -> str:
        return self.ref.provider

    @property
    def model(self) -> str:
        """``provider/model``."""
        return str(self.ref)

    @property
    def finish_reason(self) -> str | None:
        """The last completed reply's: ``"stop"``, ``"length"`` (cut at max tokens), ..."""
        return self._last.finish_reason if self._last else None

    @property
    def usage(self) -> Usage | None:
        """Token usage of the last completed reply, when the provider reported it."""
        return self._last.usage if self._last else None

    @property
    def truncated(self) -> bool:
        """The last reply stopped at the token limit (``finish_reason == "length"``)."""
        return self.finish_reason == "length"

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls of the last completed reply (``[]`` when it made none)."""
        return list(self._last.calls) if self._last else []

    def __repr__(self) -> str:
        return f"AsyncAPIClient(model={self.model!r}, messages={len(self.messages)})"

    def reset(self) -> None:
        self.messages.clear()

    @overload
    async def chat(
        self,
        user_msg: str | Sequence[Part],
        stream: Literal[False] = ...,
        *,
        tools: Sequence[Tool] | None = ...,
    ) -> str: ...

    @overload
    async def chat(
        self,
        user_msg: str | Sequence[Part],
        stream: Literal[True],
        *,
        tools: Sequence[Tool] | None = ...,
    ) -> ReplyStream: ...

    async def chat(
        self,
        user_msg: str | Sequence[Part],
        stream: bool = False,
        *,
        tools: Sequence[Tool] | None = None,
    ) -> str | ReplyStream:
        """Send ``user_msg``; the reply text, or with ``stream=True`` a :class:`ReplyStream`
        (an async iterator of its deltas that then holds the reply's outcome).

        ``user_msg`` is text, or a sequence of parts: ``["What is this?", Image(png_bytes)]``
        (``str``, :class:`~llmconnect.Image`, :class:`~llmconnect.Document`); the history keeps
        the parts as given. A part the model cannot take is converted (a PDF to its text) or
        replaced by a note (an image to a model without vision), never refused.

        Close the stream (``aclose()``, leave ``async with``) or cancel the task to stop: the
        HTTP response is closed at once.

        ``tools``: the functions the model may call this turn (:class:`~llmconnect.Tool`); its
        calls are ``("tool_call", ToolCall)`` events and :attr:`ReplyStream.tool_calls`, answered
        with :meth:`send_tool_results`. Without stream, the text is returned and the calls are
        in :attr:`tool_calls`.
        """
        reply = ReplyStream(self, normalize_content(user_msg), tools)
        if stream:
            return reply
        async for _ in reply:
            pass
        return reply.text

    @overload
    async def send_tool_results(
        self,
        results: Sequence[ToolResult],
        stream: Literal[False] = ...,
        *,
        tools: Sequence[Tool] | None = ...,
    ) -> str: ...

    @overload
    async def send_tool_results(
        self,
        results: Sequence[ToolResult],
        stream: Literal[True],
        *,
        tools: Sequence[Tool] | None = ...,
    ) -> ReplyStream: ...

    async def send_tool_results(
        self,
        results: Sequence[ToolResult],
        stream: bool = False,
        *,
        tools: Sequence[Tool] | None = None,
    ) -> str | ReplyStream:
        """Send the results of the last reply's tool calls and get the model's next turn, like
        :meth:`chat` (which it is, with a ``tool`` turn instead of a user turn): its text, or a
        :class:`ReplyStream`, which may make more calls. Give the same ``tools`` again (the
        model may call more; some providers refuse tool turns without them).

        One result per call (``call.result(text)``, ``is_error=True`` for a failure); a call
        left out is answered ``NOT_RUN`` as an error when the history is sent. As for a user
        turn, the history takes the results only when the reply completes.
        """
        reply = ReplyStream(self, "", tools, turn=tool_results_turn(results))
        if stream:
            return reply
        async for _ in reply:
            pass
        return reply.text

    def _turns(self, turn: Mapping[str, Any], native_tools: bool = False) -> list[dict[str, Any]]:
        """The history and the new turn, parts converted for this model (:func:`prepare_messages`)
        and tool turns made sendable (:func:`~llmconnect.tools.encode_tool_turns`)."""
        turns: list[Mapping[str, Any]] = [*self.messages, turn]
        prepared = prepare_messages(
            turns,
            images=self.supports_images,
            documents=self.supports_documents,
            max_document_chars=self.max_document_chars,
        )
        if has_tool_turns(prepared):
            prepared = encode_tool_turns(prepared, native=native_tools)
        return prepared

    def _must_extract(self, turn: Mapping[str, Any]) -> bool:
        """A document must become text for this model: pypdf's work, done off the event loop."""
        for content in (*(m["content"] for m in self.messages), turn["content"]):
            if not isinstance(content, str):
                for part in content:
                    if isinstance(part, Document) and not (self.supports_documents and part.is_pdf):
                        return True
        return False

    def _call(
        self,
        turn: Content | Mapping[str, Any],
        turns: list[dict[str, Any]] | None = None,
        tools: list[Tool] | None = None,
    ) -> Call:
        if not isinstance(turn, Mapping):
            turn = {"role": "user", "content": turn}
        options = self.options
        if self.spec.protocol != "echo" and not options.keys().isdisjoint(ECHO_OPTIONS):
            # echo's pacing and length (benchmarks set them for every model): no provider's.
            options = {k: v for k, v in options.items() if k not in ECHO_OPTIONS}
        return Call(
            provider=self.ref.provider,
            model=self.ref.model,
            base_url=self.base_url,
            api_key=self._api_key.get_secret_value() if self._api_key else None,
            messages=self._turns(turn, bool(tools)) if turns is None else turns,
            system=self.system,
            options=options,
            http=self.http_client,
            timeouts=self.timeouts,
            stream_usage=self.spec.stream_options,
            max_event_bytes=self.max_event_bytes,
            tools=tools,
        )

    async def _reply(
        self, turn: dict[str, Any], outcome: _Outcome, tools: Sequence[Tool] | None = None
    ) -> AsyncGenerator[Any, None]:
        # One generator for retries, the history commit and the reply's outcome: every extra
        # async-generator layer costs on each delta (see benchmarks/stream_decode.py). It yields
        # text deltas, or (kind, value) tuples when ``outcome.kinds`` (ReplyStream.events).
        if self._streaming:
            raise RuntimeError("this client is already streaming a reply; await it first")
        self._streaming = True
        outcome.started = True
        kinds = outcome.kinds
        try:
            sent_tools: list[Tool] | None = None
            if tools:
                if self.supports_tools:
                    sent_tools = _checked_tools(tools)
                else:
                    outcome.tools_dropped = True
                    log.info("%s takes no tools: %d not sent", self.model, len(tools))
            turns = None
            if self._must_extract(turn):
                turns = await asyncio.to_thread(self._turns, turn, bool(sent_tools))
            call = self._call(turn, turns, sent_tools)
            limit = self.timeouts.max_duration
            # One deadline for the whole reply, retries included.
            call.deadline = None if limit is None else time.monotonic() + limit
            stream_reply = protocol(self.spec.protocol)
            parts = outcome.parts
            thoughts = outcome.reasoning
            calls = outcome.calls
            attempt = 0
            while True:
                state = ReplyState()
                held = ""  # a high surrogate waiting for the delta that holds its pair
                try:
                    # aclosing: when the caller closes us mid-reply, close the protocol generator
                    # (and so its HTTP response) now, not whenever the garbage collector runs.
                    async with aclosing(stream_reply(call, state)) as deltas:
                        async for delta in deltas:
                            if delta.__class__ is Pieces:
                                # Several things in one event, tool calls among them: rare.
                                for piece in delta.pieces:
                                    if piece.__class__ is RawCall:
                                        tool_call = _tool_call(piece)
                                        calls.append(tool_call)
                                        if kinds:
                                            yield TOOL_CALL, tool_call
                                        continue
                                    for kind, text in _split_thought(piece):  # type: ignore[arg-type]
                                        if kind is REASONING:
                                            thoughts.append(text)
                                            if kinds:
                                                yield REASONING, text
                                            continue
                                        text, held = _valid_text(held + text)
                                        if text:
                                            parts.append(text)
                                            yield (TEXT, text) if kinds else text
                                continue
                            if delta.__class__ is not str and isinstance(delta, Thought):
                                thought = _valid_text(delta)[0] if not delta.isascii() else delta
                                thoughts.append(str(thought))
                                if kinds:
                                    yield REASONING, str(thought)
                                delta = delta.then
                                if not delta:
                                    continue
                            if held or not delta.isascii():
                                delta, held = _valid_text(held + delta)
                                if not delta:
                                    continue
                            parts.append(delta)
                            yield (TEXT, delta) if kinds else delta
                    if state.calls:  # a stream that ended without its finish chunk
                        for piece in state.calls.values():
                            tool_call = _tool_call(piece)
                            calls.append(tool_call)
                            if kinds:
                                yield TOOL_CALL, tool_call
                        state.calls.clear()
                    tail = state.held_back()  # what the <think> splitter still held
                    if isinstance(tail, Thought):
                        thoughts.append(str(tail))
                        if kinds:
                            yield REASONING, str(tail)
                    elif tail:
                        delta, held = _valid_text(held + tail)
                        if delta:
                            parts.append(delta)
                            yield (TEXT, delta) if kinds else delta
                    if held:
                        parts.append("\ufffd")
                        yield (TEXT, "\ufffd") if kinds else "\ufffd"
                    break
                except LLMError as exc:
                    if isinstance(exc, InvalidRequestError) and exc.status == 400:
                        _name_options(exc, call)
                    # Retry only before the first delta reached the caller: never duplicate text.
                    if (
                        parts
                        or thoughts
                        or calls
                        or not exc.retryable
                        or attempt >= self.retry.max_retries
                    ):
                        raise
                    delay = self.retry.delay(attempt, getattr(exc, "retry_after", None))
                    if call.deadline is not None and time.monotonic() + delay >= call.deadline:
                        raise  # the retry could not even start before the time limit
                    attempt += 1
                    log.warning(
                        "%s (retry %d/%d in %.2fs)", exc, attempt, self.retry.max_retries, delay
                    )
                    await self.retry.sleep(delay)
            self.messages.append(turn)  # type: ignore[arg-type]
            answer: ChatMessage = {"role": "assistant", "content": "".join(parts)}
            if calls:
                answer["tool_calls"] = list(calls)
                if state.finish_reason == "stop":  # Gemini says STOP; some servers too
                    state.finish_reason = "tool_calls"
            self.messages.append(answer)
            outcome.finish_reason = state.finish_reason
            outcome.usage = (
                Usage(state.usage.get("input_tokens", 0), state.usage.get("output_tokens", 0))
                if state.usage
                else None
            )
            outcome.done = True
            self._last = outcome
        finally:
            self._streaming = False


def _history_entry(message: Mapping[str, Any]) -> ChatMessage:
    entry: dict[str, Any] = {
        "role": str(message["role"]),
        "content": normalize_content(message.get("content") or ""),
    }
    if "tool_calls" in message or "tool_results" in message:
        normalize_tool_keys(message, entry)
    return entry  # type: ignore[return-value]


def _checked_tools(tools: Sequence[Tool]) -> list[Tool]:
    checked = list(tools)
    for tool in checked:
        if not isinstance(tool, Tool):
            raise TypeError(f"not a Tool: {type(tool).__name__}")
    names = [tool.name for tool in checked]
    if len(set(names)) != len(names):
        raise ValueError("two tools with the same name")
    return checked


def _tool_call(raw: RawCall) -> ToolCall:
    """A finished call as the caller sees it: its arguments parsed, once."""
    arguments, error = parse_arguments(raw.value if raw.value is not None else "".join(raw.pieces))
    if not raw.name and error is None:
        error = "the call names no tool"
    return ToolCall(raw.id, raw.name, arguments, error, raw.signature)


def _split_thought(piece: str) -> list[tuple[str, str]]:
    """A piece of a :class:`Pieces` as ``(kind, text)``: a Thought's reasoning and its ``then``."""
    if isinstance(piece, Thought):
        out = [(REASONING, _valid_text(str(piece))[0])] if piece else []
        return out + ([(TEXT, piece.then)] if piece.then else [])
    return [(TEXT, piece)] if piece else []


def _name_options(exc: InvalidRequestError, call: Call) -> None:
    """A request the provider refused (400) may be refusing an option: name the ones sent (names
    only: a value may be anything) in the line a user sees."""
    if call.options:
        names = ", ".join(call.options)
        exc._user_message = f"{exc.user_message} (options sent: {names})"


class APIClientFactory:
    """Builds an :class:`AsyncAPIClient` from a ``provider/model`` name and the environment."""

    @staticmethod
    def create(
        model: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        system: str | None = None,
        *,
        provider: str | None = None,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        env: Mapping[str, str] | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_document_chars: int = DEFAULT_MAX_DOCUMENT_CHARS,
        **options: Any,
    ) -> AsyncAPIClient:
        """``model`` is ``provider/model`` (or give ``provider=`` and ``model=`` separately).

        ``options`` are generation parameters (``temperature``, ``max_tokens``, ``top_p``,
        ``stop``), mapped per protocol; anything else goes into the request body as is, except
        the offline echo provider's own ``delay`` and ``words``, which no provider is sent.
        ``max_event_bytes`` bounds one server-sent event (and a whole JSON reply).
        ``messages`` are ``{"role", "content"}`` mappings, a content being a ``str`` or a list
        of parts (as :attr:`AsyncAPIClient.messages` holds them). Whether the model is sent
        images and PDFs as such comes from the provider table and ``LLMCONNECT_VISION_MODELS``
        in ``env``; ``max_document_chars`` bounds a document's text for a model that does not
        read documents (:func:`~llmconnect.document_text`).
        Raises :class:`ConfigurationError` when the provider is unknown or its key is not set,
        :class:`InvalidModelIdError` (one) when the model id is not safe to send.
        """
        env = os.environ if env is None else env
        resolved = resolve(model or "", env, provider=provider)
        ref = resolved.ref
        spec = resolved.spec
        url = (base_url or resolved.base_url).rstrip("/")
        if spec.protocol != "echo" and not url:
            raise ConfigurationError(
                f"No base URL for provider {spec.name!r}: set {base_url_variable(spec.name)}.",
                provider=spec.name,
            )
        key = api_key if api_key is not None else env.get(resolved.key_var or "") or None
        if isinstance(key, str):
            key = SecretStr(key)
        if key is None and spec.needs_key:
            raise ConfigurationError(
                f"{spec.name} needs an API key: set {resolved.key_var}.",
                provider=spec.name,
                user_message=f"{spec.name} is not configured (set {resolved.key_var}).",
            )
        return AsyncAPIClient(
            ref,
            spec,
            base_url=url,
            api_key=key,
            messages=messages,
            system=system,
            http_client=http_client,
            timeouts=timeouts,
            retry=retry,
            options=options,
            max_event_bytes=max_event_bytes,
            supports_images=images_for(spec, ref.model, env),
            supports_documents=documents_for(spec, ref.model),
            max_document_chars=max_document_chars,
            supports_tools=tools_for(spec, ref.model, env),
        )
