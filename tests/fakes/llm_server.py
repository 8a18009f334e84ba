"""A real aiohttp server on loopback that imitates LLM providers.

Tests and benchmarks talk to it over actual HTTP so that the client's
connection handling, SSE decoding and error paths are exercised for real.
It speaks three wire protocols:

* OpenAI-compatible chat completions (``POST /v1/chat/completions``,
  ``GET /v1/models``),
* Anthropic Messages (``POST /v1/messages``, ``GET /v1/models`` when the request
  carries ``anthropic-version``),
* Gemini (``POST /v1beta/models/{model}:streamGenerateContent`` and
  ``:generateContent``, ``GET /v1beta/models``).

Each chat request consumes one scripted action (``Reply``, ``Fail`` or
``RawStream``) from a FIFO queue; when the queue is empty a default ``Reply()``
echoes the last user message back. A model in ``down_models`` answers 503 and one
in ``missing_models`` 404 model-not-found to every chat request, without
consuming an action. ``Reply(reasoning=...)`` streams reasoning before the answer,
the way each protocol does (OpenAI-compatible: ``reasoning_as`` picks
``reasoning_content``, ``reasoning`` or an inline ``<think>`` split across chunks).
The model lists are paged ``page_size`` models at a time (Anthropic ``has_more`` /
``last_id``, Gemini ``nextPageToken``; OpenAI's is never paged).

Content parts: :meth:`RecordedRequest.turns` and :meth:`RecordedRequest.parts` read what a chat
request carried in any protocol as :class:`ReceivedPart` s (text, image, document; bytes decoded
from base64, ``native`` the protocol's own block type), so a test asserts the same thing for each
protocol; ``req.json`` keeps the native shape. A model in ``text_only_models`` answers 400 to a
request with any non-text part, as a real text-only model does.

Tool calls: ``Reply(tool_calls=[FakeToolCall("get_weather", {"city": "Paris"}), ...])`` streams
them after the reply's text (none by default then) and before ``text_after``, each protocol its
own way: OpenAI-compatible ``delta.tool_calls`` (id and name first, the arguments' JSON in
``pieces`` chunks, the calls one index after another, finish ``tool_calls``), Anthropic
``tool_use`` blocks with ``input_json_delta`` pieces (stop reason ``tool_use``), Gemini
``functionCall`` parts (all calls in one response, arguments whole, finish ``STOP``). A ``str``
as arguments is sent as it is (malformed JSON for tests). :meth:`RecordedRequest.tool_results`,
:meth:`RecordedRequest.tool_calls` and :meth:`RecordedRequest.tool_names` read what a request
carried in any protocol (``req.json`` keeps the native shape). A model in ``no_tool_models``
answers 400 "does not support tools" to a request that declares tools, as Ollama does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import enum
import http
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from .base import LoopbackServer

__all__ = [
    "Fail",
    "FakeLLMServer",
    "FakeToolCall",
    "RawStream",
    "ReceivedPart",
    "ReceivedToolCall",
    "ReceivedToolResult",
    "RecordedRequest",
    "Reply",
    "openai_stream_body",
    "split_deltas",
]

Protocol = Literal["openai", "anthropic", "gemini"]

_CREATED = 1700000000
_DEFAULT_FINISH: dict[Protocol, str] = {
    "openai": "stop",
    "anthropic": "end_turn",
    "gemini": "STOP",
}
_MALFORMED = "{not json"
_UPSTREAM_FAILURE = "upstream failure"


# --------------------------------------------------------------------------- actions


@dataclass
class FakeToolCall:
    """A tool call a :class:`Reply` makes."""

    name: str
    #: An object is sent as JSON; a ``str`` as it is (malformed JSON, a non-object...).
    arguments: dict[str, Any] | str = field(default_factory=dict)
    #: The call's id (default ``call_fake<n>`` / ``toolu_fake<n>``; Gemini sends none unless
    #: given).
    id: str | None = None
    #: How many chunks the arguments' JSON is split into (OpenAI-compatible, Anthropic).
    pieces: int = 3
    #: Gemini's ``thoughtSignature`` on the part.
    signature: str | None = None

    def json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else _dumps(self.arguments)

    def split(self) -> list[str]:
        """The arguments' JSON in ``pieces`` nearly equal chunks."""
        text = self.json()
        size = -(-len(text) // max(self.pieces, 1)) or 1
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]

    def object(self) -> Any:
        """The arguments as an object (a JSON value for a str that parses, else the str)."""
        if isinstance(self.arguments, str):
            try:
                return json.loads(self.arguments)
            except ValueError:
                return self.arguments
        return self.arguments


@dataclass
class Reply:
    """A successful answer, optionally with a fault injected part-way through."""

    text: str | None = None
    deltas: list[str] | None = None
    finish_reason: str | None = None
    usage: tuple[int, int] = (7, 0)
    write_sizes: int | list[int] | None = None
    keepalive: bool = False
    crlf: bool = False
    error_after: int | None = None
    drop_after: int | None = None
    hang_after: int | None = None
    malformed_after: int | None = None
    delay: float = 0.0
    #: Seconds to sleep before every write after the first, events or not (with
    #: ``write_sizes=1``: one byte per ``write_delay``): a trickling provider.
    write_delay: float = 0.0
    #: While hanging (``hang_after``), write a ``: keep-alive`` comment every this many seconds.
    keepalive_every: float | None = None
    #: Answer a streaming request with the whole non-streaming JSON body, like a proxy that
    #: ignores ``stream: true``.
    ignore_stream: bool = False
    #: Reasoning streamed before the answer (a string is split into words): OpenAI-compatible
    #: ``delta.<reasoning_as>`` chunks (or inline ``<think>…</think>`` content, the tags split
    #: across chunks), Anthropic ``thinking`` block, Gemini ``thought: true`` parts.
    reasoning: str | list[str] | None = None
    reasoning_as: Literal["reasoning_content", "reasoning", "think"] = "reasoning_content"
    #: Hold the answer back until this is set: everything before the first answer delta (the
    #: reasoning, in every protocol) is written, then the stream waits (a model still thinking).
    #: Only without ``write_sizes``.
    text_gate: asyncio.Event | None = None
    #: Tool calls made after the text (which is ``""`` by default then): see the module doc.
    tool_calls: list[FakeToolCall] | None = None
    #: Text streamed after the tool calls.
    text_after: str | None = None


@dataclass
class Fail:
    """An HTTP error response (non-2xx) instead of an answer."""

    status: int
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class RawStream:
    """Send ``body`` verbatim with status 200, for decoder tests and benchmarks."""

    body: bytes
    write_sizes: int | list[int] | None = None
    content_type: str = "text/event-stream"


Action = Reply | Fail | RawStream


class _Headers(dict[str, str]):
    """A plain dict with case-insensitive lookups, because HTTP header names are."""

    def __init__(self, items: Iterator[tuple[str, str]] | list[tuple[str, str]] = ()) -> None:
        super().__init__()
        for key, value in items:
            self[key] = value

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class RecordedRequest:
    """What the server received, captured before any scripted action runs."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # keys lower-cased; lookups are case-insensitive
    json: Any  # parsed body, or None when empty / not JSON
    body: bytes = b""  # raw body, for tests that send something that is not JSON
    raw_path: str = ""  # the path as sent, percent-escapes kept (``path`` is decoded)

    @property
    def protocol(self) -> Protocol | None:
        """The wire protocol of a chat request (None for anything else)."""
        if self.path.endswith("/chat/completions"):
            return "openai"
        if self.path.endswith("/v1/messages"):
            return "anthropic"
        if self.path.startswith("/v1beta/models/") and "enerateContent" in self.path:
            return "gemini"
        return None

    def turns(self) -> list[tuple[str, list[ReceivedPart]]]:
        """Every message of a chat request, in order, as ``(role, parts)`` whatever the
        protocol: roles ``system`` (OpenAI's system message), ``user``, ``assistant`` (Gemini's
        ``model``). Gemini's ``systemInstruction`` and Anthropic's ``system`` are not turns."""
        body = self.json if isinstance(self.json, dict) else {}
        if self.protocol == "gemini":
            return [
                (
                    "assistant" if c.get("role") == "model" else str(c.get("role", "user")),
                    [_gemini_part(p) for p in c.get("parts") or []],
                )
                for c in body.get("contents") or []
            ]
        read = _openai_part if self.protocol == "openai" else _anthropic_part
        turns: list[tuple[str, list[ReceivedPart]]] = []
        for message in body.get("messages") or []:
            content = message.get("content")
            if isinstance(content, str):
                parts = [ReceivedPart("text", "text", text=content)]
            else:
                parts = [read(block) for block in content or []]
            turns.append((str(message.get("role")), parts))
        return turns

    def parts(self, index: int = -1) -> list[ReceivedPart]:
        """The parts of the ``index``-th user turn (default: the last one, the new prompt)."""
        return [parts for role, parts in self.turns() if role == "user"][index]

    def _messages(self) -> list[dict[str, Any]]:
        body = self.json if isinstance(self.json, dict) else {}
        key = "contents" if self.protocol == "gemini" else "messages"
        return [m for m in body.get(key) or [] if isinstance(m, dict)]

    def tool_names(self) -> list[str]:
        """The names of the tools the request declared (any protocol)."""
        body = self.json if isinstance(self.json, dict) else {}
        tools = body.get("tools") or []
        if self.protocol == "gemini":
            return [str(d.get("name")) for t in tools for d in t.get("functionDeclarations") or []]
        if self.protocol == "openai":
            return [str((t.get("function") or {}).get("name")) for t in tools]
        return [str(t.get("name")) for t in tools]

    def tool_calls(self) -> list[ReceivedToolCall]:
        """Every tool call the request's assistant turns carried back, in order."""
        calls: list[ReceivedToolCall] = []
        for message in self._messages():
            if self.protocol == "openai":
                for call in message.get("tool_calls") or []:
                    function = call.get("function") or {}
                    arguments = json.loads(function.get("arguments") or "{}")
                    calls.append(ReceivedToolCall(call.get("id"), function.get("name"), arguments))
            elif self.protocol == "anthropic":
                for block in _blocks(message.get("content")):
                    if block.get("type") == "tool_use":
                        calls.append(
                            ReceivedToolCall(block.get("id"), block.get("name"), block.get("input"))
                        )
            else:
                for part in message.get("parts") or []:
                    if "functionCall" in part:
                        function = part["functionCall"]
                        calls.append(
                            ReceivedToolCall(
                                function.get("id"),
                                function.get("name"),
                                function.get("args"),
                                part.get("thoughtSignature"),
                            )
                        )
        return calls

    def tool_results(self) -> list[ReceivedToolResult]:
        """Every tool result the request carried, in order, whatever the protocol: OpenAI's
        ``role: tool`` messages (no error flag there: ``is_error`` None; the name is the one
        of the call with that id), Anthropic's ``tool_result`` blocks, Gemini's
        ``functionResponse`` parts (``output`` or ``error``)."""
        results: list[ReceivedToolResult] = []
        names = {c.id: c.name for c in self.tool_calls()}
        for message in self._messages():
            role = str(message.get("role"))
            if self.protocol == "openai":
                if role == "tool":
                    call_id = message.get("tool_call_id")
                    text = _text_of(message.get("content"))
                    results.append(
                        ReceivedToolResult(call_id, names.get(call_id), text, None, role)
                    )
            elif self.protocol == "anthropic":
                for block in _blocks(message.get("content")):
                    if block.get("type") == "tool_result":
                        call_id = block.get("tool_use_id")
                        results.append(
                            ReceivedToolResult(
                                call_id,
                                names.get(call_id),
                                _text_of(block.get("content")),
                                bool(block.get("is_error")),
                                f"{role}/tool_result",
                            )
                        )
            else:
                for part in message.get("parts") or []:
                    if "functionResponse" in part:
                        response = part["functionResponse"]
                        value = response.get("response") or {}
                        error = "error" in value
                        results.append(
                            ReceivedToolResult(
                                response.get("id"),
                                response.get("name"),
                                str(value.get("error") if error else value.get("output")),
                                error,
                                f"{role}/functionResponse",
                            )
                        )
        return results


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


@dataclass(frozen=True)
class ReceivedToolCall:
    """A tool call an assistant turn of a request carried back (any protocol)."""

    id: str | None
    name: str | None
    arguments: Any
    signature: str | None = None


@dataclass(frozen=True)
class ReceivedToolResult:
    """A tool result a request carried (any protocol); ``native`` says where it was
    (``tool``, ``user/tool_result``, ``user/functionResponse``)."""

    call_id: str | None
    name: str | None
    content: str
    is_error: bool | None
    native: str


#: Where the middleware leaves a request's :class:`RecordedRequest` for the handlers.
_RECORDED = web.RequestKey("recorded", RecordedRequest)


@dataclass(frozen=True)
class ReceivedPart:
    """One content part as a chat request carried it, the same for every protocol.

    ``kind`` is ``"text"``, ``"image"``, ``"document"`` (or the block's own type when it is none
    of those); ``native`` the protocol's block type (``image_url``, ``file``, ``image``,
    ``document``, ``inline_data``, ``file_data``, ``text``). ``data`` is decoded from base64.
    """

    kind: str
    native: str
    text: str | None = None
    media_type: str | None = None
    data: bytes | None = None
    url: str | None = None
    name: str | None = None


def _b64(value: Any) -> bytes | None:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return None


def _data_url(url: str) -> tuple[str | None, bytes | None]:
    """``(media_type, bytes)`` of a ``data:<type>;base64,<data>`` URL; ``(None, None)`` else."""
    match = re.fullmatch(r"data:([^;,]+);base64,(.*)", url, re.DOTALL)
    if not match:
        return None, None
    return match.group(1), _b64(match.group(2))


def _openai_part(block: Any) -> ReceivedPart:
    kind = str(block.get("type"))
    if kind == "text":
        return ReceivedPart("text", kind, text=block.get("text"))
    if kind == "image_url":
        url = str((block.get("image_url") or {}).get("url") or "")
        media, data = _data_url(url)
        if data is not None:
            return ReceivedPart("image", kind, media_type=media, data=data)
        return ReceivedPart("image", kind, url=url)
    if kind == "file":
        file = block.get("file") or {}
        media, data = _data_url(str(file.get("file_data") or ""))
        return ReceivedPart(
            "document", kind, media_type=media, data=data, name=file.get("filename")
        )
    return ReceivedPart(kind, kind)


def _anthropic_part(block: Any) -> ReceivedPart:
    kind = str(block.get("type"))
    if kind == "text":
        return ReceivedPart("text", kind, text=block.get("text"))
    if kind in ("image", "document"):
        source = block.get("source") or {}
        if source.get("type") == "url":
            return ReceivedPart(kind, kind, url=source.get("url"), name=block.get("title"))
        return ReceivedPart(
            kind,
            kind,
            media_type=source.get("media_type"),
            data=_b64(source.get("data")),
            name=block.get("title"),
        )
    if kind in ("tool_use", "tool_result"):
        return ReceivedPart("tool_call" if kind == "tool_use" else "tool_result", kind)
    return ReceivedPart(kind, kind)


def _gemini_part(part: Any) -> ReceivedPart:
    if "functionCall" in part:
        return ReceivedPart("tool_call", "functionCall")
    if "functionResponse" in part:
        return ReceivedPart("tool_result", "functionResponse")
    if "text" in part:
        return ReceivedPart("text", "text", text=part["text"])
    for native in ("inline_data", "inlineData"):
        if native in part:
            inline = part[native] or {}
            media = inline.get("mime_type") or inline.get("mimeType")
            kind = "image" if str(media).startswith("image/") else "document"
            return ReceivedPart(
                kind, "inline_data", media_type=media, data=_b64(inline.get("data"))
            )
    for native in ("file_data", "fileData"):
        if native in part:
            file = part[native] or {}
            media = file.get("mime_type") or file.get("mimeType")
            kind = "image" if str(media).startswith("image/") else "document"
            return ReceivedPart(
                kind, "file_data", media_type=media, url=file.get("file_uri") or file.get("fileUri")
            )
    return ReceivedPart("unknown", next(iter(part), "unknown"))


# --------------------------------------------------------------------------- event building


class _End(enum.Enum):
    """How a stream ends after its last event has been written."""

    FINISH = "finish"  # normal end of the chunked body
    DROP = "drop"  # close the transport mid-body
    HANG = "hang"  # keep the connection open, send nothing more


@dataclass
class _Parts:
    """One protocol's stream split into the pieces faults are injected between."""

    preamble: list[bytes]
    deltas: list[bytes]
    trailer: list[bytes]
    error: bytes  # the protocol's in-stream error event
    eol: str


@dataclass
class _Plan:
    """The exact events to write, plus what to do afterwards."""

    events: list[bytes]
    end: _End = _End.FINISH
    write_delay: float = 0.0
    keepalive_every: float | None = None
    #: Wait for ``gate`` before writing event number ``gate_at``.
    gate: asyncio.Event | None = None
    gate_at: int = 0


@dataclass
class _Context:
    """Per-request facts the builders need."""

    model: str
    prompt: str  # text of the last user message
    include_usage: bool = False


def split_deltas(text: str) -> list[str]:
    """Split text into word-sized deltas that join back to ``text`` exactly."""
    return re.findall(r"\S+\s*|\s+", text)


def _dumps(obj: Any) -> str:
    """Compact JSON with raw UTF-8, like real providers (so pieces can split characters)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _sse(data: str, *, event: str | None = None, eol: str = "\n") -> bytes:
    """One SSE event; ``event:`` line only when given."""
    head = f"event: {event}{eol}" if event else ""
    return f"{head}data: {data}{eol}{eol}".encode()


def _reply_text(reply: Reply, ctx: _Context) -> str:
    """The full answer text: explicit text, joined deltas, or the echo default (none for a
    reply that calls tools)."""
    if reply.text is not None:
        return reply.text
    if reply.deltas is not None:
        return "".join(reply.deltas)
    if reply.tool_calls:
        return ""
    return f"You said: {ctx.prompt}"


def _call_id(protocol: Protocol, call: FakeToolCall, index: int) -> str | None:
    if call.id is not None:
        return call.id
    if protocol == "gemini":
        return None
    return f"{'toolu' if protocol == 'anthropic' else 'call'}_fake{index}"


def _finish(protocol: Protocol, reply: Reply) -> str:
    if reply.finish_reason:
        return reply.finish_reason
    if reply.tool_calls and protocol != "gemini":
        return "tool_calls" if protocol == "openai" else "tool_use"
    return _DEFAULT_FINISH[protocol]


def _reply_deltas(reply: Reply, ctx: _Context) -> list[str]:
    """The streamed pieces: explicit deltas or the text split into words."""
    if reply.deltas is not None:
        return list(reply.deltas)
    return split_deltas(_reply_text(reply, ctx))


def _reasoning_deltas(reply: Reply) -> list[str]:
    if reply.reasoning is None:
        return []
    if isinstance(reply.reasoning, str):
        return split_deltas(reply.reasoning)
    return list(reply.reasoning)


#: The inline tags as streamed by the fake: split inside the tag, as a tokenizer may.
THINK_OPEN = ("<th", "ink>")
THINK_CLOSE = ("</thi", "nk>\n\n")


def _usage(reply: Reply, deltas: list[str]) -> tuple[int, int]:
    """(prompt, completion) tokens; completion 0 means "one per delta"."""
    prompt, completion = reply.usage
    return prompt, completion or len(deltas)


def _openai_parts(reply: Reply, ctx: _Context) -> _Parts:
    """OpenAI chat.completion.chunk events; ``data:`` lines only, ending in [DONE]."""
    eol = "\r\n" if reply.crlf else "\n"
    deltas = _reply_deltas(reply, ctx)
    prompt, completion = _usage(reply, deltas)

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": ctx.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return _sse(_dumps(body), eol=eol)

    thinking = _reasoning_deltas(reply)
    preamble = [chunk({"role": "assistant", "content": ""}, None)]
    if thinking and reply.reasoning_as == "think":
        pieces = [*THINK_OPEN, *thinking, *THINK_CLOSE]
        preamble += [chunk({"content": t}, None) for t in pieces]
    elif thinking:
        preamble += [chunk({"content": None, reply.reasoning_as: t}, None) for t in thinking]
    tools: list[bytes] = []
    for index, call in enumerate(reply.tool_calls or []):
        head = {
            "index": index,
            "id": _call_id("openai", call, index),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        tools.append(chunk({"content": None, "tool_calls": [head]}, None))
        for piece in call.split():
            entry = {"index": index, "function": {"arguments": piece}}
            tools.append(chunk({"tool_calls": [entry]}, None))
    after = split_deltas(reply.text_after or "")
    trailer = [chunk({}, _finish("openai", reply))]
    if ctx.include_usage:
        usage = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": ctx.model,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
        trailer.append(_sse(_dumps(usage), eol=eol))
    trailer.append(_sse("[DONE]", eol=eol))
    error = {"error": {"message": _UPSTREAM_FAILURE, "type": "server_error", "code": None}}
    return _Parts(
        preamble=preamble,
        deltas=[chunk({"content": d}, None) for d in deltas]
        + tools
        + [chunk({"content": d}, None) for d in after],
        trailer=trailer,
        error=_sse(_dumps(error), eol=eol),
        eol=eol,
    )


def _anthropic_parts(reply: Reply, ctx: _Context) -> _Parts:
    """Anthropic Messages events, each with an ``event:`` line."""
    eol = "\r\n" if reply.crlf else "\n"
    deltas = _reply_deltas(reply, ctx)
    prompt, completion = _usage(reply, deltas)

    def ev(name: str, body: dict[str, Any]) -> bytes:
        return _sse(_dumps({"type": name, **body}), event=name, eol=eol)

    message = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": 1},
    }
    stop = _finish("anthropic", reply)
    error = {"error": {"type": "overloaded_error", "message": "Overloaded"}}
    thinking = _reasoning_deltas(reply)
    preamble = [ev("message_start", {"message": message})]
    index = 0
    if thinking:
        block = {"type": "thinking", "thinking": "", "signature": ""}
        preamble.append(ev("content_block_start", {"index": 0, "content_block": block}))
        preamble += [
            ev(
                "content_block_delta",
                {"index": 0, "delta": {"type": "thinking_delta", "thinking": t}},
            )
            for t in thinking
        ]
        signature = {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}
        preamble.append(ev("content_block_delta", {"index": 0, "delta": signature}))
        preamble.append(ev("content_block_stop", {"index": 0}))
        index = 1
    if reply.tool_calls:
        return _anthropic_tool_parts(reply, ev, preamble, index, deltas, stop, completion)
    preamble += [
        ev("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}),
        ev("ping", {}),
    ]
    return _Parts(
        preamble=preamble,
        deltas=[
            ev("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": d}})
            for d in deltas
        ],
        trailer=[
            ev("content_block_stop", {"index": index}),
            ev(
                "message_delta",
                {
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": completion},
                },
            ),
            ev("message_stop", {}),
        ],
        error=ev("error", error),
        eol=eol,
    )


def _anthropic_tool_parts(
    reply: Reply,
    ev: Callable[[str, dict[str, Any]], bytes],
    preamble: list[bytes],
    index: int,
    deltas: list[str],
    stop: str,
    completion: int,
) -> _Parts:
    """A reply with tool calls: a text block if there is text, a ``tool_use`` block per call
    (input in ``input_json_delta`` pieces), a text block for ``text_after``."""
    events: list[bytes] = []

    def text_block(texts: list[str]) -> None:
        nonlocal index
        if not texts:
            return
        block = {"type": "text", "text": ""}
        events.append(ev("content_block_start", {"index": index, "content_block": block}))
        events.extend(
            ev("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": t}})
            for t in texts
        )
        events.append(ev("content_block_stop", {"index": index}))
        index += 1

    text_block(deltas)
    for n, call in enumerate(reply.tool_calls or []):
        block = {"type": "tool_use", "id": _call_id("anthropic", call, n), "name": call.name}
        events.append(
            ev("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
        )
        for piece in ["", *call.split()]:  # Anthropic opens with an empty piece
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(ev("content_block_delta", {"index": index, "delta": delta}))
        events.append(ev("content_block_stop", {"index": index}))
        index += 1
    text_block(split_deltas(reply.text_after or ""))
    error = {"error": {"type": "overloaded_error", "message": "Overloaded"}}
    return _Parts(
        preamble=[*preamble, ev("ping", {})],
        deltas=events,
        trailer=[
            ev(
                "message_delta",
                {
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": completion},
                },
            ),
            ev("message_stop", {}),
        ],
        error=ev("error", error),
        eol="\r\n" if reply.crlf else "\n",
    )


def _gemini_call_part(call: FakeToolCall) -> dict[str, Any]:
    function: dict[str, Any] = {"name": call.name, "args": call.object()}
    if call.id is not None:
        function["id"] = call.id
    part: dict[str, Any] = {"functionCall": function}
    if call.signature is not None:
        part["thoughtSignature"] = call.signature
    return part


def _gemini_response(
    ctx: _Context, text: str, finish: str | None, usage: tuple[int, int] | None
) -> dict[str, Any]:
    """One GenerateContentResponse; finishReason/usageMetadata only when finishing."""
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    body: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        body["usageMetadata"] = {
            "promptTokenCount": usage[0],
            "candidatesTokenCount": usage[1],
            "totalTokenCount": usage[0] + usage[1],
        }
    body["modelVersion"] = ctx.model
    return body


def _gemini_thought(ctx: _Context, text: str) -> dict[str, Any]:
    """A GenerateContentResponse holding one ``thought: true`` part."""
    part = {"text": text, "thought": True}
    return {
        "candidates": [{"content": {"parts": [part], "role": "model"}, "index": 0}],
        "modelVersion": ctx.model,
    }


def _gemini_parts(reply: Reply, ctx: _Context) -> _Parts:
    """Gemini SSE: ``data:`` lines with CRLF; the last delta carries finish + usage."""
    eol = "\r\n"
    if reply.tool_calls:
        return _gemini_tool_parts(reply, ctx)
    deltas = _reply_deltas(reply, ctx) or [""]  # a finishing event is always sent
    usage = _usage(reply, [d for d in deltas if d])
    finish = reply.finish_reason or _DEFAULT_FINISH["gemini"]
    events = [
        _sse(
            _dumps(
                _gemini_response(
                    ctx,
                    d,
                    finish if i == len(deltas) - 1 else None,
                    usage if i == len(deltas) - 1 else None,
                )
            ),
            eol=eol,
        )
        for i, d in enumerate(deltas)
    ]
    thoughts = _reasoning_deltas(reply)
    thinking = [_sse(_dumps(_gemini_thought(ctx, t)), eol=eol) for t in thoughts]
    if thoughts:  # Gemini counts thinking apart: one token per reasoning delta here
        last = json.loads(events[-1].decode().removeprefix("data: ").strip())
        last["usageMetadata"]["thoughtsTokenCount"] = len(thoughts)
        last["usageMetadata"]["totalTokenCount"] += len(thoughts)
        events[-1] = _sse(_dumps(last), eol=eol)
    error = {"error": {"code": 500, "message": _UPSTREAM_FAILURE, "status": "INTERNAL"}}
    return _Parts(
        preamble=thinking, deltas=events, trailer=[], error=_sse(_dumps(error), eol=eol), eol=eol
    )


def _gemini_tool_parts(reply: Reply, ctx: _Context) -> _Parts:
    """A reply with tool calls: its text, one response with every call, ``text_after``; the
    last response carries the finish reason and usage."""
    eol = "\r\n"
    deltas = _reply_deltas(reply, ctx)
    after = split_deltas(reply.text_after or "")
    bodies = [_gemini_response(ctx, d, None, None) for d in deltas]
    calls = [_gemini_call_part(c) for c in reply.tool_calls or []]
    bodies.append(
        {
            "candidates": [{"content": {"parts": calls, "role": "model"}, "index": 0}],
            "modelVersion": ctx.model,
        }
    )
    bodies += [_gemini_response(ctx, d, None, None) for d in after]
    prompt, completion = _usage(
        reply, [*deltas, *after, *(c["functionCall"]["name"] for c in calls)]
    )
    bodies[-1]["candidates"][0]["finishReason"] = _finish("gemini", reply)
    bodies[-1]["usageMetadata"] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
    }
    error = {"error": {"code": 500, "message": _UPSTREAM_FAILURE, "status": "INTERNAL"}}
    return _Parts(
        preamble=[],
        deltas=[_sse(_dumps(b), eol=eol) for b in bodies],
        trailer=[],
        error=_sse(_dumps(error), eol=eol),
        eol=eol,
    )


_PARTS_BUILDERS: dict[Protocol, Callable[[Reply, _Context], _Parts]] = {
    "openai": _openai_parts,
    "anthropic": _anthropic_parts,
    "gemini": _gemini_parts,
}


def _plan_stream(protocol: Protocol, reply: Reply, ctx: _Context) -> _Plan:
    """Lay out a protocol's events with the reply's faults, shared by all protocols.

    The earliest of error/drop/hang (ties: error, drop, hang) cuts the stream
    after that many deltas; ``malformed_after`` inserts one bad line and the
    stream carries on.
    """
    parts = _PARTS_BUILDERS[protocol](reply, ctx)
    n_deltas = len(parts.deltas)
    cut: tuple[int, _End | None] | None = None
    for after, end in (
        (reply.error_after, None),
        (reply.drop_after, _End.DROP),
        (reply.hang_after, _End.HANG),
    ):
        if after is not None and (cut is None or after < cut[0]):
            cut = (after, end)

    malformed_at = reply.malformed_after
    deltas = list(parts.deltas)
    if malformed_at is not None:
        bad = f"data: {_MALFORMED}{parts.eol}{parts.eol}".encode()
        deltas.insert(min(max(malformed_at, 0), n_deltas), bad)
    if cut is None:
        events = parts.preamble + deltas + parts.trailer
        end = _End.FINISH
    else:
        after, cut_end = cut
        kept = min(max(after, 0), n_deltas)
        if malformed_at is not None and malformed_at <= kept:
            kept += 1  # the inserted bad line sits before the cut
        events = parts.preamble + deltas[:kept]
        if cut_end is None:
            events.append(parts.error)
            end = _End.FINISH
        else:
            end = cut_end

    if reply.keepalive:
        comment = f": keep-alive{parts.eol}{parts.eol}".encode()
        events = [comment + e for e in events]
    return _Plan(
        events=events,
        end=end,
        write_delay=reply.write_delay,
        keepalive_every=reply.keepalive_every,
        gate=reply.text_gate,
        gate_at=len(parts.preamble),
    )


def openai_stream_body(
    deltas: list[str],
    model: str = "fake",
    *,
    include_usage: bool = False,
    finish_reason: str = "stop",
) -> bytes:
    """The exact bytes the OpenAI endpoint streams for ``deltas`` (benchmark input)."""
    reply = Reply(deltas=deltas, finish_reason=finish_reason)
    ctx = _Context(model=model, prompt="", include_usage=include_usage)
    return b"".join(_plan_stream("openai", reply, ctx).events)


def _full_body(protocol: Protocol, reply: Reply, ctx: _Context) -> dict[str, Any]:
    """The non-streaming JSON answer for a protocol."""
    text = _reply_text(reply, ctx) + (reply.text_after or "")
    prompt, completion = _usage(reply, _reply_deltas(reply, ctx))
    finish = _finish(protocol, reply)
    thinking = "".join(_reasoning_deltas(reply))
    calls = reply.tool_calls or []
    if protocol == "openai":
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["content"] = text or None
            message["tool_calls"] = [
                {
                    "id": _call_id("openai", c, n),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.json()},
                }
                for n, c in enumerate(calls)
            ]
        if thinking and reply.reasoning_as == "think":
            message["content"] = f"<think>{thinking}</think>\n\n{text}"
        elif thinking:
            message[reply.reasoning_as] = thinking
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": _CREATED,
            "model": ctx.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    if protocol == "anthropic":
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": [
                *(
                    [{"type": "thinking", "thinking": thinking, "signature": "sig"}]
                    if thinking
                    else []
                ),
                *([{"type": "text", "text": text}] if text or not calls else []),
                *(
                    {
                        "type": "tool_use",
                        "id": _call_id("anthropic", c, n),
                        "name": c.name,
                        "input": c.object(),
                    }
                    for n, c in enumerate(calls)
                ),
            ],
            "stop_reason": finish,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion},
        }
    body = _gemini_response(ctx, text, finish, (prompt, completion))
    if thinking:
        body["candidates"][0]["content"]["parts"].insert(0, {"text": thinking, "thought": True})
    if calls:
        parts = body["candidates"][0]["content"]["parts"]
        if not text:
            parts[:] = [p for p in parts if p.get("thought")]
        parts += [_gemini_call_part(c) for c in calls]
    return body


# --------------------------------------------------------------------------- errors


_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_GEMINI_STATUSES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _reason(status: int) -> str:
    """Human text for a status, including the non-standard 529."""
    if status == 529:
        return "Overloaded"
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(protocol: Protocol, status: int, message: str | None = None) -> dict[str, Any]:
    """The error JSON each provider returns for a non-2xx status."""
    message = message or _reason(status)
    if protocol == "openai":
        kind, code = _OPENAI_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    if protocol == "anthropic":
        default = "api_error" if status >= 500 else "invalid_request_error"
        kind = _ANTHROPIC_ERRORS.get(status, default)
        return {"type": "error", "error": {"type": kind, "message": message}}
    default = "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
    return {
        "error": {
            "code": status,
            "message": message,
            "status": _GEMINI_STATUSES.get(status, default),
        }
    }


# --------------------------------------------------------------------------- writing


def _pieces(data: bytes, sizes: int | list[int]) -> Iterator[tuple[int, int]]:
    """Byte-exact (start, end) slices of ``data``; list sizes are cycled."""
    cycle = [sizes] if isinstance(sizes, int) else list(sizes)
    if not cycle or any(s <= 0 for s in cycle):
        raise ValueError(f"write_sizes must be positive, got {sizes!r}")
    start, i = 0, 0
    while start < len(data):
        end = min(start + cycle[i % len(cycle)], len(data))
        yield start, end
        start, i = end, i + 1


def _writes(events: list[bytes], sizes: int | list[int] | None) -> Iterator[tuple[bytes, bool]]:
    """(bytes to write, whether an event boundary precedes it so ``delay`` applies)."""
    if sizes is None:
        for i, event in enumerate(events):
            yield event, i > 0
        return
    body = b"".join(events)
    starts = list(itertools.accumulate(len(e) for e in events[:-1]))  # offsets of events 1..n
    for start, end in _pieces(body, sizes):
        # does some event (other than the first) begin inside [start, end)?
        i = bisect.bisect_left(starts, start)
        crosses = i < len(starts) and starts[i] < end
        yield body[start:end], crosses


def _client_gone(request: web.Request) -> bool:
    """True once the peer closed the connection (aiohttp drops the transport)."""
    transport = request.transport
    return transport is None or transport.is_closing()


class _Outcome(enum.Enum):
    """Why a stream writer stopped."""

    DONE = "done"
    DISCONNECTED = "disconnected"
    SERVER_CLOSING = "server_closing"


# --------------------------------------------------------------------------- server


class FakeLLMServer(LoopbackServer):
    """The fake provider: start it, point a client at one of the base URLs, script replies."""

    def __init__(
        self,
        *,
        models: list[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        page_size: int | None = None,
    ) -> None:
        #: What every protocol's model list reports (Gemini's as ``models/<id>`` that can
        #: ``generateContent``).
        self.models: list[str] = list(models) if models is not None else ["fake"]
        #: Listed by Gemini's endpoint with only ``embedContent``: a client must leave them out.
        self.embedding_models: list[str] = []
        #: Anthropic's and Gemini's lists come in pages of this many (None: one page).
        self.page_size = page_size
        #: Every chat request for one of these answers 503 (the provider's "unavailable"
        #: error body), consuming no scripted action: a model that is down.
        self.down_models: set[str] = set()
        #: Every chat request for one of these answers 404 model-not-found, consuming nothing.
        self.missing_models: set[str] = set()
        #: A chat request for one of these that carries any part but text (an image, a file)
        #: answers 400 "does not support image input", consuming nothing: a text-only model.
        self.text_only_models: set[str] = set()
        #: A chat request for one of these that declares tools answers 400 "does not support
        #: tools" (as Ollama does), consuming nothing.
        self.no_tool_models: set[str] = set()
        #: While set, every model-list request (any protocol) answers this error.
        self.list_failure: Fail | None = None
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.open_streams = 0
        self.disconnects = 0
        self._queue: list[Action] = []
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> FakeLLMServer:
        """Bind the listening socket (port 0 picks a free one) and serve in the background."""
        if self._runner is not None:
            raise RuntimeError("FakeLLMServer already started")
        self._closing = asyncio.Event()
        app = web.Application(middlewares=[self._record_middleware])
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1beta/models", self._gemini_models)
        app.router.add_post("/v1/messages", self._anthropic_messages)
        app.router.add_post("/v1beta/models/{tail}", self._gemini)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        sockname = runner.addresses[0]
        self.port = int(sockname[1])
        return self

    async def close(self) -> None:
        """Wake hanging streams, then stop; safe to call twice."""
        if self._closing is not None:
            self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT``."""
        if self._runner is None and self.port == 0:
            raise RuntimeError("FakeLLMServer not started")
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """OpenAI SDK-style base URL (client appends /chat/completions)."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Anthropic base URL (client appends /v1/messages)."""
        return self.base_url

    @property
    def gemini_base_url(self) -> str:
        """Gemini base URL (client appends /models/{model}:method)."""
        return self.base_url + "/v1beta"

    # ----------------------------------------------------------------- scripting

    def enqueue(self, *actions: Action) -> None:
        """Append actions for the next chat requests (any protocol), first in first out."""
        for action in actions:
            if not isinstance(action, Reply | Fail | RawStream):
                raise TypeError(f"not a scripted action: {action!r}")
        self._queue.extend(actions)

    def set_stream(self, body: bytes, write_sizes: int | list[int] | None = None) -> None:
        """Make the next chat request receive ``body`` verbatim (queued like enqueue)."""
        self.enqueue(RawStream(body=body, write_sizes=write_sizes))

    @property
    def pending(self) -> int:
        """How many scripted actions have not been consumed yet."""
        return len(self._queue)

    def _next_action(self) -> Action:
        return self._queue.pop(0) if self._queue else Reply()

    # ----------------------------------------------------------------- recording

    @web.middleware
    async def _record_middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Any],
    ) -> web.StreamResponse:
        """Record every request (even 404s and failures) before it is acted on."""
        raw = await request.read()
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=_Headers(list(request.headers.items())),
            json=_parse_json(raw),
            body=raw,
            raw_path=request.raw_path.partition("?")[0],
        )
        self.requests.append(recorded)
        request[_RECORDED] = recorded
        response: web.StreamResponse = await handler(request)
        return response

    # ----------------------------------------------------------------- handlers

    async def _models(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/models``: Anthropic's paged list when asked with ``anthropic-version``,
        else OpenAI's (one page)."""
        anthropic = "anthropic-version" in request.headers
        if self.list_failure is not None:
            return await self._fail("anthropic" if anthropic else "openai", self.list_failure)
        if anthropic:
            return self._anthropic_models(request)
        data = [
            {"id": m, "object": "model", "created": _CREATED, "owned_by": "fake"}
            for m in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    def _page(self, names: list[str], start: int, asked: str | None) -> list[str]:
        size = len(names)
        if asked and asked.isdigit() and int(asked) > 0:
            size = int(asked)
        if self.page_size:
            size = min(size, self.page_size)
        return names[start : start + size]

    def _anthropic_models(self, request: web.Request) -> web.StreamResponse:
        after = request.query.get("after_id")
        start = self.models.index(after) + 1 if after in self.models else 0
        page = self._page(self.models, start, request.query.get("limit"))
        data = [
            {
                "type": "model",
                "id": m,
                "display_name": m.replace("-", " ").title(),
                "created_at": "2025-02-19T00:00:00Z",
            }
            for m in page
        ]
        return web.json_response(
            {
                "data": data,
                "has_more": start + len(page) < len(self.models),
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    async def _gemini_models(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1beta/models``: chat models and embedding models, paged by ``pageToken``."""
        if self.list_failure is not None:
            return await self._fail("gemini", self.list_failure)
        listed = [(m, ["generateContent", "countTokens"]) for m in self.models] + [
            (m, ["embedContent"]) for m in self.embedding_models
        ]
        token = request.query.get("pageToken", "")
        start = int(token) if token.isdigit() else 0
        names = [name for name, _ in listed]
        page = listed[start : start + len(self._page(names, start, request.query.get("pageSize")))]
        body: dict[str, Any] = {
            "models": [
                {
                    "name": f"models/{name}",
                    "displayName": name,
                    "supportedGenerationMethods": methods,
                }
                for name, methods in page
            ]
        }
        if start + len(page) < len(listed):
            body["nextPageToken"] = str(start + len(page))
        return web.json_response(body)

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        """OpenAI chat completions, streaming or not."""
        payload = _parse_json(await request.read())
        if not isinstance(payload, dict):
            return _json_error("openai", 400, "request body is not a JSON object")
        options = payload.get("stream_options") or {}
        ctx = _Context(
            model=str(payload.get("model") or "fake"),
            prompt=_last_user_text_openai(payload.get("messages")),
            include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        )
        return await self._chat(request, "openai", ctx, stream=bool(payload.get("stream")))

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic Messages, streaming or not."""
        payload = _parse_json(await request.read())
        if not isinstance(payload, dict):
            return _json_error("anthropic", 400, "request body is not a JSON object")
        ctx = _Context(
            model=str(payload.get("model") or "fake"),
            prompt=_last_user_text_anthropic(payload.get("messages")),
        )
        return await self._chat(request, "anthropic", ctx, stream=bool(payload.get("stream")))

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        """Gemini ``{model}:streamGenerateContent`` / ``:generateContent``."""
        model, _, method = request.match_info["tail"].rpartition(":")
        if method not in ("streamGenerateContent", "generateContent"):
            return _json_error("gemini", 404, f"method {method!r} not found")
        payload = _parse_json(await request.read())
        if not isinstance(payload, dict):
            return _json_error("gemini", 400, "request body is not a JSON object")
        ctx = _Context(model=model, prompt=_last_user_text_gemini(payload.get("contents")))
        if method == "generateContent":
            return await self._chat(request, "gemini", ctx, stream=False)
        if request.query.get("alt") == "sse":
            return await self._chat(request, "gemini", ctx, stream=True)
        return await self._chat(request, "gemini", ctx, stream=False, json_array=True)

    async def _chat(
        self,
        request: web.Request,
        protocol: Protocol,
        ctx: _Context,
        *,
        stream: bool,
        json_array: bool = False,
    ) -> web.StreamResponse:
        """Consume one scripted action and answer with it in ``protocol``'s dialect."""
        if ctx.model in self.down_models:
            return _json_error(protocol, 503, f"The model {ctx.model} is overloaded")
        if ctx.model in self.missing_models:
            return web.Response(
                status=404,
                text=_dumps(_model_not_found(protocol, ctx.model)),
                content_type="application/json",
            )
        if ctx.model in self.text_only_models:
            turns = request[_RECORDED].turns()
            media = ("image", "document")
            if any(part.kind in media for _, parts in turns for part in parts):
                return _json_error(protocol, 400, f"{ctx.model} does not support image input")
        if ctx.model in self.no_tool_models and request[_RECORDED].tool_names():
            return _json_error(protocol, 400, f"{ctx.model} does not support tools")
        action = self._next_action()
        if isinstance(action, Fail):
            return await self._fail(protocol, action)
        if isinstance(action, RawStream):
            plan = _Plan(events=[action.body])
            return await self._stream(
                request, plan, action.write_sizes, 0.0, content_type=action.content_type
            )
        if stream and not action.ignore_stream:
            plan = _plan_stream(protocol, action, ctx)
            return await self._stream(request, plan, action.write_sizes, action.delay)
        return await self._full(request, protocol, action, ctx, json_array=json_array)

    async def _fail(self, protocol: Protocol, fail: Fail) -> web.StreamResponse:
        """An HTTP error with the provider's error JSON unless a body is given."""
        if fail.delay > 0:
            await self._pause(fail.delay)
        body = fail.body if fail.body is not None else error_body(protocol, fail.status)
        headers = dict(fail.headers)
        has_type = any(k.lower() == "content-type" for k in headers)
        if isinstance(body, str):
            return web.Response(
                status=fail.status,
                text=body,
                headers=headers,
                content_type=None if has_type else "text/plain",
            )
        return web.Response(
            status=fail.status,
            text=_dumps(body),
            headers=headers,
            content_type=None if has_type else "application/json",
        )

    async def _full(
        self,
        request: web.Request,
        protocol: Protocol,
        reply: Reply,
        ctx: _Context,
        *,
        json_array: bool,
    ) -> web.StreamResponse:
        """Non-streaming answer; stream faults map to their nearest non-streaming form."""
        if reply.delay > 0 and await self._pause(reply.delay):
            return _json_error(protocol, 503, "server shutting down")
        if reply.hang_after is not None:
            self.open_streams += 1
            try:
                outcome = await self._hang(request)
            finally:
                self.open_streams -= 1
            if outcome is _Outcome.DISCONNECTED:
                self.disconnects += 1
            _abort(request)
            return web.Response()
        if reply.drop_after is not None:
            _abort(request)
            return web.Response()
        if reply.error_after is not None:
            return _json_error(protocol, 500, _UPSTREAM_FAILURE)
        if reply.malformed_after is not None:
            return web.Response(text=_MALFORMED, content_type="application/json")
        body: Any = _full_body(protocol, reply, ctx)
        if json_array:  # Gemini streamGenerateContent without alt=sse returns a JSON array
            body = [body]
        return web.Response(text=_dumps(body), content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        plan: _Plan,
        write_sizes: int | list[int] | None,
        delay: float,
        *,
        content_type: str = "text/event-stream",
    ) -> web.StreamResponse:
        """Write a planned stream with pauses and the planned ending, noticing disconnects."""
        resp = web.StreamResponse(status=200)
        resp.headers["Content-Type"] = content_type
        resp.headers["Cache-Control"] = "no-cache"
        self.open_streams += 1
        try:
            await resp.prepare(request)
            outcome = await self._write_events(request, resp, plan, write_sizes, delay)
            if outcome is _Outcome.DONE and plan.end is _End.HANG:
                outcome = await self._hang(request, resp, plan.keepalive_every)
        except ConnectionError:
            outcome = _Outcome.DISCONNECTED
        finally:
            self.open_streams -= 1
        if outcome is _Outcome.DISCONNECTED:
            self.disconnects += 1
        elif outcome is _Outcome.SERVER_CLOSING or plan.end is not _End.FINISH:
            _abort(request)  # leave the chunked body unfinished so the client sees an error
        return resp

    async def _write_events(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        plan: _Plan,
        write_sizes: int | list[int] | None,
        delay: float,
    ) -> _Outcome:
        """Write the plan's bytes (split per ``write_sizes``), sleeping ``delay`` between events."""
        await resp.write(b"")  # flush the buffered status line and headers right away
        for i, (piece, new_event) in enumerate(_writes(plan.events, write_sizes)):
            if plan.gate is not None and i == plan.gate_at and await self._gated(plan.gate):
                return _Outcome.SERVER_CLOSING
            if new_event and delay > 0 and await self._pause(delay):
                return _Outcome.SERVER_CLOSING
            if i and plan.write_delay > 0 and await self._pause(plan.write_delay):
                return _Outcome.SERVER_CLOSING
            if _client_gone(request):
                return _Outcome.DISCONNECTED
            await resp.write(piece)
        return _Outcome.DONE

    async def _hang(
        self,
        request: web.Request,
        resp: web.StreamResponse | None = None,
        keepalive_every: float | None = None,
    ) -> _Outcome:
        """Send nothing (but a keep-alive comment every ``keepalive_every`` s, if given) until the
        client leaves or the server closes."""
        while True:
            if _client_gone(request):
                return _Outcome.DISCONNECTED
            if keepalive_every and resp is not None:
                if await self._pause(keepalive_every):
                    return _Outcome.SERVER_CLOSING
                if _client_gone(request):
                    return _Outcome.DISCONNECTED
                await resp.write(b": keep-alive\n\n")
            elif await self._pause(0.01):
                return _Outcome.SERVER_CLOSING

    async def _gated(self, gate: asyncio.Event) -> bool:
        """Wait for ``gate``; True (at once) when the server closes first."""
        closing = self._closing
        assert closing is not None
        waits = {asyncio.ensure_future(gate.wait()), asyncio.ensure_future(closing.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return closing.is_set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep, but wake early (returning True) when the server is closing."""
        closing = self._closing
        assert closing is not None
        if closing.is_set():
            return True
        try:
            await asyncio.wait_for(closing.wait(), seconds)
        except TimeoutError:
            return False
        return True


# --------------------------------------------------------------------------- helpers


def _abort(request: web.Request) -> None:
    """Close the connection now; written bytes are flushed, the body stays unfinished."""
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.close()


def _json_error(protocol: Protocol, status: int, message: str) -> web.Response:
    """A provider-style JSON error response."""
    return web.Response(
        status=status,
        text=_dumps(error_body(protocol, status, message)),
        content_type="application/json",
    )


def _model_not_found(protocol: Protocol, model: str) -> dict[str, Any]:
    """Each provider's 404 for a model it does not know."""
    if protocol == "openai":
        message = f"The model `{model}` does not exist or you do not have access to it."
        return {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        }
    return error_body(protocol, 404, f"model: {model}")


def _parse_json(raw: bytes) -> Any:
    """Parsed JSON, or None for an empty or invalid body."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _text_of(content: Any) -> str:
    """Text of a message content: a string or a list of text blocks/parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        ]
        return "".join(texts)
    return ""


def _last_user_text_openai(messages: Any) -> str:
    """Content of the last ``role: user`` message (OpenAI or Anthropic shape)."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


_last_user_text_anthropic = _last_user_text_openai


def _last_user_text_gemini(contents: Any) -> str:
    """Text parts of the last user ``contents`` entry (role missing counts as user)."""
    if not isinstance(contents, list):
        return ""
    for content in reversed(contents):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            return _text_of(content.get("parts"))
    return ""
