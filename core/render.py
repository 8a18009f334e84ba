"""Progressive rendering of an LLM token stream into platform messages.

Why: every chat adapter shows a streaming reply as it is written, and every platform rate-limits
the requests that does it (Discord ~5 edits / 5 s per channel and 50 requests/s per bot; Slack
chat.update ~50/min per workspace). :class:`BufferedRenderer` is the machine every streaming
renderer shares: ``feed`` only buffers and wakes one background task, ``finish`` adds the note and
waits for the complete text, a failure is kept and reported; a subclass only implements one step.
:class:`StreamRenderer` is the step that posts one message and edits it: a few well-spaced edits
that always carry the latest text, continuing in new messages at the platform's length limit
(``core.split``), waiting out 429s and transient failures without losing text, and always ending
on the complete text. :class:`~core.budget.EditBudget` shares a scope's request budget between
all live renderers (:class:`~core.budget.SendBudgets` when posts and edits are limited apart).

Buttons (:mod:`core.controls`): a renderer given ``controls`` calls the sink's ``post`` and
``edit`` with a ``controls=`` keyword, so the buttons travel in the same request as the text
(never a request of their own): the streaming controls (Stop) on the message being written,
none on a message frozen full, the final controls (``finish(note, controls=...)``) on the last
message in the final edit. Without ``controls`` the sink is called as before.

A regeneration (``replace=``: the messages of the reply it replaces, in order) renders into those
messages in order, posts more after them when it needs more, shows :data:`PENDING_PART` in the ones
its text has not reached yet, and at the end deletes those it did not need (:class:`DeletingSink`;
a sink without ``delete`` gets them edited to :data:`REPLACED_PART`): only the new text stays.

Adapters implement :class:`MessageSink` and only classify what the platform answered:
:class:`SinkRateLimited` (a 429), :class:`SinkTransient` (worth retrying), :class:`SinkGone` (the
message is gone); anything else is fatal. The retry policy lives here, once.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from core.budget import BudgetTicket, EditBudget, SendBudgets
from core.clock import Clock, MonotonicClock
from core.split import find_cut, open_fence

if TYPE_CHECKING:
    from core.controls import Control

__all__ = [
    "PENDING_PART",
    "PROGRESS_LINES",
    "PROGRESS_LINE_CHARS",
    "REPLACED_PART",
    "TRANSIENT_RETRIES",
    "TRANSIENT_WAIT",
    "BufferedRenderer",
    "ControlsSink",
    "DeletingSink",
    "MessageSink",
    "RenderResult",
    "SinkGone",
    "SinkRateLimited",
    "SinkTransient",
    "StreamRenderer",
    "with_note",
]

_EPS = 1e-9
_DEFAULT_CLOCK = MonotonicClock()

#: Consecutive transient sink failures waited out before the reply gives up (the sink's own error
#: then stops the renderer, keeping what was shown), and the first wait; the n-th wait is n times
#: as long. One hiccup of the platform does not lose a whole answer, an outage does not hang it.
TRANSIENT_RETRIES = 3
TRANSIENT_WAIT = 1.0
#: :meth:`StreamRenderer.show_progress` shows the latest this many lines, each at most this long.
PROGRESS_LINES = 8
PROGRESS_LINE_CHARS = 150

#: What a replaced reply's later messages show while its regeneration is written into the
#: first ones (no part of the old answer stays visible under the new one).
PENDING_PART = "…"
#: What a replaced reply's message the new one does not need ends on, on a platform whose sink
#: cannot delete (:class:`DeletingSink`); the new answer is in the messages above it.
REPLACED_PART = "(replaced by the answer above)"


@runtime_checkable
class MessageSink(Protocol):
    """One platform channel/thread a renderer writes to; each adapter implements it.

    ``max_len`` may be a plain attribute or a property. ``post`` returns whatever the platform
    needs to edit that message later (message id, ``ts``, ...).
    """

    @property
    def max_len(self) -> int:
        """Longest text one message may hold; the streaming marker counts toward it."""
        ...

    async def post(self, text: str) -> Any:
        """Post a new message with ``text``; return a reference for :meth:`edit`."""
        ...

    async def edit(self, ref: Any, text: str) -> None:
        """Replace the text of the message ``ref`` returned by :meth:`post`."""
        ...


@runtime_checkable
class ControlsSink(Protocol):
    """A :class:`MessageSink` whose messages carry buttons (:mod:`core.controls`): ``controls``
    is the message's complete set of buttons in that request (``()``: none, remove any)."""

    @property
    def max_len(self) -> int: ...

    async def post(self, text: str, *, controls: Sequence[Control] = ()) -> Any: ...

    async def edit(self, ref: Any, text: str, *, controls: Sequence[Control] = ()) -> None: ...


@runtime_checkable
class DeletingSink(Protocol):
    """A sink that can also delete one of its messages: a regeneration that needs fewer
    messages than the reply it replaces deletes the rest (a sink without ``delete`` edits them
    to :data:`REPLACED_PART`). A message already gone is no error (return quietly); a 429 or a
    transient failure is raised as for ``edit``."""

    async def delete(self, ref: Any) -> None: ...


class SinkRateLimited(Exception):
    """Raised by a sink when the platform answered 429; the renderer retries after ``retry_after``.

    ``shared=True`` says the limit covers the whole scope (Discord's global limit, a Slack
    workspace): the renderer then also defers its :class:`EditBudget` so every stream backs off.
    """

    def __init__(self, retry_after: float, *, shared: bool = False) -> None:
        super().__init__(f"rate limited; retry after {retry_after:.3f} s")
        self.retry_after = max(0.0, float(retry_after))
        self.shared = shared


class SinkTransient(Exception):
    """Raised by a sink when a call failed in a way worth retrying: the platform had a server-side
    problem (5xx) or could not be reached on a request that is safe to repeat.

    ``error`` is the platform's own exception: the renderer retries a few times
    (:data:`TRANSIENT_RETRIES`) and then raises ``error`` as if the sink had raised it.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(f"transient failure: {error}")
        self.error = error


class SinkGone(Exception):
    """Raised by a sink when the message or channel no longer exists; rendering stops for good."""


def with_note(text: str, note: str | None) -> str:
    """``text`` with ``note`` on its own line (closing a code fence left open so the note shows)."""
    if not note:
        return text
    if not text:
        return note
    fence = open_fence(text)
    if fence is not None:
        text += fence.ticks if text.endswith("\n") else fence.close
    return text + ("" if text.endswith("\n") else "\n") + note


@dataclass(frozen=True, slots=True)
class RenderResult:
    """What a finished renderer left on the platform."""

    refs: tuple[Any, ...]  # platform refs of the reply's messages, in order
    texts: tuple[str, ...]  # their final texts
    posts: int
    edits: int
    gone: bool = False  # the sink raised SinkGone; the texts are what was shown before
    #: Messages of a replaced reply deleted (or, without ``delete``, emptied to
    #: :data:`REPLACED_PART`) because the new one needed fewer; not in ``refs``.
    cleared: int = 0


# --------------------------------------------------------------------------------------------
# The buffered machine


class BufferedRenderer(ABC):
    """What every streaming renderer shares: a buffer, one background task, failure and note.

    ``feed`` only appends to a buffer and wakes the task; it never waits on the network. The task
    moves the buffer into ``_body`` (:meth:`_absorb`) and calls :meth:`_step` until that reports
    the reply complete. ``finish(note)`` puts ``note`` under the text, wakes the task and waits
    for it. An exception of the task stops the renderer and is kept: ``feed`` raises it (so the
    engine can stop generating), ``finish`` raises it unless it is :class:`SinkGone`, which is
    reported as ``gone``. ``aclose`` stops the task without a final step (shutdown).

    A subclass implements :meth:`_step` (one send or one wait) and :meth:`_result`; the helpers
    :meth:`_wait_for_text`, :meth:`_wait_until` and :meth:`_take_slot` are the waits a step needs.
    """

    __slots__ = (
        "_body",
        "_budget",
        "_budgets",
        "_buf",
        "_clock",
        "_failure",
        "_finishing",
        "_held",
        "_idle",
        "_min_interval",
        "_note",
        "_noted",
        "_on_finish",
        "_prefix_len",
        "_task",
        "_ticket",
        "budget_waited",
    )

    def __init__(
        self,
        *,
        min_interval: float,
        budget: EditBudget | SendBudgets | None = None,
        clock: Clock | None = None,
    ) -> None:
        if min_interval < 0:
            raise ValueError("min_interval must not be negative")
        budgets = SendBudgets.of(budget)
        if clock is None:
            clock = budgets.clock or _DEFAULT_CLOCK
        self._min_interval = float(min_interval)
        self._budget = budget  # as given, for a renderer this one hands over to
        self._budgets = budgets
        self._clock = clock
        self._buf: list[str] = []  # deltas not yet absorbed by the task
        self._body = ""  # text of the current (last) message: fence reopener + source tail
        self._prefix_len = 0  # length of the fence reopener at the start of _body
        self._finishing = False
        self._note: str | None = None
        self._noted = False
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._on_finish: asyncio.Future[None] | None = None  # set while a wait ends on finish()
        self._ticket: BudgetTicket | None = None
        self._held: list[EditBudget] = []  # budgets whose slot the current send holds
        self._failure: Exception | None = None
        #: Seconds this renderer's sends waited for the shared budget, in total (metrics).
        self.budget_waited = 0.0

    @property
    def gone(self) -> bool:
        """True once the platform message turned out to be gone (:class:`SinkGone`)."""
        return isinstance(self._failure, SinkGone)

    # -- the Renderer protocol -----------------------------------------------------------------

    async def feed(self, delta: str) -> None:
        """Append ``delta``; cheap and never waits on the network."""
        if self._failure is not None:
            raise self._failure
        if self._finishing:
            raise RuntimeError("feed() after finish()")
        if not delta:
            return
        self._buf.append(delta)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        else:
            self._wake()

    async def finish(self, note: str | None = None) -> RenderResult:
        """Flush and end on the final text; ``note`` goes on its own last line.

        Returns what was left on the platform. Raises the task's failure unless it is
        :class:`SinkGone` (then ``gone=True``).
        """
        if self._finishing:
            raise RuntimeError("finish() already called")
        self._finishing = True
        self._note = note
        if self._failure is None:
            if self._task is None:
                if self._buf or note:
                    self._task = asyncio.get_running_loop().create_task(self._run())
            else:
                self._wake()
                on_finish = self._on_finish
                if on_finish is not None and not on_finish.done():
                    on_finish.set_result(None)  # the final may be due sooner than that wait
                if self._ticket is not None:
                    self._ticket.promote()  # the edit it waits for is now the final one
            if self._task is not None:
                await self._task
        if self._task is None:
            self._release()  # never ran: nothing will be sent
        failure = self._failure
        if failure is not None and not isinstance(failure, SinkGone):
            raise failure
        return self._result(gone=failure is not None)

    async def aclose(self) -> None:
        """Stop without a final step (shutdown); later ``feed``/``finish`` calls are refused."""
        self._finishing = True
        task = self._task
        if task is None:
            self._release()
        elif not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():  # our caller was cancelled
                    raise

    # -- for subclasses ------------------------------------------------------------------------

    @abstractmethod
    async def _step(self) -> bool:
        """One step of the task, run right after :meth:`_absorb`: send something, or wait (for
        text, for a due time, for a budget slot). True once the reply is complete (only after
        ``finish``). An exception stops the renderer (see the class)."""

    @abstractmethod
    def _result(self, *, gone: bool) -> RenderResult:
        """What this renderer left on the platform."""

    def _absorb(self) -> None:
        """Move buffered deltas into ``_body``; once finishing, put the note under it (once)."""
        buf = self._buf
        if buf:
            self._body += buf[0] if len(buf) == 1 else "".join(buf)
            buf.clear()
        if self._finishing and not self._noted:
            self._noted = True
            self._body = with_note(self._body, self._note)

    async def _wait_for_text(self) -> None:
        """Sleep until ``feed`` brings text or ``finish`` is called."""
        idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle = idle
        try:
            await idle
        finally:
            self._idle = None

    async def _wait_until(self, due: float, *, or_finish: bool = False) -> bool:
        """Sleep until ``due`` on the clock; False (at once) when it has come already.

        ``or_finish``: ``finish()`` ends the wait early (the final may be due sooner than the
        interim edit waited for); only ``finish``, so ``feed`` never costs a re-schedule."""
        delay = due - self._clock.now()
        if delay <= _EPS:
            return False
        if not or_finish or self._finishing:
            await self._clock.sleep(delay)
            return True
        on_finish: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_finish = on_finish
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        try:
            await asyncio.wait((sleeper, on_finish), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._on_finish = None
            sleeper.cancel()
        return True

    async def _take_slot(self, *, final: bool, first: bool, post: bool = False) -> bool:
        """Wait for a send slot of each shared budget a post (``post``) or an edit takes; True
        when that meant waiting. The slots are held until :meth:`_give_back` (after the send:
        a budget that counts requests until they come back, ``confirm``, needs to know)."""
        self._give_back()  # the previous send is over
        waited = False
        for budget in self._budgets.posts if post else self._budgets.edits:
            # finish() may come while an earlier budget made us wait: the rest is a final's.
            ticket = budget.request(final or self._finishing, first=first)
            if ticket.granted:
                self._held.append(budget)
                continue
            waited = True
            self._ticket = ticket
            started = self._clock.now()
            try:
                await ticket.wait()
            except asyncio.CancelledError:
                if ticket.granted:  # granted just before the cancel reached us: not sent
                    budget.returned()
                raise
            finally:
                self._ticket = None
                self.budget_waited += self._clock.now() - started
            self._held.append(budget)
        return waited

    def _give_back(self) -> None:
        """The send the held slots were for came back (or was not made)."""
        held = self._held
        while held:
            held.pop().returned()

    def _release(self) -> None:  # noqa: B027 - optional hook: most renderers hold nothing
        """The task ended (complete, failed or cancelled): give back what it held."""

    # -- the task ------------------------------------------------------------------------------

    def _wake(self) -> None:
        idle = self._idle
        if idle is not None:
            self._idle = None
            if not idle.done():
                idle.set_result(None)

    async def _run(self) -> None:
        try:
            while True:
                self._absorb()
                if await self._step():
                    return
        except Exception as exc:  # reported by feed()/finish(), never lost in a dead task
            self._failure = exc
        finally:
            self._give_back()
            self._release()


# --------------------------------------------------------------------------------------------
# Progressive edits


class StreamRenderer(BufferedRenderer):
    """Renders one streaming reply into one or more platform messages by progressive edits.

    The first delta is posted at once; then each message is edited at most once per
    ``min_interval``, always with the latest text plus ``marker``. ``window_limit`` edits per
    ``window_seconds`` (a sliding window over this renderer's edits, e.g. Discord's ~5 edits per
    5 s per channel, Slack's one update per second of a message) is what the platform enforces:
    every edit stays within it, and a *final* edit (``finish``, or a message frozen full) does not
    wait out ``min_interval`` but goes as soon as the window has room. Without a window
    (``window_limit=0``) a final edit too waits ``min_interval`` after the message's last update.
    When the text outgrows ``sink.max_len`` the filled message is frozen at a boundary chosen by
    ``core.split.find_cut`` and the reply continues in a new message, so the final messages equal
    ``split_message(with_note(text, note), max_len)``. ``finish`` does the final edit(s).

    ``reuse``/``replace``: render into existing messages (a regeneration; see the module doc). The
    first update of each is an edit, due at once; the replaced messages the text does not fill show
    :data:`PENDING_PART` once the reply shows anything, and are cleared (deleted, or edited to
    :data:`REPLACED_PART`) after every other message has its final text, each taking a slot of the
    edit budgets. A reply that shows nothing (a regeneration that never ran) touches none of them.

    A :class:`SinkRateLimited` is waited out (``retry_after``; a shared one defers the budget too)
    and a :class:`SinkTransient` a few times (:data:`TRANSIENT_RETRIES`, waits growing from
    :data:`TRANSIENT_WAIT`); each retry sends the latest text. If the sink raises
    :class:`SinkGone` the renderer stops: ``gone`` turns true, ``feed`` raises it (so the engine can
    cancel the generation quietly) and ``finish`` reports ``gone=True``. Any other sink error, and
    a transient one past the retries, stops the renderer too and is raised from ``feed`` and
    ``finish``.
    """

    __slots__ = (
        "_cleared",
        "_controls",
        "_edits",
        "_final_controls",
        "_frozen",
        "_last",
        "_marker",
        "_max_len",
        "_owing",
        "_posts",
        "_rate_limited",
        "_refs",
        "_reused",
        "_settled",
        "_shown",
        "_shown_controls",
        "_sink",
        "_status",
        "_status_over",
        "_trailer",
        "_transient",
        "_transient_streak",
        "_window",
        "_window_seconds",
    )

    def __init__(
        self,
        sink: MessageSink | ControlsSink,
        *,
        min_interval: float,
        budget: EditBudget | SendBudgets | None = None,
        clock: Clock | None = None,
        marker: str = " ▌",
        window_limit: int = 0,
        window_seconds: float = 0.0,
        controls: Sequence[Control] | None = None,
        reuse: Any = None,
        replace: Sequence[Any] = (),
    ) -> None:
        if window_limit < 0 or window_seconds < 0:
            raise ValueError("window_limit and window_seconds must not be negative")
        max_len = int(sink.max_len)
        if max_len < 1:
            raise ValueError("sink.max_len must be at least 1")
        if len(marker) >= max_len:
            raise ValueError("marker must be shorter than sink.max_len")
        super().__init__(min_interval=min_interval, budget=budget, clock=clock)
        self._sink = sink
        self._max_len = max_len
        self._marker = marker
        self._frozen: list[str] = []  # final texts of the filled messages
        self._refs: list[Any] = []
        self._shown: list[str] = []  # text last sent to each posted message
        self._last: list[float] = []  # send time of each posted message's last update
        self._settled = 0  # messages below this index are frozen and show their final text
        #: The buttons while streaming (``None``: this renderer draws none, the sink is called
        #: without ``controls``), and those last sent to each posted message.
        self._controls = None if controls is None else tuple(controls)
        self._final_controls: tuple[Control, ...] = ()  # finish(controls=...)
        self._shown_controls: list[tuple[Control, ...] | None] = []
        reused = tuple(replace) or (() if reuse is None else (reuse,))
        if reuse is not None and replace and reuse not in replace:
            raise ValueError("reuse must be one of the messages in replace")
        for ref in reused:
            # Render into messages that exist (a regenerated reply): each one's first update is
            # an edit, due at once, whatever the message shows now.
            self._refs.append(ref)
            self._shown.append("")
            self._shown_controls.append(None)
            self._last.append(-math.inf)
        #: How many messages of a replaced reply this one renders into; those its text does not
        #: fill show :data:`PENDING_PART` while it streams and are cleared at the end.
        self._reused = len(reused)
        self._cleared: set[int] = set()  # replaced messages deleted (or emptied) at the end
        #: Messages whose final edit is owed to the edit budgets (their reserve). The first is
        #: owed from the start: a burst of questions reserves its finals before the first words
        #: arrive, not one post at a time while earlier replies spend the window on interim edits.
        self._owing: set[int] = set()
        self._owe(0)
        self._posts = 0
        self._edits = 0
        self._rate_limited = 0
        self._transient = 0
        self._transient_streak = 0  # transient failures since the last successful call
        #: When the last ``window_limit`` edits came back (None: no window). The time an edit
        #: *returned* is no earlier than the platform saw it, so spacing from it stays inside
        #: the platform's window whatever the latency.
        self._window: deque[float] | None = (
            deque(maxlen=window_limit) if window_limit and window_seconds > 0 else None
        )
        self._window_seconds = float(window_seconds)
        self._status: str | None = None  # see show_status
        self._status_over = False
        self._trailer = ""  # see show_progress

    async def finish(
        self, note: str | None = None, *, controls: Sequence[Control] = ()
    ) -> RenderResult:
        """:meth:`BufferedRenderer.finish`; ``controls`` are the last message's buttons from
        the final edit on (ignored by a renderer made without ``controls``)."""
        if not self._finishing:
            self._final_controls = tuple(controls)
        return await super().finish(note)

    # -- a status line before the text --------------------------------------------------------

    def show_status(self, line: str) -> None:
        """Show ``line`` (``💭 thinking… (12 s)``) while there is no text yet: posted and edited
        at the normal pacing like text (no request of its own), replaced by the first text, and
        never in the final message (a reply that ends without text ends on its note alone).
        Ignored once text has come."""
        if self._status_over or self._buf or self._finishing or self._failure is not None:
            return
        self._status = line
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        else:
            self._wake()

    def show_progress(self, lines: str) -> None:
        """Show ``lines`` (a tool call's progress, ``🔧 files.read(path='a') …`` then ✓ or ✗,
        one line per call) under the text while the reply streams: carried by the normal
        edits (no request of its own, the same budget), the latest lines replacing the
        previous ones, never in the final message. At most :data:`PROGRESS_LINES` lines (the
        latest) of :data:`PROGRESS_LINE_CHARS` characters each."""
        if self._finishing or self._failure is not None:
            return
        shown = [
            line if len(line) <= PROGRESS_LINE_CHARS else line[: PROGRESS_LINE_CHARS - 1] + "…"
            for line in lines.splitlines()[-PROGRESS_LINES:]
        ]
        self._trailer = "\n".join(shown)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        else:
            self._wake()

    def show_controls(self, controls: Sequence[Control]) -> None:
        """The buttons of the message being written from now on (Stop, and Approve/Deny while a
        tool call waits for approval: :func:`core.controls.live_controls`): carried by the next
        edit at the normal pacing, no request of their own. Ignored by a renderer made without
        ``controls``, and once finishing (the final buttons are ``finish``'s)."""
        if self._controls is None or self._finishing or self._failure is not None:
            return
        controls = tuple(controls)
        if controls == self._controls:
            return
        self._controls = controls
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        else:
            self._wake()

    def _absorb_status(self) -> None:
        """While no text has come, the status is the message; the first text (or the end) ends
        it."""
        if self._buf or self._finishing:
            self._status, self._status_over = None, True
            self._body = ""
        else:
            self._body = self._status or ""

    @property
    def max_len(self) -> int:
        """Longest text one message may hold (the sink's)."""
        return self._max_len

    # -- public state ------------------------------------------------------------------------

    @property
    def messages(self) -> list[Any]:
        """Refs of the messages posted so far, in order."""
        return list(self._refs)

    @property
    def texts(self) -> list[str]:
        """Text last sent to each posted message."""
        return list(self._shown)

    @property
    def posts(self) -> int:
        return self._posts

    @property
    def edits(self) -> int:
        return self._edits

    @property
    def rate_limited(self) -> int:
        """How many sink calls answered with :class:`SinkRateLimited` (a 429)."""
        return self._rate_limited

    @property
    def transient(self) -> int:
        """How many sink calls failed with :class:`SinkTransient` (retried, or the last straw)."""
        return self._transient

    @property
    def error(self) -> Exception | None:
        """The exception that stopped the renderer, if any."""
        return self._failure

    # -- the step ----------------------------------------------------------------------------

    async def _step(self) -> bool:
        job = self._pick(self._clock.now())
        if job is None:
            if self._finishing:
                return True
            await self._wait_for_text()
            return False
        k, due = job
        if await self._wait_until(due, or_finish=True):
            return False  # pick again: text or finish() may have come meanwhile
        final = self._finishing or k < len(self._frozen)
        post = k == len(self._refs)
        try:
            if await self._take_slot(final=final, first=not self._refs, post=post):
                self._absorb()  # send what arrived while we queued
            if self._finishing and self._surplus(k):
                # finish() may have come while a placeholder waited for its slot: clear only once
                # the new text is complete above it (else the slot goes to the next pick).
                if not any(not self._current(i) for i in range(self._settled, self._parts())):
                    await self._clear(k)
                return False
            if k in self._owing and (self._finishing or k < len(self._frozen)):
                self._settle(k)  # its final has its slot: the reserve is free again
            await self._send(k, self._desired(k), self._desired_controls(k))
        finally:
            self._give_back()
        return False

    def _settle(self, k: int) -> None:
        self._owing.discard(k)
        for budget in self._budgets.edits:
            budget.settle()

    def _release(self) -> None:
        for k in list(self._owing):
            self._settle(k)

    def _absorb(self) -> None:
        """Move buffered deltas into the current message, freezing every message that filled up."""
        if self._status is not None:
            self._absorb_status()
        super()._absorb()
        max_len = self._max_len
        while len(self._body) > max_len:
            cut = find_cut(self._body, max_len, self._prefix_len)
            self._frozen.append(cut.part)
            self._body = cut.reopen + self._body[cut.end :]
            self._prefix_len = len(cut.reopen)

    def _result(self, *, gone: bool) -> RenderResult:
        cleared = self._cleared
        if not cleared:
            refs, texts = tuple(self._refs), tuple(self._shown)
        else:
            kept = [k for k in range(len(self._refs)) if k not in cleared]
            refs = tuple(self._refs[k] for k in kept)
            texts = tuple(self._shown[k] for k in kept)
        return RenderResult(refs, texts, self._posts, self._edits, gone, len(cleared))

    # -- a replaced reply's messages ---------------------------------------------------------

    def _parts(self) -> int:
        """How many messages the text needs now."""
        return len(self._frozen) + (1 if self._body else 0)

    def _surplus(self, k: int) -> bool:
        """Message ``k`` is one of a replaced reply's that the text does not fill (yet). Only
        once there is something to show: a regeneration that never ran touches nothing."""
        parts = self._parts()
        return 0 < parts <= k < self._reused

    def _skippable(self, k: int) -> bool:
        """Message ``k`` is an earlier part of the replaced reply that this renderer has not
        updated yet: one deleted meanwhile (by a moderator) is skipped, the text goes on in the
        next. The clicked (last) one's being gone stops the reply, as for any reply message."""
        return k < self._reused - 1 and self._last[k] == -math.inf

    def _skip(self, k: int) -> None:
        """Forget message ``k`` (gone before this renderer touched it): the later ones move up.
        Only replaced messages follow it that have not been updated either (first updates go
        in order), or were posted (kept in ``_owing``, ``_cleared`` by index)."""
        for seq in (self._refs, self._shown, self._shown_controls, self._last):
            del seq[k]
        self._reused -= 1
        self._owing = {i - 1 if i > k else i for i in self._owing}
        self._cleared = {i - 1 if i > k else i for i in self._cleared}

    async def _clear(self, k: int) -> None:
        """The text ended without message ``k`` of the replaced reply: delete it (or, where
        the sink cannot delete, empty it to :data:`REPLACED_PART`, its buttons removed)."""
        sink: Any = self._sink
        started = self._clock.now()
        # (A sink whose messages cannot hold the note gets the placeholder.)
        text = REPLACED_PART if len(REPLACED_PART) <= self._max_len else PENDING_PART
        try:
            if isinstance(sink, DeletingSink):
                await sink.delete(self._refs[k])
            elif self._controls is None:
                await sink.edit(self._refs[k], text)
            else:
                await sink.edit(self._refs[k], text, controls=())
        except SinkRateLimited as exc:
            await self._wait_out_rate_limit(exc, post=False)
            return
        except SinkTransient as exc:
            await self._wait_out_transient(exc)
            return
        except SinkGone:
            pass  # deleted already: what was wanted
        self._transient_streak = 0
        self._cleared.add(k)
        if not isinstance(sink, DeletingSink):
            self._shown_controls[k] = None if self._controls is None else ()
            self._record_edit(k, text, started)

    # -- sending -----------------------------------------------------------------------------

    async def _send(self, k: int, text: str, controls: tuple[Control, ...] | None) -> None:
        """Post message ``k`` or edit it to ``text`` (and ``controls``); a 429 or a transient
        failure is waited out here and the next step sends the latest text."""
        posted = k < len(self._refs)
        if posted and self._shown[k] == text and self._shown_controls[k] == controls:
            return
        started = self._clock.now()
        ref: Any = None
        sink: Any = self._sink
        try:
            if controls is None:
                if posted:
                    await sink.edit(self._refs[k], text)
                else:
                    ref = await sink.post(text)
            elif posted:
                await sink.edit(self._refs[k], text, controls=controls)
            else:
                ref = await sink.post(text, controls=controls)
        except SinkRateLimited as exc:
            await self._wait_out_rate_limit(exc, post=not posted)
            return
        except SinkTransient as exc:
            await self._wait_out_transient(exc)
            return
        except SinkGone:
            if not (posted and self._skippable(k)):
                raise
            self._skip(k)
            return
        self._transient_streak = 0
        if posted:
            self._shown_controls[k] = controls
            self._record_edit(k, text, started)
            return
        self._shown_controls.append(controls)
        self._record_post(ref, text, started)
        if not (self._finishing or k < len(self._frozen)):
            self._owe(k)  # its final edit is to come: hold a slot for it

    def _owe(self, k: int) -> None:
        if k not in self._owing:
            self._owing.add(k)
            for budget in self._budgets.edits:
                budget.owe()

    def _record_post(self, ref: Any, text: str, started: float) -> None:
        self._refs.append(ref)
        self._shown.append(text)
        self._last.append(started)
        self._posts += 1

    def _record_edit(self, k: int, text: str, started: float) -> None:
        self._shown[k] = text
        self._last[k] = started
        self._edits += 1
        if self._window is not None:
            self._window.append(self._clock.now())

    def _window_room(self) -> float:
        """When the platform's edit window has room for one more edit (-inf: it has now)."""
        window = self._window
        if window is None or len(window) < (window.maxlen or 0):
            return -math.inf
        return window[0] + self._window_seconds

    async def _wait_out_rate_limit(self, exc: SinkRateLimited, *, post: bool) -> None:
        self._rate_limited += 1
        if exc.shared:
            for budget in self._budgets.posts if post else self._budgets.edits:
                budget.defer(exc.retry_after)  # every stream of the scope backs off
        await self._clock.sleep(exc.retry_after)

    async def _wait_out_transient(self, exc: SinkTransient) -> None:
        """Wait a little longer after each transient failure in a row; past the retries the
        platform's own error stops the renderer (what was shown stays)."""
        self._transient += 1
        self._transient_streak += 1
        if self._transient_streak > TRANSIENT_RETRIES:
            raise exc.error
        await self._clock.sleep(TRANSIENT_WAIT * self._transient_streak)

    # -- what to send ------------------------------------------------------------------------

    def _desired_controls(self, k: int) -> tuple[Control, ...] | None:
        """The buttons message ``k`` should carry now: the streaming ones on the message being
        written, the final ones on the last message once finishing, none on a full one."""
        if self._controls is None:
            return None
        if k < len(self._frozen) or self._surplus(k):
            return ()
        return self._final_controls if self._finishing else self._controls

    def _current(self, k: int) -> bool:
        """Message ``k`` shows what it should (text and buttons)."""
        return self._shown[k] == self._desired(k) and (
            self._shown_controls[k] == self._desired_controls(k)
        )

    def _desired(self, k: int) -> str:
        """What message ``k`` should show now."""
        if k < len(self._frozen):
            return self._frozen[k]
        if self._surplus(k):
            return PENDING_PART
        body = self._body
        if self._finishing:
            return body
        room = self._max_len - len(self._marker)
        trailer = self._trailer
        if trailer:
            # The progress lines stay whole below the text; the text gives way (interim only).
            trailer = (("\n\n" if body else "") + trailer)[-room:]
            room -= len(trailer)
        return (body if len(body) <= room else body[:room]) + trailer + self._marker

    def _pick(self, now: float) -> tuple[int, float] | None:
        """The message to update next and when it may be sent: the earliest due, lowest index."""
        shown = self._shown
        frozen_count = len(self._frozen)
        shows = self._body or (self._trailer and not self._finishing)
        total = frozen_count + (1 if shows else 0)
        if total:
            total = max(total, self._reused)  # a replaced reply's messages the text leaves
        best_k = -1
        best_due = math.inf
        windowed = self._window is not None
        room = self._window_room()
        k = self._settled
        while k < total:
            if k == len(shown):  # next message to post; later ones wait for it
                if now < best_due:
                    best_k, best_due = k, now
                break
            if k in self._cleared:
                pass
            elif self._finishing and self._surplus(k):
                # Cleared once the new text is complete above it (not an edit of the window).
                if best_k < 0:
                    best_k, best_due = k, now
                break
            elif not self._current(k):
                if windowed and (self._finishing or k < frozen_count):
                    due = max(room, now)  # a final goes as soon as the platform allows it
                else:
                    due = max(self._last[k] + self._min_interval, room)
                if due < best_due:
                    best_k, best_due = k, due
            elif k == self._settled and k < frozen_count:
                self._settled += 1
            k += 1
        return None if best_k < 0 else (best_k, best_due)
