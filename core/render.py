"""Progressive-edit rendering of an LLM token stream into platform messages.

Why: every chat adapter shows a streaming reply by posting one message and editing it as tokens
arrive, and every platform rate-limits those edits (Discord ~5 edits / 5 s per channel and 50
requests/s per bot; Slack chat.update ~50/min per workspace). :class:`StreamRenderer` turns a
stream of deltas into a few well-spaced edits that always carry the latest text, continues in new
messages at the platform's length limit (``core.split``), waits out 429s without losing text, and
always ends on the complete text. :class:`EditBudget` is the one scheduler that shares a scope's
request budget between all live renderers: final edits first, interim edits fairly, paced sends.

Adapters implement :class:`MessageSink` and raise :class:`SinkRateLimited` / :class:`SinkGone`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from core.clock import Clock, MonotonicClock
from core.split import find_cut, open_fence

__all__ = [
    "BudgetTicket",
    "EditBudget",
    "MessageSink",
    "RenderResult",
    "SinkGone",
    "SinkRateLimited",
    "StreamRenderer",
    "with_note",
]

_EPS = 1e-9
_DEFAULT_CLOCK = MonotonicClock()


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


class SinkRateLimited(Exception):
    """Raised by a sink when the platform answered 429; the renderer retries after ``retry_after``.

    ``shared=True`` says the limit covers the whole scope (Discord's global limit, a Slack
    workspace): the renderer then also defers its :class:`EditBudget` so every stream backs off.
    """

    def __init__(self, retry_after: float, *, shared: bool = False) -> None:
        super().__init__(f"rate limited; retry after {retry_after:.3f} s")
        self.retry_after = max(0.0, float(retry_after))
        self.shared = shared


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


# --------------------------------------------------------------------------------------------
# Shared budget


# EditBudget priorities, served in this order.
_FINAL, _FIRST, _INTERIM = 0, 1, 2


class BudgetTicket:
    """One request for a send slot of an :class:`EditBudget`; ``await ticket.wait()`` for it."""

    __slots__ = ("_budget", "_entry", "_future", "final")

    def __init__(
        self, budget: EditBudget, final: bool, future: asyncio.Future[None] | None
    ) -> None:
        self._budget = budget
        self._future = future  # None: granted on the spot
        self._entry: list[Any] | None = None
        self.final = final

    @property
    def granted(self) -> bool:
        fut = self._future
        return fut is None or (fut.done() and not fut.cancelled())

    async def wait(self) -> None:
        """Return once the slot is granted (cancelling the caller withdraws the request)."""
        if self._future is not None:
            await self._future

    def promote(self) -> None:
        """Turn a pending interim request into a final one (the reply just finished)."""
        fut = self._future
        if not self.final and fut is not None and not fut.done():
            self.final = True
            self._budget._promote(self)

    def cancel(self) -> None:
        """Withdraw a pending request."""
        if self._future is not None and not self._future.done():
            self._future.cancel()


class EditBudget:
    """A request budget of ``rate`` sends per ``per`` seconds shared by every stream of one scope.

    Why one scheduler: with hundreds of streams, letting each retry on its own 429s loses replies
    and spends the budget on stale interim edits. Here all waiters sit in one priority queue:
    final edits (the last edit of a reply), then first posts, then interim edits, FIFO within each
    class, so a
    stream that just sent re-queues behind the others (round-robin). One dispatcher task runs only
    while requests wait; a request made when the budget is free is granted without task or wait.

    Pacing is decided on the actual grant times, never on pre-booked slots, so an event loop that
    was busy cannot release a catch-up burst. With ``burst=1`` (default) grants are at least
    ``per / rate`` apart. A larger ``burst`` lets up to that many grants go together (useful when
    the loop may be slower than ``per / rate``, e.g. Discord's 50 requests/s) while no window of
    ``per`` seconds ever holds more than ``rate`` grants (``rate`` is then taken as an integer).
    """

    __slots__ = (
        "_clock",
        "_heap",
        "_interval",
        "_max_burst",
        "_seq",
        "_task",
        "_tat",
        "_tau",
        "_window",
        "burst",
        "granted",
        "per",
        "rate",
    )

    def __init__(
        self, rate: float, per: float = 1.0, *, burst: int = 1, clock: Clock | None = None
    ) -> None:
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        if burst < 1 or burst > max(1, rate):
            raise ValueError("burst must be between 1 and rate")
        self.per = per
        self._max_burst = burst
        self._tat = -math.inf  # theoretical time of the next grant (GCRA)
        self._window: deque[float] | None = None
        self._pace(rate, burst)
        self._clock: Clock = clock if clock is not None else _DEFAULT_CLOCK
        self._heap: list[list[Any]] = []  # [priority, seq, ticket | None]
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self.granted = 0  # total grants, for benchmarks

    def _pace(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._interval = self.per / rate
        self._tau = (burst - 1) * self._interval  # how far ahead of schedule a grant may be
        # Times of the last `rate` grants, so a burst never overfills a `per` window.
        window = self._window
        if burst > 1:
            self._window = deque(window or (), maxlen=max(1, int(rate)))
        else:
            self._window = None

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on (a process's share of a budget several processes use).

        ``burst`` shrinks with it when it would exceed the new rate (and grows back, up to the
        one given at construction); grants already made still count against the window.
        """
        if rate <= 0:
            raise ValueError("rate must be positive")
        if rate != self.rate:
            self._pace(rate, max(1, min(self._max_burst, int(rate))))

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def waiting(self) -> int:
        """Number of requests currently queued."""
        return sum(1 for e in self._heap if e[2] is not None and not e[2]._future.done())

    def request(self, final: bool = False, *, first: bool = False) -> BudgetTicket:
        """Queue a request and return its ticket (already granted when the budget is free).

        ``first``: the first post of a reply. It goes after final edits but before interim ones:
        a user who sees nothing yet gains more from a first post than another from a fresher edit.
        """
        self._prune()
        now = self._clock.now()
        if not self._heap and now >= self._ready_at() - _EPS:
            self._grant(now)
            return BudgetTicket(self, final, None)
        loop = asyncio.get_running_loop()
        ticket = BudgetTicket(self, final, loop.create_future())
        self._push(ticket, _FINAL if final else _FIRST if first else _INTERIM, next(self._seq))
        if self._task is None:
            self._task = loop.create_task(self._dispatch())
        return ticket

    async def acquire(self, final: bool = False) -> None:
        """Wait for a send slot; ``final=True`` for the last edit of a reply."""
        await self.request(final).wait()

    def defer(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (the platform said the whole scope is rate limited)."""
        self._tat = max(self._tat, self._clock.now() + seconds + self._tau)

    def _ready_at(self) -> float:
        """Earliest time the next grant may happen."""
        at = self._tat - self._tau
        window = self._window
        if window is not None and len(window) == window.maxlen:
            at = max(at, window[0] + self.per)
        return at

    def _grant(self, now: float) -> None:
        self._tat = max(self._tat, now) + self._interval
        if self._window is not None:
            self._window.append(now)
        self.granted += 1

    def _push(self, ticket: BudgetTicket, priority: int, seq: int) -> None:
        entry = [priority, seq, ticket]
        ticket._entry = entry
        heapq.heappush(self._heap, entry)

    def _promote(self, ticket: BudgetTicket) -> None:
        old = ticket._entry
        if old is not None:
            old[2] = None  # lazily dropped by _prune
            self._push(ticket, _FINAL, old[1])  # keeps its age among the finals

    def _prune(self) -> None:
        heap = self._heap
        while heap and (heap[0][2] is None or heap[0][2]._future.done()):
            heapq.heappop(heap)

    async def _dispatch(self) -> None:
        clock = self._clock
        try:
            while True:
                self._prune()
                if not self._heap:
                    return
                wait = self._ready_at() - clock.now()
                if wait > _EPS:
                    await clock.sleep(wait)
                    continue  # re-check: a final may have arrived meanwhile
                ticket: BudgetTicket = heapq.heappop(self._heap)[2]
                self._grant(clock.now())
                assert ticket._future is not None
                ticket._future.set_result(None)
        finally:
            self._task = None


# --------------------------------------------------------------------------------------------
# Renderer


@dataclass(frozen=True, slots=True)
class RenderResult:
    """What a finished renderer left on the platform."""

    refs: tuple[Any, ...]  # platform refs of the posted messages, in order
    texts: tuple[str, ...]  # their final texts
    posts: int
    edits: int
    gone: bool = False  # the sink raised SinkGone; the texts are what was shown before


class StreamRenderer:
    """Renders one streaming reply into one or more platform messages by progressive edits.

    ``feed`` only appends to a buffer and wakes the renderer's single background task, which posts
    as soon as the first delta arrives and then edits each message at most once per
    ``min_interval``, always with the latest text plus ``marker``. When the text outgrows
    ``sink.max_len`` the filled message is frozen at a boundary chosen by ``core.split.find_cut``
    and the reply continues in a new message, so the final messages equal
    ``split_message(with_note(text, note), max_len)``. ``finish`` does the final edit(s).

    If the sink raises :class:`SinkGone` the renderer stops: ``gone`` turns true, ``feed`` raises
    it (so the engine can cancel the generation quietly) and ``finish`` reports ``gone=True``.
    Any other sink error stops the renderer too and is raised from ``feed`` and ``finish``.
    """

    __slots__ = (
        "_body",
        "_budget",
        "_buf",
        "_clock",
        "_edits",
        "_failure",
        "_finishing",
        "_frozen",
        "_idle",
        "_last",
        "_marker",
        "_max_len",
        "_min_interval",
        "_note",
        "_noted",
        "_posts",
        "_prefix_len",
        "_rate_limited",
        "_refs",
        "_settled",
        "_shown",
        "_sink",
        "_task",
        "_ticket",
    )

    def __init__(
        self,
        sink: MessageSink,
        *,
        min_interval: float,
        budget: EditBudget | None = None,
        clock: Clock | None = None,
        marker: str = " ▌",
    ) -> None:
        max_len = int(sink.max_len)
        if max_len < 1:
            raise ValueError("sink.max_len must be at least 1")
        if len(marker) >= max_len:
            raise ValueError("marker must be shorter than sink.max_len")
        if min_interval < 0:
            raise ValueError("min_interval must not be negative")
        if clock is None:
            clock = budget.clock if budget is not None else _DEFAULT_CLOCK
        self._sink = sink
        self._max_len = max_len
        self._min_interval = float(min_interval)
        self._budget = budget
        self._clock = clock
        self._marker = marker
        self._buf: list[str] = []  # deltas not yet absorbed by the flusher
        self._body = ""  # text of the current (last) message: fence reopener + source tail
        self._prefix_len = 0  # length of the fence reopener at the start of _body
        self._frozen: list[str] = []  # final texts of the filled messages
        self._refs: list[Any] = []
        self._shown: list[str] = []  # text last sent to each posted message
        self._last: list[float] = []  # send time of each posted message's last update
        self._settled = 0  # messages below this index are frozen and show their final text
        self._finishing = False
        self._note: str | None = None
        self._noted = False
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._ticket: BudgetTicket | None = None
        self._failure: Exception | None = None
        self._posts = 0
        self._edits = 0
        self._rate_limited = 0

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
        """How many sink calls answered with :class:`SinkRateLimited`."""
        return self._rate_limited

    @property
    def gone(self) -> bool:
        """True once the sink raised :class:`SinkGone`."""
        return isinstance(self._failure, SinkGone)

    @property
    def error(self) -> Exception | None:
        """The exception that stopped the renderer, if any."""
        return self._failure

    # -- hot path ----------------------------------------------------------------------------

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
            return
        idle = self._idle
        if idle is not None:
            self._idle = None
            if not idle.done():
                idle.set_result(None)

    async def finish(self, note: str | None = None) -> RenderResult:
        """Flush and make every message show its final text; ``note`` goes on its own last line.

        Returns the refs and final texts. Raises a sink error other than :class:`SinkGone`.
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
                idle = self._idle
                if idle is not None and not idle.done():
                    idle.set_result(None)
                if self._ticket is not None:
                    self._ticket.promote()
            if self._task is not None:
                await self._task
        failure = self._failure
        if failure is not None and not isinstance(failure, SinkGone):
            raise failure
        return RenderResult(
            tuple(self._refs), tuple(self._shown), self._posts, self._edits, failure is not None
        )

    async def aclose(self) -> None:
        """Stop without a final edit (shutdown); later ``feed``/``finish`` calls are refused."""
        self._finishing = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():  # our caller was cancelled
                    raise

    # -- flusher -----------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._flush()
        except Exception as exc:  # reported by feed()/finish(), never lost in a dead task
            self._failure = exc

    async def _flush(self) -> None:
        clock = self._clock
        sink = self._sink
        budget = self._budget
        loop = asyncio.get_running_loop()
        while True:
            self._absorb()
            now = clock.now()
            job = self._pick(now)
            if job is None:
                if self._finishing:
                    return
                idle: asyncio.Future[None] = loop.create_future()
                self._idle = idle
                try:
                    await idle
                finally:
                    self._idle = None
                continue
            k, due = job
            if due - now > _EPS:
                await clock.sleep(due - now)
                continue
            if budget is not None:
                ticket = budget.request(
                    self._finishing or k < len(self._frozen), first=not self._refs
                )
                if not ticket.granted:
                    self._ticket = ticket
                    try:
                        await ticket.wait()
                    finally:
                        self._ticket = None
                    self._absorb()  # send what arrived while we queued
            text = self._desired(k)
            posted = k < len(self._refs)
            if posted and self._shown[k] == text:
                continue
            started = clock.now()
            ref: Any = None
            try:
                if posted:
                    await sink.edit(self._refs[k], text)
                else:
                    ref = await sink.post(text)
            except SinkRateLimited as exc:
                self._rate_limited += 1
                if exc.shared and budget is not None:
                    budget.defer(exc.retry_after)
                await clock.sleep(exc.retry_after)
                continue
            if posted:
                self._shown[k] = text
                self._last[k] = started
                self._edits += 1
            else:
                self._refs.append(ref)
                self._shown.append(text)
                self._last.append(started)
                self._posts += 1

    def _absorb(self) -> None:
        """Move buffered deltas into the current message, freezing every message that filled up."""
        buf = self._buf
        if buf:
            self._body += buf[0] if len(buf) == 1 else "".join(buf)
            buf.clear()
        if self._finishing and not self._noted:
            self._noted = True
            self._body = with_note(self._body, self._note)
        max_len = self._max_len
        while len(self._body) > max_len:
            cut = find_cut(self._body, max_len, self._prefix_len)
            self._frozen.append(cut.part)
            self._body = cut.reopen + self._body[cut.end :]
            self._prefix_len = len(cut.reopen)

    def _desired(self, k: int) -> str:
        """What message ``k`` should show now."""
        if k < len(self._frozen):
            return self._frozen[k]
        body = self._body
        if self._finishing:
            return body
        room = self._max_len - len(self._marker)
        return (body if len(body) <= room else body[:room]) + self._marker

    def _pick(self, now: float) -> tuple[int, float] | None:
        """The message to update next and when it may be sent: the earliest due, lowest index."""
        shown = self._shown
        frozen_count = len(self._frozen)
        total = frozen_count + (1 if self._body else 0)
        best_k = -1
        best_due = math.inf
        k = self._settled
        while k < total:
            if k == len(shown):  # next message to post; later ones wait for it
                if now < best_due:
                    best_k, best_due = k, now
                break
            if shown[k] != self._desired(k):
                due = self._last[k] + self._min_interval
                if due < best_due:
                    best_k, best_due = k, due
            elif k == self._settled and k < frozen_count:
                self._settled += 1
            k += 1
        return None if best_k < 0 else (best_k, best_due)
