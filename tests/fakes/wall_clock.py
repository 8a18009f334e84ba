"""A calendar for tests through the real front ends: real time for every delay (the bots pace
their edits by it), and ``wall()`` (seconds since the epoch, UTC) starting where the test says
and movable at once, so "resets in 3 h 12 min (00:00 UTC)" and a reset at midnight UTC can be
asserted exactly without waiting for a real midnight."""

from __future__ import annotations

import time

from core.clock import MonotonicClock

__all__ = ["ShiftedClock"]


class ShiftedClock(MonotonicClock):
    """:class:`MonotonicClock` whose ``wall()`` reads ``wall_start`` when made, then runs."""

    def __init__(self, wall_start: float) -> None:
        self._offset = wall_start - time.time()

    def wall(self) -> float:
        return time.time() + self._offset

    def set_wall(self, wall: float) -> None:
        """Jump the calendar to ``wall`` (a delay in flight is not affected)."""
        self._offset = wall - time.time()
