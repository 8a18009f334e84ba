"""Anthropic Messages streaming (``POST /v1/messages`` with ``stream: true``).

Events: ``message_start`` (input usage), ``content_block_delta`` with ``text_delta.text``,
``message_delta`` (``stop_reason``, cumulative ``usage.output_tokens``), ``message_stop``; ``ping``
is ignored and ``event: error`` raises. Extended thinking arrives in ``thinking`` content blocks as
``thinking_delta.thinking`` (yielded as :class:`~llmconnect.protocols.Thought`); their
``signature_delta`` is ignored. A server that ignores ``stream: true`` answers one
``message`` object instead, read whole.

Tool calls are ``tool_use`` content blocks: ``content_block_start`` (id, name), the arguments as
``input_json_delta.partial_json`` pieces, ``content_block_stop`` (the call is whole: handed out
then). Results go back as ``tool_result`` blocks of the next user message; ids are kept to the
characters Anthropic accepts.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from json import JSONDecodeError, loads
from typing import Any

from ..errors import StreamInterruptedError
from ..parts import Image, Part
from ..tools import Tool, ToolCall, ToolResult, new_call_id
from ..transport import error_from_body
from . import END, Call, Pieces, RawCall, ReplyState, Thought, b64, stream_sse

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "build_body", "content", "stream_reply"]

ANTHROPIC_VERSION = "2023-06-01"
#: The Messages API requires max_tokens; this is used when the caller sets none.
DEFAULT_MAX_TOKENS = 4096

# Anthropic's stop reasons mapped onto the OpenAI vocabulary the client reports.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def _block(part: Part) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if isinstance(part, Image):
        if part.data is None:
            return {"type": "image", "source": {"type": "url", "url": part.url}}
        source = {"type": "base64", "media_type": part.media_type, "data": b64(part.data)}
        return {"type": "image", "source": source}
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": part.media_type, "data": b64(part.data)},
    }
    if part.name:
        block["title"] = part.name
    return block


def content(value: str | list[Part]) -> str | list[dict[str, Any]]:
    """A message's content: a string as it is, parts as ``text``, ``image`` (base64 source, or
    url source for an https image) and ``document`` (a base64 PDF, titled with its name) blocks."""
    if isinstance(value, str):
        return value
    return [_block(part) for part in value]


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _id(value: str) -> str:
    """A call id as Anthropic takes it (``^[a-zA-Z0-9_-]+$``): another provider's may hold more."""
    return _ID_UNSAFE.sub("_", value) or "call"


def tool(definition: Tool) -> dict[str, Any]:
    encoded: dict[str, Any] = {"name": definition.name, "input_schema": definition.schema}
    if definition.description:
        encoded["description"] = definition.description
    return encoded


def _tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": _id(call.id), "name": call.name, "input": call.arguments}


def _tool_result(result: ToolResult) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": _id(result.call_id),
        "content": result.content,
    }
    if result.is_error:
        block["is_error"] = True
    return block


def _message(m: dict[str, Any], tools: bool) -> dict[str, Any]:
    if tools and m["role"] == "tool":
        return {"role": "user", "content": [_tool_result(r) for r in m["tool_results"]]}
    if tools and "tool_calls" in m:
        text = m["content"] if m["content"].__class__ is str else ""
        blocks = [{"type": "text", "text": text}] if text else []
        return {"role": m["role"], "content": blocks + [_tool_use(c) for c in m["tool_calls"]]}
    if m["content"].__class__ is str:
        return m
    return {"role": m["role"], "content": content(m["content"])}


def build_body(call: Call) -> dict[str, Any]:
    options = dict(call.options)
    tools = bool(call.tools)
    body: dict[str, Any] = {
        "model": call.model,
        "messages": [
            _message(m, tools)
            for m in call.messages
            if m["role"] in ("user", "assistant") or (tools and m["role"] == "tool")
        ],
        "max_tokens": options.pop("max_tokens", DEFAULT_MAX_TOKENS),
        "stream": True,
    }
    if "stop" in options:
        stop = options.pop("stop")
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if call.system:
        body["system"] = call.system
    if call.tools:
        body["tools"] = [tool(t) for t in call.tools]
    body.update(options)
    return body


def _headers(call: Call) -> dict[str, str]:
    headers = {"anthropic-version": ANTHROPIC_VERSION, "Accept": "text/event-stream"}
    if call.api_key:
        headers["x-api-key"] = call.api_key
    return headers


def _take(call: Call, state: ReplyState, event: str, data: str) -> str | None:
    if event == "ping":
        return None
    if event == "message_stop":
        return END
    try:
        payload = loads(data)
    except JSONDecodeError:
        raise StreamInterruptedError(
            f"{call.provider}: malformed event in stream", provider=call.provider
        ) from None
    kind = event or payload.get("type", "")
    if kind == "content_block_delta":
        delta = payload.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return delta.get("text")
        if kind == "thinking_delta":
            return Thought.of(str(delta.get("thinking") or ""))
        if kind == "input_json_delta" and state.calls:
            open_call = state.calls.get(payload.get("index", -1))
            if open_call is not None:
                open_call.pieces.append(str(delta.get("partial_json") or ""))
        return None
    if kind == "content_block_start":
        block = payload.get("content_block") or {}
        if block.get("type") == "tool_use":
            if state.calls is None:
                state.calls = {}
            started = RawCall(str(block.get("id") or new_call_id()), str(block.get("name") or ""))
            if block.get("input"):  # streamed input starts as {} and comes in deltas
                started.value = block["input"]
            state.calls[payload.get("index", -1)] = started
    elif kind == "content_block_stop":
        if state.calls:
            done = state.calls.pop(payload.get("index", -1), None)
            if done is not None:
                return Pieces.of([done])
    elif kind == "message_start":
        usage = (payload.get("message") or {}).get("usage") or {}
        state.usage = {
            "input_tokens": int(usage.get("input_tokens") or 0),
            "output_tokens": int(usage.get("output_tokens") or 0),
        }
    elif kind == "message_delta":
        stop = (payload.get("delta") or {}).get("stop_reason")
        if stop:
            state.finish_reason = _FINISH.get(stop, stop)
        output = (payload.get("usage") or {}).get("output_tokens")
        if output is not None:
            state.usage["output_tokens"] = int(output)  # cumulative, so the last one wins
    elif kind == "error":
        raise error_from_body(call.provider, None, payload, secrets=call.secrets)
    return None


def _take_json(call: Call, state: ReplyState, body: Any) -> str:
    """A whole ``message`` object: its ``text`` content blocks."""
    if not isinstance(body, dict):
        return ""
    if body.get("type") == "error" or "error" in body:
        raise error_from_body(call.provider, None, body, secrets=call.secrets)
    content = body.get("content")
    if body.get("type") != "message" or not isinstance(content, list):
        return ""
    stop = body.get("stop_reason") or "end_turn"
    state.finish_reason = _FINISH.get(str(stop), str(stop))
    usage = body.get("usage")
    if isinstance(usage, dict):
        state.usage = {
            "input_tokens": int(usage.get("input_tokens") or 0),
            "output_tokens": int(usage.get("output_tokens") or 0),
        }
    blocks = [block for block in content if isinstance(block, dict)]
    text = "".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")
    thinking = "".join(str(b.get("thinking") or "") for b in blocks if b.get("type") == "thinking")
    whole = Thought.of(thinking, text) or ""
    calls: list[str | RawCall] = [
        RawCall(
            str(b.get("id") or new_call_id()),
            str(b.get("name") or ""),
            value=b["input"] if isinstance(b.get("input"), dict) else {},
        )
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    if calls:
        return Pieces.of([whole, *calls] if whole else calls)
    return whole


def stream_reply(call: Call, state: ReplyState) -> AsyncGenerator[str, None]:
    url = f"{call.base_url}/v1/messages"
    return stream_sse(
        call, state, url, _headers(call), build_body(call), _take, _take_json, pings=True
    )
