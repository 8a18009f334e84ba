"""One request budget shared by every stream of a scope (a Discord bot, a Slack workspace).

Why a scheduler of its own: with hundreds of replies streaming at once, letting each renderer retry
on its own 429s loses replies and spends the platform's budget on stale interim edits.
:class:`EditBudget` queues every send in one priority queue (final edits, then first posts, then
interim edits) and grants them paced by the clock; a renderer asks for a :class:`BudgetTicket`
before each post or edit.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections import deque
from typing import Any

from core.clock import Clock, MonotonicClock

__all__ = ["BudgetTicket", "EditBudget"]

_EPS = 1e-9
_DEFAULT_CLOCK = MonotonicClock()


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
