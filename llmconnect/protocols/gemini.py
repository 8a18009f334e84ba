"""Google Gemini ``streamGenerateContent?alt=sse``.

Each ``data:`` is a whole ``GenerateContentResponse``: text in ``candidates[0].content.parts[].text``,
``finishReason`` and ``usageMetadata`` on the last one. There is no ``[DONE]``: the stream just ends.
The key travels in the ``x-goog-api-key`` header, never in the URL, so it cannot leak into a log line
that prints the URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from json import JSONDecodeError, loads
from typing import Any

from ..errors import StreamInterruptedError
from ..sse import SSEDecoder
from ..transport import error_from_body, open_stream, shared_http_client
from . import Call, ReplyState

__all__ = ["build_body", "stream_reply"]

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}
_CONFIG = {"max_tokens": "maxOutputTokens", "temperature": "temperature", "top_p": "topP"}


def build_body(call: Call) -> dict[str, Any]:
    contents = [
        {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
        for m in call.messages
        if m["role"] in ("user", "assistant")
    ]
    body: dict[str, Any] = {"contents": contents}
    if call.system:
        body["systemInstruction"] = {"parts": [{"text": call.system}]}
    config: dict[str, Any] = {}
    for key, value in call.options.items():
        if key in _CONFIG:
            config[_CONFIG[key]] = value
        elif key == "stop":
            config["stopSequences"] = [value] if isinstance(value, str) else list(value)
        else:
            body[key] = value
    if config:
        body["generationConfig"] = {**body.get("generationConfig", {}), **config}
    return body


def _take(call: Call, state: ReplyState, data: str) -> str | None:
    try:
        payload = loads(data)
    except JSONDecodeError:
        raise StreamInterruptedError(
            f"{call.provider}: malformed chunk in stream", provider=call.provider
        ) from None
    if "error" in payload:
        raise error_from_body(call.provider, None, payload, secrets=call.secrets)
    text = None
    candidates = payload.get("candidates")
    if candidates:
        candidate = candidates[0]
        parts = (candidate.get("content") or {}).get("parts")
        if parts:
            text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
        finish = candidate.get("finishReason")
        if finish:
            state.finish_reason = _FINISH.get(finish, finish.lower())
    usage = payload.get("usageMetadata")
    if usage:
        state.usage = {
            "input_tokens": int(usage.get("promptTokenCount") or 0),
            "output_tokens": int(usage.get("candidatesTokenCount") or 0),
        }
    return text


async def stream_reply(call: Call, state: ReplyState) -> AsyncIterator[str]:
    decoder = SSEDecoder()
    http = call.http or shared_http_client()
    headers = {"Accept": "text/event-stream"}
    if call.api_key:
        headers["x-goog-api-key"] = call.api_key
    async with open_stream(
        http,
        call.provider,
        "POST",
        f"{call.base_url}/models/{call.model}:streamGenerateContent?alt=sse",
        headers=headers,
        json_body=build_body(call),
        timeouts=call.timeouts,
        secrets=call.secrets,
    ) as body:
        async for raw in body:
            for _event, data in decoder.feed(raw):
                text = _take(call, state, data)
                if text:
                    yield text
        for _event, data in decoder.flush():
            text = _take(call, state, data)
            if text:
                yield text
    if state.finish_reason is None:
        raise StreamInterruptedError(
            f"{call.provider}: stream ended without a finish reason", provider=call.provider
        )
