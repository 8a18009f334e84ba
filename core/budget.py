"""One request budget shared by every stream of a scope (a Discord bot, a Slack workspace).

Why a scheduler of its own: with hundreds of replies streaming at once, letting each renderer retry
on its own 429s loses replies and spends the platform's budget on stale interim edits.
:class:`EditBudget` queues every send in one priority queue (first posts and final edits by
deadline, then interim edits) and grants them paced by the clock; a renderer asks for a
:class:`BudgetTicket` before each post or edit. :class:`SendBudgets` names the budgets a post and
an edit each take when a platform limits them separately (Slack: posts per channel, updates per
workspace).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.clock import Clock, MonotonicClock

__all__ = ["FINAL_SLACK", "IN_FLIGHT_LIMIT", "BudgetTicket", "EditBudget", "SendBudgets"]

_EPS = 1e-9
_DEFAULT_CLOCK = MonotonicClock()

#: Seconds after which a granted request never answered by :meth:`EditBudget.returned` is taken
#: to have come back (``confirm``): a sender that lost track of one does not shrink the budget
#: for good. Longer than any request may take (Discord's REST timeout is 15 s).
IN_FLIGHT_LIMIT = 60.0

#: Seconds a final edit may wait behind first posts queued after it. Why not "finals first":
#: under a saturated budget the first replies to end would push every first post not yet sent
#: back by as many slots as there are finals (a user who sees nothing waits for another's
#: finishing touch); with a deadline a final still goes within this of its request.
FINAL_SLACK = 2.0


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
    and spends the budget on stale interim edits. Here all waiters sit in one priority queue.
    First posts and final edits (the last edit of a reply) go first, earliest deadline first: a
    first post is due when asked, a final ``final_slack`` seconds after it was asked (so a final
    gives way to the first posts of replies nobody sees yet, but not for long). Interim edits
    come after them, FIFO, so a stream that just sent re-queues behind the others (round-robin).
    One dispatcher task runs only while requests wait; a request made when the budget is free is
    granted without task or wait.

    ``reserve_finals`` (for a window much longer than a reply, e.g. Slack's updates per minute):
    a renderer calls :meth:`owe` for every message it posted whose final edit is still to come and
    :meth:`settle` once that edit has its slot, and an interim edit is granted only while the
    window keeps a slot for every final owed. Without it interim edits spent early in the window would leave the finals waiting for it to
    slide, up to ``per`` seconds.

    ``confirm`` (for a platform that counts requests as they *arrive*, e.g. Discord's 50 per
    second): the sender calls :meth:`returned` once each granted request has come back (or was
    not sent), and a grant is made only while the requests in flight plus those that came back
    within the last ``per`` seconds are fewer than ``rate * arrival_limit`` (``arrival_limit``:
    the platform's own limit as a multiple of the rate, e.g. Discord's 50 over a budget of 45).
    Any ``per`` window of arrivals then holds at most that many requests, however late an event
    loop sent them or the platform read them (each of them was in flight, or came back less than
    ``per`` before the last one's grant), so a larger ``burst`` may catch up the slots a busy loop
    missed without a 429.

    Pacing is decided on the actual grant times, never on pre-booked slots, so an event loop that
    was busy cannot release a catch-up burst beyond ``burst``. With ``burst=1`` (default) grants are at least
    ``per / rate`` apart. A larger ``burst`` lets up to that many grants go together (useful when
    the loop may be slower than ``per / rate``, e.g. Discord's 50 requests/s) while no window of
    ``per`` seconds ever holds more than ``rate`` grants (``rate`` is then taken as an integer).
    """

    __slots__ = (
        "_arrival_limit",
        "_back",
        "_clock",
        "_confirm",
        "_heap",
        "_interval",
        "_max_burst",
        "_out",
        "_reserve",
        "_seq",
        "_task",
        "_tat",
        "_tau",
        "_wake",
        "_window",
        "burst",
        "final_slack",
        "granted",
        "owed",
        "per",
        "rate",
    )

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: int = 1,
        clock: Clock | None = None,
        final_slack: float = FINAL_SLACK,
        reserve_finals: bool = False,
        confirm: bool = False,
        arrival_limit: float = 1.0,
    ) -> None:
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        if burst < 1 or burst > max(1, rate):
            raise ValueError("burst must be between 1 and rate")
        if final_slack < 0:
            raise ValueError("final_slack must not be negative")
        if arrival_limit < 1:
            raise ValueError("arrival_limit must be at least 1")
        self.per = per
        self.final_slack = final_slack
        self._reserve = reserve_finals
        #: Final edits owed by live renderers (counted only with ``reserve_finals``).
        self.owed = 0
        self._confirm = confirm
        self._arrival_limit = arrival_limit
        self._out: deque[float] = deque()  # grant times of the requests in flight (confirm)
        self._back: deque[float] = deque()  # when requests came back, the last `per` s (confirm)
        self._wake: asyncio.Future[None] | None = None  # set to re-check a blocked interim
        self._max_burst = burst
        self._tat = -math.inf  # theoretical time of the next grant (GCRA)
        self._window: deque[float] | None = None
        self._pace(rate, burst)
        self._clock: Clock = clock if clock is not None else _DEFAULT_CLOCK
        self._heap: list[list[Any]] = []  # [deadline (inf: interim), seq, ticket | None]
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
            self._poke()

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def in_flight(self) -> int:
        """Granted requests not yet :meth:`returned` (``confirm``; else 0)."""
        return len(self._out)

    @property
    def waiting(self) -> int:
        """Number of requests currently queued."""
        return sum(1 for e in self._heap if e[2] is not None and not e[2]._future.done())

    def request(self, final: bool = False, *, first: bool = False) -> BudgetTicket:
        """Queue a request and return its ticket (already granted when the budget is free).

        ``first``: the first post of a reply. It is due at once, like a final edit that has waited
        ``final_slack``: a user who sees nothing yet gains more from a first post than another
        from a fresher edit, or from a final a moment sooner.
        """
        self._prune()
        now = self._clock.now()
        urgent = final or first
        if not self._heap and now >= self._ready_at(urgent) - _EPS:
            self._grant(now)
            return BudgetTicket(self, final, None)
        loop = asyncio.get_running_loop()
        ticket = BudgetTicket(self, final, loop.create_future())
        deadline = now + self.final_slack if final else now if first else math.inf
        self._push(ticket, deadline, next(self._seq))
        if self._task is None:
            self._task = loop.create_task(self._dispatch())
        elif urgent:
            self._poke()  # the dispatcher may be waiting for room an interim needs, not this
        return ticket

    def try_take(self) -> bool:
        """Take a slot only if one is free right now, as an interim send would (leaving the
        finals' reserve alone) and with nothing queued; never waits, never queues.

        For a courtesy request that is worth nothing a moment later (a status line the next
        tick replaces): False means "skip it"."""
        self._prune()
        now = self._clock.now()
        if self._heap or now < self._ready_at(urgent=False) - _EPS:
            return False
        self._grant(now)
        return True

    def returned(self) -> None:
        """A granted request came back, failed, or was not sent after all (``confirm``; a no-op
        otherwise). Every grant must be answered by one call, or its slot stays taken for
        :data:`IN_FLIGHT_LIMIT` seconds."""
        if not self._confirm:
            return
        now = self._clock.now()
        if self._out:
            self._out.popleft()
        self._back.append(now)
        self._poke()

    def owe(self) -> None:
        """A renderer posted a message whose final edit is still to come (``reserve_finals``)."""
        if self._reserve:
            self.owed += 1

    def settle(self, count: int = 1) -> None:
        """``count`` owed final edits were granted or will never be sent."""
        if self._reserve and count > 0:
            self.owed = max(0, self.owed - count)
            self._poke()

    async def acquire(self, final: bool = False) -> None:
        """Wait for a send slot; ``final=True`` for the last edit of a reply."""
        await self.request(final).wait()

    def defer(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (the platform said the whole scope is rate limited)."""
        self._tat = max(self._tat, self._clock.now() + seconds + self._tau)

    def _ready_at(self, urgent: bool = True) -> float:
        """Earliest time the next grant may happen (for an interim edit: ``urgent=False``)."""
        at = self._tat - self._tau
        if self._confirm:
            at = max(at, self._confirmed_at())
        window = self._window
        if window is None:
            return at
        size = window.maxlen or 0
        if len(window) == size:
            at = max(at, window[0] + self.per)
        if not urgent and self._reserve and self.owed:
            # An interim edit needs a free slot beyond one per owed final: the (k+1)-th newest
            # grant must have left the window, where k = free slots it may use = size-owed-1.
            keep = size - self.owed - 1
            if keep < 0:
                return math.inf  # every slot is spoken for: wait for a settle()
            if len(window) > keep:
                at = max(at, window[len(window) - keep - 1] + self.per)
        return at

    def _confirmed_at(self) -> float:
        """When the requests in flight and those back within ``per`` leave room for one more
        (while ``rate`` are in flight: when the oldest would count as back; a :meth:`returned`
        wakes the dispatcher sooner)."""
        now = self._clock.now()
        out, back = self._out, self._back
        while out and out[0] <= now - IN_FLIGHT_LIMIT:
            out.popleft()  # never answered: assume it came back long ago
        while back and back[0] <= now - self.per:
            back.popleft()
        # Requests back within `per` that the next grant allows.
        room = int(self.rate * self._arrival_limit + _EPS) - len(out) - 1
        if room < 0:
            return out[0] + IN_FLIGHT_LIMIT
        if len(back) <= room:
            return -math.inf
        return back[len(back) - room - 1] + self.per

    def _grant(self, now: float) -> None:
        self._tat = max(self._tat, now) + self._interval
        if self._window is not None:
            self._window.append(now)
        if self._confirm:
            self._out.append(now)
        self.granted += 1

    def _push(self, ticket: BudgetTicket, deadline: float, seq: int) -> None:
        entry = [deadline, seq, ticket]
        ticket._entry = entry
        heapq.heappush(self._heap, entry)

    def _promote(self, ticket: BudgetTicket) -> None:
        old = ticket._entry
        if old is not None:
            old[2] = None  # lazily dropped by _prune
            # A first post keeps its (earlier) deadline; an interim one becomes a final's.
            deadline = min(old[0], self._clock.now() + self.final_slack)
            self._push(ticket, deadline, next(self._seq))
            self._poke()

    def _poke(self) -> None:
        """Wake the dispatcher if it waits for room that only an interim edit needs."""
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

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
                urgent = self._heap[0][0] != math.inf
                wait = self._ready_at(urgent) - clock.now()
                if wait > _EPS:
                    if self._confirm or (self._reserve and not urgent):
                        await self._sleep_or_wake(wait)  # a returned() or settle() may make room
                    else:
                        await clock.sleep(wait)
                    continue  # re-check: a final may have arrived meanwhile
                ticket: BudgetTicket = heapq.heappop(self._heap)[2]
                self._grant(clock.now())
                assert ticket._future is not None
                ticket._future.set_result(None)
        finally:
            self._task = None

    async def _sleep_or_wake(self, wait: float) -> None:
        """Sleep ``wait`` seconds (forever: ``inf``) or until :meth:`_poke`: an interim edit
        blocked by the reserve must not hold up a final or first post that arrives meanwhile."""
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wake = wake
        sleeper = None if wait == math.inf else asyncio.ensure_future(self._clock.sleep(wait))
        try:
            if sleeper is None:
                await wake
            else:
                await asyncio.wait((sleeper, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._wake = None
            if sleeper is not None:
                sleeper.cancel()


@dataclass(frozen=True, slots=True)
class SendBudgets:
    """The budgets a renderer's posts and its edits each take a slot from, in order.

    Why: some platforms limit methods separately (Slack: ``chat.postMessage`` per channel and per
    workspace, ``chat.update`` per workspace); a single :class:`EditBudget` stands for both kinds
    where one limit covers every request (Discord's per-bot rate).
    """

    posts: tuple[EditBudget, ...] = ()
    edits: tuple[EditBudget, ...] = ()

    @classmethod
    def of(cls, budget: EditBudget | SendBudgets | None) -> SendBudgets:
        if budget is None:
            return _NO_BUDGETS
        if isinstance(budget, SendBudgets):
            return budget
        return cls((budget,), (budget,))

    def each(self) -> Iterator[EditBudget]:
        """Every budget once."""
        seen: set[int] = set()
        for budget in (*self.posts, *self.edits):
            if id(budget) not in seen:
                seen.add(id(budget))
                yield budget

    @property
    def clock(self) -> Clock | None:
        first = next(self.each(), None)
        return first.clock if first is not None else None


_NO_BUDGETS = SendBudgets()
