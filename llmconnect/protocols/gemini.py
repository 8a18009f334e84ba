"""Google Gemini ``streamGenerateContent?alt=sse``.

Each ``data:`` is a whole ``GenerateContentResponse``: text in ``candidates[0].content.parts[].text``,
``finishReason`` and ``usageMetadata`` on the last one. Parts marked ``"thought": true`` are the
model's reasoning (yielded as :class:`~llmconnect.protocols.Thought`); their tokens
(``thoughtsTokenCount``) count as output. There is no ``[DONE]``: the stream just ends.
The key travels in the ``x-goog-api-key`` header, never in the URL, so it cannot leak into a log line
that prints the URL. The model id is one percent-encoded path segment. A server that ignores
``alt=sse`` answers one JSON ``GenerateContentResponse`` or a JSON array of them, read whole.

Tool calls are ``functionCall`` parts (``name``, ``args`` whole, an ``id`` on newer models, the
part's ``thoughtSignature`` kept on the call and sent back with it), handed out as they arrive.
Tools are declared with ``parametersJsonSchema`` (any JSON schema); results go back as
``functionResponse`` parts (``{"output": ...}`` or ``{"error": ...}``) of the next user turn.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from json import JSONDecodeError, dumps, loads
from typing import Any
from urllib.parse import quote

from ..errors import StreamInterruptedError
from ..parts import Image, Part
from ..tools import GENERATED_ID_PREFIX, Tool, ToolCall, ToolResult, new_call_id
from ..transport import error_from_body
from . import Call, Pieces, RawCall, ReplyState, Thought, b64, stream_sse

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


def tools(definitions: list[Tool]) -> list[dict[str, Any]]:
    declarations = []
    for definition in definitions:
        declaration: dict[str, Any] = {
            "name": definition.name,
            "parametersJsonSchema": definition.schema,
        }
        if definition.description:
            declaration["description"] = definition.description
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def _function_call(call: ToolCall) -> dict[str, Any]:
    function: dict[str, Any] = {"name": call.name, "args": call.arguments}
    if not call.id.startswith(GENERATED_ID_PREFIX):  # an id Gemini gave: it pairs the result
        function["id"] = call.id
    part: dict[str, Any] = {"functionCall": function}
    if call.signature:
        part["thoughtSignature"] = call.signature
    return part


def _function_response(result: ToolResult) -> dict[str, Any]:
    key = "error" if result.is_error else "output"
    function: dict[str, Any] = {"name": result.name, "response": {key: result.content}}
    if not result.call_id.startswith(GENERATED_ID_PREFIX):
        function["id"] = result.call_id
    return {"functionResponse": function}


def _content(m: dict[str, Any], tools: bool) -> dict[str, Any]:
    role = "model" if m["role"] == "assistant" else "user"
    if tools and m["role"] == "tool":
        return {"role": "user", "parts": [_function_response(r) for r in m["tool_results"]]}
    if tools and "tool_calls" in m:
        text = m["content"] if m["content"].__class__ is str else ""
        calls = [_function_call(c) for c in m["tool_calls"]]
        return {"role": role, "parts": ([{"text": text}] if text else []) + calls}
    return {"role": role, "parts": parts(m["content"])}


def build_body(call: Call) -> dict[str, Any]:
    with_tools = bool(call.tools)
    contents = [
        _content(m, with_tools)
        for m in call.messages
        if m["role"] in ("user", "assistant") or (with_tools and m["role"] == "tool")
    ]
    body: dict[str, Any] = {"contents": contents}
    if call.tools:
        body["tools"] = tools(call.tools)
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
    calls: list[str | RawCall] = []
    for response in responses:
        if isinstance(response, dict):
            piece = _response(call, state, response) or ""
            if isinstance(piece, Pieces):
                for inner in piece.pieces:
                    if isinstance(inner, RawCall):
                        calls.append(inner)
                    elif isinstance(inner, Thought):
                        reasoning += inner
                    else:
                        answer += inner
            elif isinstance(piece, Thought):
                reasoning += piece
                answer += piece.then
            else:
                answer += piece
    whole = Thought.of(reasoning, answer) or ""
    if calls:
        return Pieces.of([whole, *calls] if whole else calls)
    return whole


def _raw_call(part: dict[str, Any]) -> RawCall:
    function = part.get("functionCall") or {}
    args = function.get("args")
    signature = part.get("thoughtSignature") or part.get("thought_signature")
    raw = RawCall(
        str(function.get("id") or new_call_id()),
        str(function.get("name") or ""),
        signature=str(signature) if signature else None,
    )
    if isinstance(args, dict) or args is None:
        raw.value = args or {}
    else:  # not an object: the client says so on the call
        raw.pieces.append(dumps(args))
    return raw


def _mixed(parts: list[dict[str, Any]]) -> Pieces:
    """A response's parts, calls among them, in order."""
    pieces: list[str | RawCall] = []
    for part in parts:
        if "functionCall" in part:
            pieces.append(_raw_call(part))
        elif part.get("text"):
            pieces.append(Thought(part["text"]) if part.get("thought") else str(part["text"]))
    return Pieces.of(pieces)


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
                if text:
                    if part.get("thought"):
                        text = Thought(text)
                elif "functionCall" in part:
                    text = Pieces.of([_raw_call(part)])
            elif any("functionCall" in p for p in parts):
                text = _mixed(parts)
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
