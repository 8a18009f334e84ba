"""Wire protocols: one module per protocol, each a ``stream_reply(call, state)`` async generator.

A protocol turns a :class:`Call` into text deltas (plain ``str``) and records the finish reason and
token usage on a :class:`ReplyState`. The per-chunk path stays on bytes, dicts and strings; typed
objects are built once per reply by the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from ..errors import StreamInterruptedError
from ..sse import SSEDecoder
from ..transport import Timeouts, open_stream, shared_http_client

__all__ = ["END", "PROTOCOLS", "Call", "EventFn", "ReplyState", "StreamFn", "stream_sse"]


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


class _End(str):
    __slots__ = ()


#: Returned by an :data:`EventFn` for the event that says the reply is over (``[DONE]``,
#: ``message_stop``). A non-empty ``str`` so the hot loop tests one truthiness, then identity.
END: Final = _End("<end>")

#: One SSE event ``(call, state, event_name, data)`` → its text, ``None``, or :data:`END`.
EventFn = Callable[[Call, ReplyState, str, str], "str | None"]


async def stream_sse(
    call: Call,
    state: ReplyState,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    on_event: EventFn,
) -> AsyncIterator[str]:
    """POST ``body`` and yield the text of each SSE event, as ``on_event`` reads it.

    The one streaming loop of every SSE protocol: bytes → :class:`SSEDecoder` → ``on_event`` →
    ``str``. A stream that ends without its end event and without a finish reason was cut off.
    """
    decoder = SSEDecoder()
    async with open_stream(
        call.http or shared_http_client(),
        call.provider,
        "POST",
        url,
        headers=headers,
        json_body=body,
        timeouts=call.timeouts,
        secrets=call.secrets,
    ) as reads:
        async for raw in reads:
            for event, data in decoder.feed(raw):
                text = on_event(call, state, event, data)
                if text:
                    if text is END:
                        return
                    yield text
        for event, data in decoder.flush():
            text = on_event(call, state, event, data)
            if text:
                if text is END:
                    return
                yield text
    if state.finish_reason is None:
        raise StreamInterruptedError(
            f"{call.provider}: the stream ended before the reply was complete",
            provider=call.provider,
        )


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
