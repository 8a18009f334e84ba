"""OpenAI-compatible chat completions (OpenAI, Groq, AIML API, OpenRouter, Mistral, ...).

SSE ``data: {chat.completion.chunk}`` lines, no ``event:`` lines, ``data: [DONE]`` at the end. Text
is in ``choices[0].delta.content``; usage arrives in a last chunk with empty ``choices`` (or, on
Groq, in ``x_groq.usage``). A ``data: {"error": ...}`` in the middle of a stream raises. A server
that ignores ``stream: true`` answers one ``chat.completion`` object instead, read whole.

Reasoning arrives as ``delta.reasoning_content`` (DeepSeek, vLLM) or ``delta.reasoning``
(OpenRouter, Groq), or inline as ``<think>…</think>`` at the start of the content (Ollama, Qwen,
R1 distills): all yielded as :class:`~llmconnect.protocols.Thought`. A chunk with content skips the
reasoning fields, and once the content is known to be plain it is returned as it is.

Tool calls arrive as ``delta.tool_calls`` entries (``index``, then ``id`` and ``function.name``
once, ``function.arguments`` in pieces; several calls one index after another): a call is
complete when the next index starts or the finish reason comes (or at the end of the stream), and
is handed out then, whole (:class:`~llmconnect.protocols.Pieces`). Results go back as one
``role: tool`` message per call, after the assistant message that carries ``tool_calls``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from json import JSONDecodeError, dumps, loads
from typing import Any

from ..errors import StreamInterruptedError
from ..parts import Image, Part
from ..tools import Tool, ToolCall, ToolResult, new_call_id
from ..transport import error_from_body
from . import (
    END,
    THINK_CALLS,
    THINK_DONE,
    Call,
    Pieces,
    RawCall,
    ReplyState,
    Thought,
    data_url,
    finished_calls,
    split_think,
    stream_sse,
)

__all__ = ["build_body", "build_headers", "content", "stream_reply"]


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if isinstance(part, Image):
        url = part.url if part.data is None else data_url(part.media_type, part.data)
        return {"type": "image_url", "image_url": {"url": url}}
    return {
        "type": "file",
        "file": {
            "filename": part.name or "document.pdf",
            "file_data": data_url(part.media_type, part.data),
        },
    }


def content(value: str | list[Part]) -> str | list[dict[str, Any]]:
    """A message's content: a string as it is, parts as ``text``, ``image_url`` (a ``data:``
    URL, or the image's https URL) and ``file`` (a PDF as a ``data:`` URL) content parts."""
    if isinstance(value, str):
        return value
    return [_part(part) for part in value]


def tool(definition: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": definition.name, "parameters": definition.schema}
    if definition.description:
        function["description"] = definition.description
    return {"type": "function", "function": function}


def _tool_call(call: ToolCall) -> dict[str, Any]:
    arguments = dumps(call.arguments, ensure_ascii=False)
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def _tool_message(result: ToolResult) -> dict[str, Any]:
    text = f"Error: {result.content}" if result.is_error else result.content
    return {"role": "tool", "tool_call_id": result.call_id, "content": text}


def build_body(call: Call) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if call.system:
        messages.append({"role": "system", "content": call.system})
    tools = call.tools
    for message in call.messages:
        value = message["content"]
        if tools and ("tool_calls" in message or message["role"] == "tool"):
            if message["role"] == "tool":
                messages += [_tool_message(r) for r in message["tool_results"]]
            else:
                messages.append(
                    {
                        "role": "assistant",
                        "content": (value if value.__class__ is str else "") or None,
                        "tool_calls": [_tool_call(c) for c in message["tool_calls"]],
                    }
                )
        elif value.__class__ is str:
            messages.append(message)
        else:
            messages.append({"role": message["role"], "content": content(value)})
    body: dict[str, Any] = {"model": call.model, "messages": messages, "stream": True}
    if call.stream_usage:
        body["stream_options"] = {"include_usage": True}
    if tools:
        body["tools"] = [tool(t) for t in tools]
    body.update(call.options)
    return body


def _call_deltas(state: ReplyState, entries: Any, text: str | None) -> str | None:
    """A chunk's ``tool_calls`` entries added to the calls being read; the calls a new index
    finished, after ``text``, as :class:`Pieces` (else ``text``)."""
    calls = state.calls
    if calls is None:
        calls = state.calls = {}
    if state.think != THINK_CALLS:  # the next content is the slow path (_after_calls)
        state.think_before_calls, state.think = state.think, THINK_CALLS
    done: list[str | RawCall] = []
    for entry in entries:
        index = entry.get("index")
        function = entry.get("function") or {}
        if index is None:  # a server that leaves it out: a new id is a new call
            index = max(calls, default=-1)
            if index < 0 or (entry.get("id") and entry["id"] != calls[index].id):
                index += 1
        current = calls.get(index)
        if current is None:
            for earlier in sorted(calls):
                if earlier < index:
                    done.append(calls.pop(earlier))
            current = calls[index] = RawCall(str(entry.get("id") or new_call_id()), "")
        if function.get("name"):
            current.name += str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            current.pieces.append(arguments)
        elif isinstance(arguments, dict):  # a server that sends them as an object
            current.value = arguments
    if not done:
        return text
    return Pieces.of([text, *done] if text else done)


def build_headers(call: Call) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if call.api_key:
        headers["Authorization"] = f"Bearer {call.api_key}"
    return headers


def _take(call: Call, state: ReplyState, event: str, data: str) -> str | None:
    """One chunk's text (or None); records finish reason and usage; raises on an error chunk."""
    # Hot path: plain str → json.loads → dict lookups → str.
    if data == "[DONE]":
        return END
    try:
        chunk = loads(data)
    except JSONDecodeError:
        raise StreamInterruptedError(
            f"{call.provider}: malformed chunk in stream", provider=call.provider
        ) from None
    content = None
    choices = chunk.get("choices")
    if choices:
        choice = choices[0]
        delta = choice.get("delta")
        if delta:
            content = delta.get("content")
            if content:
                if state.think != THINK_DONE:
                    content = _after_calls(state, content)
            else:
                entries = delta.get("tool_calls")
                if entries:
                    content = _call_deltas(state, entries, None)
                else:
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                    if reasoning and isinstance(reasoning, str):
                        content = Thought(reasoning)
        finish = choice.get("finish_reason")
        if finish:
            state.finish_reason = finish
            if state.calls:
                content = _with_finished(state, content)
    elif "error" in chunk:
        raise error_from_body(call.provider, None, chunk, secrets=call.secrets)
    usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
    if usage:
        _usage(state, usage)
    return content


def _after_calls(state: ReplyState, content: str) -> str | None:
    """Content while ``think`` is not done: after tool calls, the calls (finished now) then the
    text; else the ``<think>`` splitter's."""
    if state.think != THINK_CALLS:
        return split_think(state, content)
    calls = finished_calls(state)  # restores ``think``
    text = split_think(state, content) if state.think != THINK_DONE else content
    if not isinstance(calls, Pieces):
        return text
    if text:
        calls.pieces.append(text)
    return calls


def _with_finished(state: ReplyState, content: str | None) -> str | None:
    """``content`` followed by every call still open: the reply is over."""
    if isinstance(content, Pieces):
        rest = finished_calls(state)
        if isinstance(rest, Pieces):
            content.pieces += rest.pieces
        return content
    return finished_calls(state, content)


def _usage(state: ReplyState, usage: Any) -> None:
    if isinstance(usage, dict):
        state.usage = {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        }


def _take_json(call: Call, state: ReplyState, body: Any) -> str:
    """A whole ``chat.completion`` object: ``choices[0].message.content``."""
    if not isinstance(body, dict):
        return ""
    choices = body.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        if "error" in body:
            raise error_from_body(call.provider, None, body, secrets=call.secrets)
        return ""
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    state.finish_reason = str(choices[0].get("finish_reason") or "stop")
    _usage(state, body.get("usage") or (body.get("x_groq") or {}).get("usage"))
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, str) else ""
    text = ""
    if isinstance(content, str) and content:
        for piece in (split_think(state, content), state.held_back()):
            if isinstance(piece, Thought):
                reasoning += piece
                text += piece.then
            elif piece:
                text += piece
    whole = Thought.of(reasoning, text) or ""
    entries = message.get("tool_calls")
    if entries and isinstance(entries, list):
        calls = _call_deltas(state, [e for e in entries if isinstance(e, dict)], whole or None)
        return _with_finished(state, calls) or ""
    return whole


def stream_reply(call: Call, state: ReplyState) -> AsyncGenerator[str, None]:
    url = f"{call.base_url}/chat/completions"
    return stream_sse(call, state, url, build_headers(call), build_body(call), _take, _take_json)
