"""Deliver a :class:`~core.engine.Reply` to a platform through its :class:`MessageSink`.

Every adapter needs exactly this loop (deltas → renderer, then the final note for an error or a
stop, and a quiet stop when the platform message was deleted), so it lives in core.
:func:`deliver_with` runs the same loop over any :class:`Renderer` (e.g. a platform's own
streaming API, such as Slack's ``chat.startStream``), :func:`deliver` over a
:class:`~core.render.StreamRenderer` of progressive edits.
"""

from __future__ import annotations

from typing import Protocol

from .budget import EditBudget, SendBudgets
from .clock import Clock
from .conversations import Status
from .engine import ChatEngine, Reply
from .fallback import fallback_line
from .render import MessageSink, RenderResult, SinkGone, StreamRenderer

__all__ = [
    "EMPTY_NOTE",
    "STOPPED_NOTE",
    "Outcome",
    "Renderer",
    "deliver",
    "deliver_with",
    "final_note",
]

STOPPED_NOTE = "⏹ stopped"
EMPTY_NOTE = "(the model returned an empty answer)"


class Renderer(Protocol):
    """What :func:`deliver_with` drives; :class:`~core.render.StreamRenderer` is one.

    ``feed`` must not wait on the network and raises :class:`SinkGone` once the platform message
    is gone; ``finish(note)`` ends on the complete text (plus ``note`` on its own line).
    """

    async def feed(self, delta: str) -> None: ...

    async def finish(self, note: str | None = None) -> RenderResult: ...


class Outcome(Protocol):
    """What a note depends on: a :class:`Reply`, or a stored assistant
    :class:`~core.conversations.Message` (a front end showing history shows the same note)."""

    @property
    def status(self) -> Status: ...

    @property
    def error(self) -> str | None: ...

    @property
    def text(self) -> str: ...

    @property
    def model(self) -> str | None: ...

    @property
    def unavailable(self) -> tuple[str, ...]: ...


def final_note(reply: Outcome) -> str | None:
    """The line(s) appended under a reply: which model answered when the conversation's was
    unavailable (``answered by M — U was unavailable``, :mod:`core.fallback`), then why it did
    not complete (or that it completed with no text, which would otherwise leave the asker with
    nothing at all)."""
    answered = reply.status is Status.COMPLETE or bool(reply.text)
    fallback = fallback_line(reply.model, reply.unavailable, answered)
    note = _status_note(reply)
    if fallback and note:
        return f"{fallback}\n{note}"
    return fallback or note


def _status_note(reply: Outcome) -> str | None:
    if reply.status is Status.ERROR:
        return f"⚠️ {reply.error or 'The language model failed to answer.'}"
    if reply.status is Status.CANCELLED:
        return STOPPED_NOTE
    if reply.status is Status.COMPLETE and not reply.text:
        return EMPTY_NOTE
    return None


async def deliver(
    engine: ChatEngine,
    reply: Reply,
    sink: MessageSink,
    *,
    min_interval: float,
    budget: EditBudget | SendBudgets | None = None,
    clock: Clock | None = None,
    window_limit: int = 0,
    window_seconds: float = 0.0,
) -> RenderResult:
    """Stream ``reply`` into ``sink`` and end on its complete text (plus a note, if any);
    ``window_limit``/``window_seconds``: the platform's edit window (see StreamRenderer)."""
    renderer = StreamRenderer(
        sink,
        min_interval=min_interval,
        budget=budget,
        clock=clock,
        window_limit=window_limit,
        window_seconds=window_seconds,
    )
    return await deliver_with(engine, reply, renderer)


async def deliver_with(engine: ChatEngine, reply: Reply, renderer: Renderer) -> RenderResult:
    """Stream ``reply`` into ``renderer`` and end on its complete text (plus a note, if any).

    Records the reply's platform requests, budget wait and final lag in ``engine.metrics``, once,
    when it ends (nothing per delta)."""
    result: RenderResult | None = None
    ended: float | None = None
    failed = False
    try:
        try:
            async for delta in reply:
                await renderer.feed(delta)
        except SinkGone:
            # The reply message was deleted: stop generating, quietly. Only while this reply
            # still runs: once it is done, stop(key) would cancel the next queued prompt instead.
            if not reply.done:
                await engine.stop(reply.key)
        await reply
        ended = engine.clock.now()
        result = await renderer.finish(final_note(reply))
        return result
    except Exception:
        failed = True
        raise
    finally:
        lag = None
        if result is not None and not result.gone and ended is not None:
            lag = engine.clock.now() - ended
        _record(engine, reply, renderer, result, failed=failed, lag=lag)


def _record(
    engine: ChatEngine,
    reply: Reply,
    renderer: Renderer,
    result: RenderResult | None,
    *,
    failed: bool,
    lag: float | None,
) -> None:
    """One reply's platform requests (a renderer that counts none records none), budget wait and
    final lag; a renderer that stopped on a platform error counts that request as an error."""
    if result is not None:
        ok = result.posts + result.edits
    else:
        ok = int(getattr(renderer, "posts", 0)) + int(getattr(renderer, "edits", 0))
    transient = int(getattr(renderer, "transient", 0))
    engine.metrics.shown(
        reply.key.platform,
        ok=ok,
        rate_limited=int(getattr(renderer, "rate_limited", 0)),
        errors=transient + (1 if failed else 0),
        budget_wait=float(getattr(renderer, "budget_waited", 0.0)),
        final_lag=lag,
    )
