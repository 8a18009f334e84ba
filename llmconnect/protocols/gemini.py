"""Google Gemini ``streamGenerateContent?alt=sse``.

Each ``data:`` is a whole ``GenerateContentResponse``: text in ``candidates[0].content.parts[].text``,
``finishReason`` and ``usageMetadata`` on the last one. Parts marked ``"thought": true`` are the
model's reasoning (yielded as :class:`~llmconnect.protocols.Thought`); their tokens
(``thoughtsTokenCount``) count as output. There is no ``[DONE]``: the stream just ends.
The key travels in the ``x-goog-api-key`` header, never in the URL, so it cannot leak into a log line
that prints the URL. The model id is one percent-encoded path segment. A server that ignores
``alt=sse`` answers one JSON ``GenerateContentResponse`` or a JSON array of them, read whole.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from json import JSONDecodeError, loads
from typing import Any
from urllib.parse import quote

from ..errors import StreamInterruptedError
from ..parts import Image, Part
from ..transport import error_from_body
from . import Call, ReplyState, Thought, b64, stream_sse

__all__ = ["build_body", "parts", "stream_reply"]

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}
_CONFIG = {"max_tokens": "maxOutputTokens", "temperature": "temperature", "top_p": "topP"}


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, str):
        return {"text": part}
    if isinstance(part, Image) and part.data is None:
        # An https URL the API fetches itself (Gemini's "external URLs" file input).
        return {"file_data": {"mime_type": part.media_type, "file_uri": part.url}}
    assert part.data is not None
    return {"inline_data": {"mime_type": part.media_type, "data": b64(part.data)}}


def parts(value: str | list[Part]) -> list[dict[str, Any]]:
    """A message's content as Gemini parts: ``text``, ``inline_data`` (base64 image or PDF), and
    ``file_data`` for an image given by its https URL."""
    if isinstance(value, str):
        return [{"text": value}]
    return [_part(part) for part in value]


def build_body(call: Call) -> dict[str, Any]:
    contents = [
        {"role": "model" if m["role"] == "assistant" else "user", "parts": parts(m["content"])}
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


def _take(call: Call, state: ReplyState, event: str, data: str) -> str | None:
    try:
        payload = loads(data)
    except JSONDecodeError:
        raise StreamInterruptedError(
            f"{call.provider}: malformed chunk in stream", provider=call.provider
        ) from None
    return _response(call, state, payload)


def _take_json(call: Call, state: ReplyState, body: Any) -> str:
    """A whole ``GenerateContentResponse``, or a JSON array of them (``streamGenerateContent``
    without ``alt=sse``)."""
    responses = body if isinstance(body, list) else [body]
    reasoning, answer = "", ""
    for response in responses:
        if isinstance(response, dict):
            piece = _response(call, state, response) or ""
            if isinstance(piece, Thought):
                reasoning += piece
                answer += piece.then
            else:
                answer += piece
    return Thought.of(reasoning, answer) or ""


def _response(call: Call, state: ReplyState, payload: Any) -> str | None:
    """One ``GenerateContentResponse``: its text; records finish reason and usage."""
    if "error" in payload:
        raise error_from_body(call.provider, None, payload, secrets=call.secrets)
    text = None
    candidates = payload.get("candidates")
    if candidates:
        candidate = candidates[0]
        parts = (candidate.get("content") or {}).get("parts")
        if parts:
            if len(parts) == 1:  # hot path: one part per chunk
                part = parts[0]
                text = part.get("text")
                if text and part.get("thought"):
                    text = Thought(text)
            else:
                thought = "".join(p.get("text", "") for p in parts if p.get("thought"))
                answer = "".join(p.get("text", "") for p in parts if not p.get("thought"))
                text = Thought.of(thought, answer)
        finish = candidate.get("finishReason")
        if finish:
            state.finish_reason = _FINISH.get(finish, finish.lower())
    usage = payload.get("usageMetadata")
    if usage:
        state.usage = {
            "input_tokens": int(usage.get("promptTokenCount") or 0),
            "output_tokens": int(usage.get("candidatesTokenCount") or 0)
            + int(usage.get("thoughtsTokenCount") or 0),
        }
    return text


def stream_reply(call: Call, state: ReplyState) -> AsyncGenerator[str, None]:
    headers = {"Accept": "text/event-stream"}
    if call.api_key:
        headers["x-goog-api-key"] = call.api_key
    model = quote(call.model, safe="")  # one path segment, whatever the id holds
    url = f"{call.base_url}/models/{model}:streamGenerateContent?alt=sse"
    return stream_sse(call, state, url, headers, build_body(call), _take, _take_json)
