"""OpenAI-compatible chat completions (OpenAI, Groq, AIML API, OpenRouter, Mistral, ...).

SSE ``data: {chat.completion.chunk}`` lines, no ``event:`` lines, ``data: [DONE]`` at the end. Text
is in ``choices[0].delta.content``; usage arrives in a last chunk with empty ``choices`` (or, on
Groq, in ``x_groq.usage``). A ``data: {"error": ...}`` in the middle of a stream raises. A server
that ignores ``stream: true`` answers one ``chat.completion`` object instead, read whole.

Reasoning arrives as ``delta.reasoning_content`` (DeepSeek, vLLM) or ``delta.reasoning``
(OpenRouter, Groq), or inline as ``<think>…</think>`` at the start of the content (Ollama, Qwen,
R1 distills): all yielded as :class:`~llmconnect.protocols.Thought`. A chunk with content skips the
reasoning fields, and once the content is known to be plain it is returned as it is.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from json import JSONDecodeError, loads
from typing import Any

from ..errors import StreamInterruptedError
from ..parts import Image, Part
from ..transport import error_from_body
from . import END, THINK_DONE, Call, ReplyState, Thought, data_url, split_think, stream_sse

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


def build_body(call: Call) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if call.system:
        messages.append({"role": "system", "content": call.system})
    for message in call.messages:
        value = message["content"]
        if value.__class__ is str:
            messages.append(message)
        else:
            messages.append({"role": message["role"], "content": content(value)})
    body: dict[str, Any] = {"model": call.model, "messages": messages, "stream": True}
    if call.stream_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(call.options)
    return body


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
                    content = split_think(state, content)
            else:
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning and isinstance(reasoning, str):
                    content = Thought(reasoning)
        finish = choice.get("finish_reason")
        if finish:
            state.finish_reason = finish
    elif "error" in chunk:
        raise error_from_body(call.provider, None, chunk, secrets=call.secrets)
    usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
    if usage:
        _usage(state, usage)
    return content


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
    return Thought.of(reasoning, text) or ""


def stream_reply(call: Call, state: ReplyState) -> AsyncGenerator[str, None]:
    url = f"{call.base_url}/chat/completions"
    return stream_sse(call, state, url, build_headers(call), build_body(call), _take, _take_json)
