"""Injectable time: every delay in ``core`` goes through a :class:`Clock`.

Why: the renderer and the shared edit budget are all about *when* requests are sent. With an
injectable clock, tests drive virtual time (:class:`FakeClock`) and assert exact timestamps without
real sleeps, while production and benchmarks use :class:`MonotonicClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar, runtime_checkable

__all__ = ["Clock", "FakeClock", "MonotonicClock", "wall_time"]

_T = TypeVar("_T")


@runtime_checkable
class Clock(Protocol):
    """A source of monotonic time in seconds and a way to wait on it."""

    def now(self) -> float:
        """Current time in seconds; only differences are meaningful."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a non-positive value just yields to the event loop)."""
        ...


def wall_time(clock: Clock) -> float:
    """Seconds since the epoch (UTC) by ``clock``: its ``wall()`` when it has one (both clocks
    here do; :class:`FakeClock`'s moves with its virtual time), else ``time.time()``. For what
    follows the calendar (daily token quotas reset at midnight UTC), not for delays."""
    wall = getattr(clock, "wall", None)
    return float(wall()) if callable(wall) else time.time()


class MonotonicClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch: ``time.time()``."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds if seconds > 0 else 0)


class FakeClock:
    """Virtual time for tests: ``sleep`` parks the caller until the test advances the clock.

    ``advance``/``advance_to`` wake sleepers one deadline at a time (setting ``now`` to each deadline
    and letting the woken tasks run before the next), ``jump`` imitates an event loop that was busy and
    wakes every overdue sleeper at once, and ``run`` auto-advances until an awaitable completes.
    """

    __slots__ = ("_now", "_seq", "_waiters", "_wall_offset")

    def __init__(self, start: float = 0.0, *, wall_start: float | None = None) -> None:
        self._now = float(start)
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        #: ``wall()`` is ``wall_start`` at ``start`` and moves with virtual time (default: the
        #: virtual time itself, i.e. the epoch at 0).
        self._wall_offset = (float(start) if wall_start is None else wall_start) - float(start)

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        """Virtual seconds since the epoch (UTC): ``wall_start`` plus the time advanced since."""
        return self._wall_offset + self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def pending(self) -> int:
        """Number of tasks currently sleeping on this clock."""
        return sum(1 for _, _, fut in self._waiters if not fut.done())

    def next_deadline(self) -> float | None:
        """Earliest deadline of a live sleeper, or ``None``."""
        self._prune()
        return self._waiters[0][0] if self._waiters else None

    async def settle(self) -> None:
        """Yield until every other task is blocked (nothing left ready to run)."""
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)  # CPython's ready queue; fall back to many yields
        for i in range(100_000):
            await asyncio.sleep(0)
            if (not ready) if ready is not None else i >= 200:
                return
        raise RuntimeError("event loop never settled: some task keeps yielding without blocking")

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in deadline order."""
        await self.advance_to(self._now + seconds)

    async def advance_to(self, target: float) -> None:
        """Move time forward to ``target``, waking sleepers in deadline order."""
        await self.settle()
        while True:
            self._prune()
            if not self._waiters or self._waiters[0][0] > target:
                break
            deadline, _, fut = heapq.heappop(self._waiters)
            self._now = max(self._now, deadline)
            fut.set_result(None)
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()

    async def jump(self, seconds: float) -> None:
        """Move time forward at once and wake all overdue sleepers together (a late event loop)."""
        self._now += seconds
        while self._waiters and self._waiters[0][0] <= self._now:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():
                fut.set_result(None)
        await self.settle()

    async def run(self, aw: Awaitable[_T], *, limit: float = 1e6) -> _T:
        """Await ``aw``, advancing virtual time to each next deadline while it is blocked.

        Raises ``RuntimeError`` if ``aw`` blocks on something other than this clock (a deadlock in
        virtual time) or needs more than ``limit`` virtual seconds.
        """
        start = self._now
        task = asyncio.ensure_future(aw)
        try:
            while True:
                await self.settle()
                if task.done():
                    return task.result()
                nxt = self.next_deadline()
                if nxt is None:
                    raise RuntimeError(
                        "deadlock: awaitable is blocked and nothing sleeps on the clock"
                    )
                if nxt - start > limit:
                    raise RuntimeError(f"awaitable still blocked after {limit} virtual seconds")
                await self.advance_to(nxt)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _prune(self) -> None:
        waiters = self._waiters
        while waiters and waiters[0][2].done():
            heapq.heappop(waiters)
