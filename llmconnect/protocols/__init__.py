"""Wire protocols: one module per protocol, each a ``stream_reply(call, state)`` async generator.

A protocol turns a :class:`Call` into text deltas (plain ``str``) and records the finish reason and
token usage on a :class:`ReplyState`. The per-chunk path stays on bytes, dicts and strings; typed
objects are built once per reply by the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..transport import Timeouts

__all__ = ["PROTOCOLS", "Call", "ReplyState", "StreamFn"]


@dataclass(slots=True)
class Call:
    """Everything one request needs; built per reply by the client."""

    provider: str
    model: str
    base_url: str
    api_key: str | None
    #: Conversation turns, ``{"role": "user"|"assistant", "content": str}``, ending with the user turn.
    messages: list[dict[str, str]]
    system: str | None
    options: dict[str, Any]
    http: httpx.AsyncClient | None
    timeouts: Timeouts
    stream_usage: bool = True

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.api_key,) if self.api_key else ()


@dataclass(slots=True)
class ReplyState:
    """Filled in while streaming; read by the client once the stream ends."""

    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


StreamFn = Callable[[Call, ReplyState], AsyncIterator[str]]


def _load() -> dict[str, StreamFn]:
    from . import anthropic, echo, gemini, openai

    return {
        "openai": openai.stream_reply,
        "anthropic": anthropic.stream_reply,
        "gemini": gemini.stream_reply,
        "echo": echo.stream_reply,
    }


PROTOCOLS: dict[str, StreamFn] = {}


def protocol(name: str) -> StreamFn:
    if not PROTOCOLS:
        PROTOCOLS.update(_load())
    return PROTOCOLS[name]
