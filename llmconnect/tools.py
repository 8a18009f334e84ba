"""Function calling: tools offered to the model, the calls it makes, the results sent back.

::

    from llmconnect import TOOL_CALL, Tool

    weather = Tool(
        "get_weather",
        "The current weather in a city.",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    async with await client.chat("Weather in Paris?", stream=True, tools=[weather]) as reply:
        async for kind, value in reply.events():
            if kind == TEXT:
                print(value, end="")
            elif kind == TOOL_CALL:         # a ToolCall, whole: id, name, arguments (a dict)
                print(f"\\n[calling {value.name}]")
    while reply.tool_calls:
        results = [call.result(run(call)) for call in reply.tool_calls]
        reply = await client.send_tool_results(results, stream=True, tools=[weather])
        async for delta in reply:            # the model goes on with the results
            print(delta, end="")

A :class:`Tool` is a name, a description and a JSON-schema object of its parameters; tools are
passed per call (``tools=``). Each protocol's streamed calls (OpenAI-compatible ``tool_calls``
deltas, Anthropic ``tool_use`` blocks, Gemini ``functionCall`` parts) come out as one shape,
:class:`ToolCall`, whole (its arguments parsed once, when the call is complete), as the
``("tool_call", ToolCall)`` event of :meth:`~llmconnect.ReplyStream.events` and in
``ReplyStream.tool_calls``. Arguments that are not a JSON object do not raise: the call comes
with ``arguments == {}`` and ``error`` saying what was wrong, for the caller to answer with an
error result.

The history (:attr:`~llmconnect.AsyncAPIClient.messages`) keeps tool turns in one neutral form,
encoded per protocol only when a request is built: an assistant turn with
``"tool_calls": [ToolCall, ...]`` and a ``{"role": "tool", "content": "", "tool_results":
[ToolResult, ...]}`` turn (:func:`assistant_turn`, :func:`tool_results_turn`;
``ToolCall.to_dict()``/``from_dict`` and the same for :class:`ToolResult` to store them as JSON).
A call left without a result (the caller stopped) gets an error result ``"not run"`` when the
history is sent, so every protocol's pairing rule holds. A request sent without tools (none
given, or a model that cannot take them: :func:`supports_tools`) carries the tool turns as plain
text notes instead, which every provider accepts.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import LLMError
from .parts import _matches, _names, _patterns
from .providers import ProviderSpec, resolve

__all__ = [
    "GENERATED_ID_PREFIX",
    "NOT_RUN",
    "TOOL_MODELS_VARIABLE",
    "TOOL_NAME_PATTERN",
    "Tool",
    "ToolCall",
    "ToolResult",
    "assistant_turn",
    "encode_tool_turns",
    "has_tool_turns",
    "new_call_id",
    "normalize_tool_keys",
    "parse_arguments",
    "supports_tools",
    "tool_results_turn",
    "tools_for",
]

#: What a tool name may be, for every protocol (OpenAI allows no ``.``; Gemini wants a letter or
#: ``_`` first): a front end naming MCP tools ``server.tool`` maps the dot (e.g. to ``__``).
TOOL_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_-]{0,63}"
_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)
#: Ids llmconnect makes up for a call the provider gave none (Gemini, some local servers); they
#: are never sent back to a provider as its own.
GENERATED_ID_PREFIX = "llmc_"
#: The result a call without one gets when the history is sent.
NOT_RUN = "the tool was not run (the reply was stopped)"
_EMPTY_OBJECT: Mapping[str, Any] = {"type": "object", "properties": {}}


#: The environment variable with more models that take tools (comma-separated patterns).
TOOL_MODELS_VARIABLE = "LLMCONNECT_TOOL_MODELS"


def tools_for(spec: ProviderSpec, model: str, env: Mapping[str, str]) -> bool:
    """Whether ``model`` of ``spec`` takes tools: it matches the row's ``tool_models`` and not
    its ``no_tool_models``, or it matches ``LLMCONNECT_TOOL_MODELS`` (model id, its last ``/``
    segment or ``provider/model``), which wins."""
    if spec.protocol == "echo":
        return False
    full, last, qualified = _names(spec.name, model)
    if _matches(_patterns(env, TOOL_MODELS_VARIABLE), full, last, qualified):
        return True
    return _matches(spec.tool_models, full, last) and not _matches(spec.no_tool_models, full, last)


def supports_tools(model_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``model_name`` (``provider/model``, or a bare provider for its default model) is
    sent tools; a client given tools for one that is not drops them
    (:attr:`~llmconnect.ReplyStream.tools_dropped`). An unknown provider: False."""
    env = os.environ if env is None else env
    try:
        resolved = resolve(model_name, env)
    except LLMError:
        return False
    return tools_for(resolved.spec, resolved.model, env)


def new_call_id() -> str:
    return f"{GENERATED_ID_PREFIX}{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: ``name`` (letters, digits, ``_``, ``-``; 64 at most),
    ``description`` (what it does, for the model) and ``parameters``, the JSON schema of its
    arguments (an ``object`` schema; default: no arguments)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(_EMPTY_OBJECT))

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TOOL_NAME.fullmatch(self.name):
            raise ValueError(
                f"invalid tool name {str(self.name)[:80]!r}: letters, digits, '_' and '-', "
                "a letter or '_' first, 64 characters at most"
            )
        if not isinstance(self.parameters, Mapping):
            raise TypeError("Tool parameters must be a JSON schema (a mapping)")
        if self.parameters.get("type", "object") != "object":
            raise ValueError("Tool parameters must be an object schema ({'type': 'object', ...})")

    @property
    def schema(self) -> dict[str, Any]:
        """The parameters as a plain dict, ``type: object`` always set."""
        return {"type": "object", **self.parameters}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made: ``id`` (pair its result with it), ``name``, ``arguments`` (a dict).

    ``error`` is set when the arguments the model sent were not a JSON object (then
    ``arguments`` is ``{}``): answer with an error result (``call.result(call.error,
    is_error=True)``) so the model can try again. ``signature`` is the provider's opaque data
    that must travel back with the call (Gemini's ``thoughtSignature``); leave it as it is.
    """

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    signature: str | None = field(default=None, repr=False)

    def result(self, content: str, *, is_error: bool = False) -> ToolResult:
        """This call's result."""
        return ToolResult(self.id, self.name, content, is_error)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for a conversation store); :meth:`from_dict` reads it back."""
        data: dict[str, Any] = {"id": self.id, "name": self.name, "arguments": self.arguments}
        if self.error is not None:
            data["error"] = self.error
        if self.signature is not None:
            data["signature"] = self.signature
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolCall:
        arguments = data.get("arguments")
        return cls(
            str(data["id"]),
            str(data["name"]),
            dict(arguments) if isinstance(arguments, Mapping) else {},
            None if data.get("error") is None else str(data["error"]),
            None if data.get("signature") is None else str(data["signature"]),
        )


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a call gave: ``call_id`` and ``name`` of the :class:`ToolCall`, ``content`` (text),
    ``is_error`` when the tool failed (or was refused, unknown, timed out...)."""

    call_id: str
    name: str
    content: str
    is_error: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"call_id": self.call_id, "name": self.name, "content": self.content}
        if self.is_error:
            data["is_error"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolResult:
        return cls(
            str(data["call_id"]),
            str(data["name"]),
            str(data.get("content") or ""),
            bool(data.get("is_error")),
        )


def parse_arguments(raw: str | Mapping[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """A call's arguments as a dict and, when they could not be read, why (then ``{}``).

    ``raw`` is the JSON text a protocol streamed (in pieces, joined) or an object it sent
    whole; empty text means no arguments.
    """
    if isinstance(raw, Mapping):
        return dict(raw), None
    if raw is None or not raw.strip():
        return {}, None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        shown = raw if len(raw) <= 200 else raw[:200] + "…"
        return {}, f"the arguments are not valid JSON ({exc.msg} at {exc.pos}): {shown}"
    if not isinstance(value, dict):
        return {}, f"the arguments are not a JSON object but {type(value).__name__}"
    return value, None


def _calls(value: Any) -> list[ToolCall]:
    return [c if isinstance(c, ToolCall) else ToolCall.from_dict(c) for c in value or ()]


def _results(value: Any) -> list[ToolResult]:
    return [r if isinstance(r, ToolResult) else ToolResult.from_dict(r) for r in value or ()]


def assistant_turn(text: str, tool_calls: Sequence[ToolCall]) -> dict[str, Any]:
    """A history entry for an assistant turn that made ``tool_calls`` (``text``: what it said
    before or after them, often ``""``)."""
    turn: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        turn["tool_calls"] = _calls(tool_calls)
    return turn


def tool_results_turn(results: Sequence[ToolResult]) -> dict[str, Any]:
    """A history entry carrying the results of the previous assistant turn's calls."""
    if not results:
        raise ValueError("a tool results turn needs at least one result")
    return {"role": "tool", "content": "", "tool_results": _results(results)}


def has_tool_turns(messages: Sequence[Mapping[str, Any]]) -> bool:
    return any("tool_calls" in m or m.get("role") == "tool" for m in messages)


def normalize_tool_keys(message: Mapping[str, Any], turn: dict[str, Any]) -> dict[str, Any]:
    """``turn`` with ``message``'s tool calls/results as objects (they may come as dicts)."""
    if message.get("tool_calls"):
        turn["tool_calls"] = _calls(message["tool_calls"])
    if message.get("tool_results"):
        turn["tool_results"] = _results(message["tool_results"])
    return turn


def _call_note(call: ToolCall) -> str:
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    return f"[called tool {call.name} with {arguments}]"


def _result_note(result: ToolResult) -> str:
    label = "error from" if result.is_error else "result of"
    return f"[{label} tool {result.name}: {result.content}]"


def encode_tool_turns(messages: list[dict[str, Any]], *, native: bool) -> list[dict[str, Any]]:
    """Prepared turns with their tool turns made sendable.

    ``native``: tools go with the request, so tool turns stay (a protocol encodes them); every
    call gets a result (``NOT_RUN`` as an error for one that has none, in the turn after its
    call), a result without its call is dropped. Not ``native``: each tool turn becomes text
    (an assistant turn's calls a note after its text, a results turn a user turn of notes).
    """
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        calls: list[ToolCall] = message.get("tool_calls") or []
        results: list[ToolResult] = message.get("tool_results") or []
        if message["role"] == "tool":
            if native:
                asked = out[-1].get("tool_calls") or [] if out else []
                ids = {c.id for c in asked}
                kept = [r for r in results if r.call_id in ids]
                if kept:
                    out.append({"role": "tool", "content": "", "tool_results": kept})
            elif results:
                notes = "\n".join(_result_note(r) for r in results)
                out.append({"role": "user", "content": notes})
            continue
        if not calls:
            out.append(message)
            continue
        if not native:
            text = message["content"] if isinstance(message["content"], str) else ""
            notes = "\n".join(_call_note(c) for c in calls)
            out.append({"role": message["role"], "content": f"{text}\n{notes}" if text else notes})
            continue
        out.append(message)
        following = messages[index + 1] if index + 1 < len(messages) else None
        answered = (
            {r.call_id for r in following.get("tool_results") or []}
            if following is not None and following["role"] == "tool"
            else set()
        )
        missing = [c.result(NOT_RUN, is_error=True) for c in calls if c.id not in answered]
        if missing:
            if following is not None and following["role"] == "tool":
                messages[index + 1] = {
                    **following,
                    "tool_results": [*following["tool_results"], *missing],
                }
            else:
                out.append({"role": "tool", "content": "", "tool_results": missing})
    return out
