"""Deliver a :class:`~core.engine.Reply` to a platform through its :class:`MessageSink`.

Every adapter needs exactly this loop (deltas → renderer, then the final note for an error or a
stop, and a quiet stop when the platform message was deleted), so it lives in core.
:func:`deliver_with` runs the same loop over any :class:`Renderer` (e.g. a platform's own
streaming API, such as Slack's ``chat.startStream``), :func:`deliver` over a
:class:`~core.render.StreamRenderer` of progressive edits.
"""

from __future__ import annotations

import asyncio
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, Protocol

from llmconnect import REASONING, TEXT

from .budget import EditBudget, SendBudgets
from .clock import Clock
from .controls import approval_controls, final_controls, live_controls, renderer_controls
from .conversations import Status
from .engine import NOT_LATEST, TOOLS, ChatEngine, Reply
from .fallback import fallback_line
from .render import MessageSink, RenderResult, SinkGone, StreamRenderer

__all__ = [
    "EMPTY_NOTE",
    "REASONING",
    "REASONING_CUT",
    "STATUS",
    "STOPPED_NOTE",
    "TEXT",
    "TOOLS",
    "Outcome",
    "ReasoningQuote",
    "Renderer",
    "deliver",
    "deliver_with",
    "final_note",
    "replaced_messages",
    "shown_events",
    "thinking_line",
]

STOPPED_NOTE = "⏹ stopped"
EMPTY_NOTE = "(the model returned an empty answer)"


class Renderer(Protocol):
    """What :func:`deliver_with` drives; :class:`~core.render.StreamRenderer` is one.

    ``feed`` must not wait on the network and raises :class:`SinkGone` once the platform message
    is gone; ``finish(note)`` ends on the complete text (plus ``note`` on its own line). A
    renderer that draws buttons takes ``finish(note, controls=...)`` (:mod:`core.controls`):
    :func:`deliver_with` passes them when asked to (``controls=True``).
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

    @property
    def notes(self) -> tuple[str, ...]: ...

    @property
    def tools_line(self) -> str | None: ...


def final_note(reply: Outcome) -> str | None:
    """The line(s) appended under a reply: its prompt's files that were skipped (or cut), one
    line each (``Skipped big.png: larger than the 10 MB limit.``, :mod:`core.attachments`), the
    tools it used (``🔧 files.read, search.query ✗``), which model answered when the
    conversation's was unavailable (``answered by M — U was unavailable``,
    :mod:`core.fallback`), then why it did not complete (or that it completed with no text,
    which would otherwise leave the asker with nothing at all)."""
    answered = reply.status is Status.COMPLETE or bool(reply.text)
    lines = [
        *reply.notes,
        reply.tools_line,
        fallback_line(reply.model, reply.unavailable, answered),
        _status_note(reply),
    ]
    return "\n".join(line for line in lines if line) or None


def _status_note(reply: Outcome) -> str | None:
    if reply.status is Status.ERROR:
        return f"⚠️ {reply.error or 'The language model failed to answer.'}"
    if reply.status is Status.CANCELLED:
        return STOPPED_NOTE
    if reply.status is Status.COMPLETE and not reply.text:
        return EMPTY_NOTE
    return None


#: The kind of :func:`shown_events` that carries the status line (``SHOW_REASONING=status``).
STATUS = "status"
#: Under a quoted reasoning block cut to fit the message (``SHOW_REASONING=full``).
REASONING_CUT = "> … (reasoning cut to fit the message)"


def thinking_line(seconds: float) -> str:
    """The status shown while only reasoning has arrived: ``💭 thinking… (12 s)``."""
    return f"💭 thinking… ({max(int(seconds), 0)} s)"


async def shown_events(engine: ChatEngine, reply: Reply) -> AsyncIterator[tuple[str, str]]:
    """What a front end shows of ``reply`` under ``SHOW_REASONING``, as ``(kind, text)``:
    ``("text", delta)`` always; with ``status``, ``("status", thinking_line(n))`` while only
    reasoning has arrived, once when it starts and again each whole second on the engine clock
    (a front end shows the latest at its own pace); with ``full``, ``("reasoning", piece)`` until
    the answer starts. With ``off`` (and ``status``) no reasoning text ever comes out of here.
    ``("tools", lines)``: the progress lines of the reply's tool calls, each time they change.
    """
    mode = engine.settings.show_reasoning
    if mode == "off" and not engine.mcp.names:
        async for delta in reply:
            yield TEXT, delta
        return
    async with aclosing(reply.events()) as events:  # type: ignore[type-var]
        before = _until_answer(engine, reply, events, mode=mode)
        async with aclosing(before):  # type: ignore[type-var]
            async for event in before:
                yield event
        async for kind, text in events:
            if kind is TEXT or kind == TOOLS:
                yield kind, text


async def _until_answer(
    engine: ChatEngine,
    reply: Reply,
    events: AsyncIterator[tuple[str, str]],
    *,
    mode: str,
) -> AsyncIterator[tuple[str, str]]:
    """:func:`shown_events` up to and with the answer's first text (``events`` then goes on with
    the rest, read directly: nothing more per delta than before reasoning existed)."""
    if mode != "status":
        async for kind, text in events:
            if kind == REASONING:
                if mode == "full":
                    yield REASONING, text
            elif kind == TOOLS:
                yield TOOLS, text
            elif kind is TEXT:
                yield TEXT, text
                return
        return
    # The next event is awaited in a task of its own, so that a tick of the clock can update
    # the status meanwhile without disturbing it; only while the model thinks.
    clock = engine.clock
    pending: asyncio.Future[tuple[str, str]] | None = None
    shown = ""  # the status line last yielded: each is yielded once
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            since = reply.reasoning_since
            if since is not None and not reply.done and not reply.text:  # still only thinking
                elapsed = clock.now() - since
                line = thinking_line(elapsed)
                if line != shown:
                    shown = line
                    yield STATUS, line
                tick = asyncio.ensure_future(clock.sleep(int(elapsed) + 1 - elapsed))
                try:
                    await asyncio.wait((pending, tick), return_when=FIRST_COMPLETED)
                finally:
                    tick.cancel()
                if not pending.done():
                    continue  # a tick: the status again, with the new seconds
            else:
                await asyncio.wait((pending,))
            done, pending = pending, None
            try:
                kind, text = done.result()
            except StopAsyncIteration:
                return
            if kind == TOOLS:
                yield TOOLS, text
            elif kind is TEXT:
                yield TEXT, text
                return
    finally:
        if pending is not None:  # closed or cancelled while waiting: stop the read
            pending.cancel()
            await asyncio.wait((pending,))


class ReasoningQuote:
    """Reasoning pieces as one Markdown quote (``> `` lines) above the answer, at most ``room``
    characters of it, :data:`REASONING_CUT` included when it had to be cut: what :func:`deliver_with`
    feeds the renderer with ``SHOW_REASONING=full``, so the block streams like the answer."""

    def __init__(self, room: int) -> None:
        self.room = max(room, 0)
        self.used = 0
        self.cut = False
        self._started = False
        self._newlines = ""  # line ends held until more reasoning follows them

    def add(self, piece: str) -> str:
        """The quoted form of the next piece (``""`` for nothing to show yet)."""
        if self.cut:
            return ""
        if not self._started:
            piece = piece.lstrip()
            if not piece:
                return ""
        text = self._newlines + piece
        body = text.rstrip("\n")
        self._newlines = text[len(body) :]
        if not body:
            return ""
        quoted = body.replace("\n", "\n> ")
        if not self._started:
            quoted = "> " + quoted
            self._started = True
        if self.used + len(quoted) > self.room:
            keep = max(self.room - self.used - len(REASONING_CUT) - 1, 0)
            self.cut = True
            head = quoted[:keep].rstrip()
            self.used = self.room
            return (head + "\n" if head else "") + REASONING_CUT
        self.used += len(quoted)
        return quoted

    def close(self) -> str:
        """What goes between the quote and the answer (``""`` when nothing was quoted)."""
        return "\n\n" if self._started else ""


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
    controls: bool = False,
    reuse: Any = None,
) -> RenderResult:
    """Stream ``reply`` into ``sink`` and end on its complete text (plus a note, if any);
    ``window_limit``/``window_seconds``: the platform's edit window (see StreamRenderer).

    ``controls``: the message carries the reply's buttons (:mod:`core.controls`; ``sink`` is
    a :class:`~core.render.ControlsSink`): Stop while it streams, Regenerate and 👍/👎 from
    the final edit on. ``reuse``: render into this existing message (a ref ``sink.edit``
    takes) instead of posting a new one: a regeneration replaces the old answer's text. When
    ``reuse`` is the last message of a reply that took several (``reply.replaced_refs``, kept
    with its turn), the regeneration renders into all of them in order: more are posted after
    them when it needs more, and those it does not need are deleted at the end (edited to
    :data:`~core.render.REPLACED_PART` where the sink cannot delete), so only the new text
    stays visible."""
    renderer = StreamRenderer(
        sink,
        min_interval=min_interval,
        budget=budget,
        clock=clock,
        window_limit=window_limit,
        window_seconds=window_seconds,
        controls=renderer_controls(engine, reply, controls),
        replace=replaced_messages(reply, reuse),
    )
    return await deliver_with(engine, reply, renderer, controls=controls)


async def deliver_with(
    engine: ChatEngine, reply: Reply, renderer: Renderer, *, controls: bool = False
) -> RenderResult:
    """Stream ``reply`` into ``renderer`` and end on its complete text (plus a note, if any);
    with ``controls``, the final buttons go with the final text
    (``renderer.finish(note, controls=core.controls.final_controls(reply))``).

    Records the reply's platform requests, budget wait and final lag in ``engine.metrics``, once,
    when it ends (nothing per delta)."""
    result: RenderResult | None = None
    ended: float | None = None
    failed = False
    try:
        try:
            if engine.settings.show_reasoning == "off" and not engine.mcp.names:
                async for delta in reply:
                    await renderer.feed(delta)
            else:
                await _feed_shown(engine, reply, renderer, buttons=controls)
        except SinkGone:
            # The reply message was deleted: stop generating, quietly. Only while this reply
            # still runs: once it is done, stop(key) would cancel the next queued prompt instead.
            if not reply.done:
                await engine.stop(reply.key)
        await reply
        ended = engine.clock.now()
        if _untouched(reply):
            # A regeneration that never ran (stopped while queued, or a newer turn came first):
            # the message keeps the answer it shows, which is still the history's.
            result = await renderer.finish(None)
            return result
        if controls:
            finish: Any = renderer.finish
            result = await finish(final_note(reply), controls=final_controls(reply))
        else:
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
        if controls and result is not None and not failed:
            await _remember(engine, reply, result)


def replaced_messages(reply: Reply, reuse: Any) -> tuple[Any, ...]:
    """The messages a regeneration clicked in ``reuse`` renders into, in order: all of the
    replaced reply's when ``reuse`` is its last (where its buttons are), else ``reuse`` alone
    (a reply whose messages were not remembered: recorded before they were, or not saved)."""
    if reuse is None:
        return ()
    refs = reply.replaced_refs
    if len(refs) > 1 and str(reuse) == refs[-1]:
        return (*refs[:-1], reuse)
    return (reuse,)


def _untouched(reply: Reply) -> bool:
    """A regeneration that ended without replacing anything: cancelled before it ran, or refused
    under the lock because a newer turn came first (:data:`~core.engine.NOT_LATEST`)."""
    if reply.replaces is None or reply.stored:
        return False
    return reply.status is Status.CANCELLED or reply.error == NOT_LATEST


async def _remember(engine: ChatEngine, reply: Reply, result: RenderResult) -> None:
    """Keep the messages of a reply that took several with its turn (it can be regenerated
    into all of them); only refs a store can keep (strings), and never for one message."""
    refs = result.refs
    if result.gone or not reply.stored or len(refs) < 2:
        return
    if all(isinstance(ref, str) for ref in refs):
        await engine.remember_messages(reply, refs)


async def _feed_shown(
    engine: ChatEngine, reply: Reply, renderer: Renderer, *, buttons: bool = False
) -> None:
    """What :func:`shown_events` yields, into ``renderer``: the status line where the renderer
    can show one (``show_status``; Slack's append-only native stream shows it as the thread's
    status), the reasoning as a quote above the answer, cut to half the renderer's ``max_len``.
    After the first text the reply's events are read here directly (one generator per delta, as
    before)."""
    show_status = getattr(renderer, "show_status", None)
    progress = _progress_of(renderer, reply, buttons)
    quote = ReasoningQuote(int(getattr(renderer, "max_len", 4000)) // 2)
    mode = engine.settings.show_reasoning
    async with aclosing(reply.events()) as events:  # type: ignore[type-var]
        before = _until_answer(engine, reply, events, mode=mode)
        async with aclosing(before):  # type: ignore[type-var]
            async for kind, text in before:
                if kind is TEXT:
                    await renderer.feed(quote.close() + text)
                elif kind == STATUS:
                    if show_status is not None:
                        show_status(text)
                elif kind == REASONING:
                    piece = quote.add(text)
                    if piece:
                        await renderer.feed(piece)
                elif kind == TOOLS and progress is not None:
                    progress(text)
        async for kind, text in events:
            if kind is TEXT:
                await renderer.feed(text)
            elif kind == TOOLS and progress is not None:
                progress(text)


def _progress_of(renderer: Renderer, reply: Reply, buttons: bool) -> Callable[[str], None] | None:
    """Where a renderer shows the tool progress lines: ``show_progress`` (below the text, while
    the reply streams: :class:`~core.render.StreamRenderer`; Slack's native stream as task
    cards), else the last line as its status (a renderer with ``show_status`` only), else
    nowhere. With each change the renderer's ``show_controls`` (when it has one) gets the buttons
    of the moment: Stop (``buttons``) and Approve/Deny for the calls waiting for approval; a
    renderer with ``show_approvals(lines, controls)`` gets the waiting calls' lines and their
    Approve/Deny instead (its message cannot carry buttons while it streams)."""
    show_controls = getattr(renderer, "show_controls", None)
    show_approvals = getattr(renderer, "show_approvals", None)
    show_progress = getattr(renderer, "show_progress", None)
    show_status = getattr(renderer, "show_status", None)
    if show_progress is None and show_status is None and show_controls is None:
        return None

    def show(lines: str) -> None:
        if show_progress is not None:
            show_progress(lines)
        elif show_status is not None:
            show_status(lines.rsplit("\n", 1)[-1])
        if show_approvals is not None:
            # A renderer whose message cannot carry buttons now (Slack's native stream) asks
            # for the approvals its own way: the waiting calls' lines and their buttons.
            waiting = "\n".join(p.line for p in reply.tool_progress if p.waiting)
            show_approvals(waiting, approval_controls(reply))
        elif show_controls is not None:
            show_controls(live_controls(reply, buttons))

    return show


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
        ok = result.posts + result.edits + result.cleared
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
