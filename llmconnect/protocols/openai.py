"""OpenAI-compatible chat completions (OpenAI, Groq, AIML API, OpenRouter, Mistral, ...).

SSE ``data: {chat.completion.chunk}`` lines, no ``event:`` lines, ``data: [DONE]`` at the end. Text
is in ``choices[0].delta.content``; usage arrives in a last chunk with empty ``choices`` (or, on
Groq, in ``x_groq.usage``). A ``data: {"error": ...}`` in the middle of a stream raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from json import JSONDecodeError, loads
from typing import Any

from ..errors import StreamInterruptedError
from ..sse import SSEDecoder
from ..transport import error_from_body, open_stream, shared_http_client
from . import Call, ReplyState

__all__ = ["build_body", "build_headers", "stream_reply"]


def build_body(call: Call) -> dict[str, Any]:
    messages: list[dict[str, str]] = []
    if call.system:
        messages.append({"role": "system", "content": call.system})
    messages.extend(call.messages)
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


def _take(call: Call, state: ReplyState, data: str) -> str | None:
    """One chunk's text (or None); records finish reason and usage; raises on an error chunk."""
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
        finish = choice.get("finish_reason")
        if finish:
            state.finish_reason = finish
    elif "error" in chunk:
        raise error_from_body(call.provider, None, chunk, secrets=call.secrets)
    usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
    if usage:
        state.usage = {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        }
    return content


async def stream_reply(call: Call, state: ReplyState) -> AsyncIterator[str]:
    decoder = SSEDecoder()
    http = call.http or shared_http_client()
    async with open_stream(
        http,
        call.provider,
        "POST",
        f"{call.base_url}/chat/completions",
        headers=build_headers(call),
        json_body=build_body(call),
        timeouts=call.timeouts,
        secrets=call.secrets,
    ) as body:
        # Hot path: bytes → SSE data str → json.loads → dict lookups → str.
        async for raw in body:
            for _event, data in decoder.feed(raw):
                if data == "[DONE]":
                    return
                content = _take(call, state, data)
                if content:
                    yield content
        for _event, data in decoder.flush():
            if data == "[DONE]":
                return
            content = _take(call, state, data)
            if content:
                yield content
    if state.finish_reason is None:
        # The server closed cleanly but never said the reply was over: it was cut off.
        raise StreamInterruptedError(
            f"{call.provider}: stream ended without [DONE]", provider=call.provider
        )
