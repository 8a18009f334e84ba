"""Deliver a :class:`~core.engine.Reply` to a platform through its :class:`MessageSink`.

Every adapter needs exactly this loop (deltas → renderer, then the final note for an error or a
stop, and a quiet stop when the platform message was deleted), so it lives in core.
"""

from __future__ import annotations

from .clock import Clock
from .conversations import Status
from .engine import ChatEngine, Reply
from .render import EditBudget, MessageSink, RenderResult, SinkGone, StreamRenderer

__all__ = ["STOPPED_NOTE", "deliver", "final_note"]

STOPPED_NOTE = "⏹ stopped"


def final_note(reply: Reply) -> str | None:
    """The line appended under a reply that did not complete."""
    if reply.status is Status.ERROR:
        return f"⚠️ {reply.error or 'The language model failed to answer.'}"
    if reply.status is Status.CANCELLED:
        return STOPPED_NOTE
    return None


async def deliver(
    engine: ChatEngine,
    reply: Reply,
    sink: MessageSink,
    *,
    min_interval: float,
    budget: EditBudget | None = None,
    clock: Clock | None = None,
) -> RenderResult:
    """Stream ``reply`` into ``sink`` and end on its complete text (plus a note, if any)."""
    renderer = StreamRenderer(sink, min_interval=min_interval, budget=budget, clock=clock)
    try:
        async for delta in reply:
            await renderer.feed(delta)
    except SinkGone:
        # The reply message was deleted: stop generating, quietly.
        await engine.stop(reply.key)
    await reply
    return await renderer.finish(final_note(reply))
