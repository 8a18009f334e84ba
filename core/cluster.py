"""What several bot processes must agree on besides the conversations themselves.

The store (``STORE_URL``) shares conversations and the per-conversation lock. A :class:`Cluster`
shares the rest of what a user would notice if each process counted on its own:

- the per-user prompt limit (``USER_RATE_LIMIT`` per ``USER_RATE_WINDOW``) counts prompts sent
  to any process;
- a platform event delivered twice (Slack redelivers when an answer was slow, possibly to
  another worker behind the load balancer) is answered once;
- ``/stop`` reaches the generation wherever it runs (the process holding the conversation lock);
- a platform's request budget (Discord: 50 requests/s per bot; Slack: per workspace) is divided
  among the live processes serving that platform (:class:`BudgetShare`).

One process (memory, SQLite): :class:`LocalCluster`, all in memory. Redis:
``core.stores.redis_cluster.RedisCluster`` over the store's own connection pool. Chosen by
:func:`cluster_for`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .clock import Clock, MonotonicClock
from .conversations import ConversationKey
from .policy import UserRateLimiter

if TYPE_CHECKING:
    from .budget import EditBudget

__all__ = ["HEARTBEAT_EVERY", "BudgetShare", "Cluster", "LocalCluster", "cluster_for"]

log = logging.getLogger("llmconnect.cluster")

#: How often a process says it is alive in a :class:`BudgetShare` group; three missed beats and
#: the others take its share back.
HEARTBEAT_EVERY = 5.0
#: Event ids remembered by one process (Slack retries within minutes, a few times at most).
SEEN_EVENTS = 4096


@runtime_checkable
class Cluster(Protocol):
    """The processes serving one bot (one process, or many sharing Redis)."""

    #: True when other processes may take part (then ``/stop`` and budgets go through it).
    shared: bool

    async def retry_after(self, user_id: str, limit: int, window: float) -> float:
        """0 and the prompt is counted when ``user_id`` may send one now; else seconds to wait."""
        ...

    async def first_sighting(self, event_id: str, ttl: float) -> bool:
        """True the first time ``event_id`` is seen (by any process) within ``ttl`` seconds."""
        ...

    async def running(self, key: ConversationKey) -> bool:
        """True while some process holds ``key``'s conversation lock (a generation runs)."""
        ...

    async def request_stop(self, key: ConversationKey) -> None:
        """Ask whichever process runs ``key``'s generation to stop it."""
        ...

    async def listen_stops(
        self, on_stop: Callable[[ConversationKey], None], ready: asyncio.Event
    ) -> None:
        """Call ``on_stop`` for every stop request until cancelled; set ``ready`` once listening."""
        ...

    async def heartbeat(self, group: str, ttl: float) -> int:
        """Say this process serves ``group``; returns how many processes serve it (≥ 1)."""
        ...

    async def leave(self, group: str) -> None:
        """This process no longer serves ``group``."""
        ...


class LocalCluster:
    """One process: nothing to share, everything counted here."""

    shared = False

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or MonotonicClock()
        self._limiters: dict[tuple[int, float], UserRateLimiter] = {}
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def retry_after(self, user_id: str, limit: int, window: float) -> float:
        limiter = self._limiters.get((limit, window))
        if limiter is None:
            limiter = self._limiters[(limit, window)] = UserRateLimiter(limit, window, self.clock)
        return limiter.retry_after(user_id)

    async def first_sighting(self, event_id: str, ttl: float) -> bool:
        now = self.clock.now()
        seen = self._seen.get(event_id)
        if seen is not None and now - seen < ttl:
            return False
        self._seen[event_id] = now
        self._seen.move_to_end(event_id)
        if len(self._seen) > SEEN_EVENTS:
            self._seen.popitem(last=False)
        return True

    async def running(self, key: ConversationKey) -> bool:
        return False  # the engine knows its own generations

    async def request_stop(self, key: ConversationKey) -> None:
        return None

    async def listen_stops(
        self, on_stop: Callable[[ConversationKey], None], ready: asyncio.Event
    ) -> None:
        ready.set()  # nobody else to hear from

    async def heartbeat(self, group: str, ttl: float) -> int:
        return 1

    async def leave(self, group: str) -> None:
        return None


def cluster_for(store: object, clock: Clock | None = None) -> Cluster:
    """The cluster a store implies: a store shared between processes makes its own (Redis),
    any other gets a :class:`LocalCluster`."""
    make: Callable[[], Cluster] | None = getattr(store, "cluster", None)
    return make() if make is not None else LocalCluster(clock)


class BudgetShare:
    """Keeps this process's request budgets at its share of the platform's limit.

    ``add(budget, total)`` registers a budget whose platform allows ``total`` requests per the
    budget's ``per`` for the whole bot; :meth:`run` beats every :data:`HEARTBEAT_EVERY` seconds
    in ``group`` and sets each budget to ``total / live processes``. With one process (or a
    :class:`LocalCluster`) budgets keep their full rate. Between a process joining and the
    others' next beat the bot may briefly exceed its share; the renderers' 429 handling covers
    that (the platform says how long to wait; nothing is dropped).
    """

    def __init__(
        self,
        cluster: Cluster,
        group: str,
        *,
        every: float = HEARTBEAT_EVERY,
        clock: Clock | None = None,
    ) -> None:
        self.cluster = cluster
        self.group = group
        self.every = every
        self.clock = clock or MonotonicClock()
        self.processes = 1
        self._budgets: list[tuple[EditBudget, float]] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, budget: EditBudget, total: float) -> None:
        self._budgets.append((budget, total))
        budget.set_rate(total / self.processes)

    async def beat(self) -> int:
        """One heartbeat: re-count the live processes and re-divide the budgets."""
        count = max(1, await self.cluster.heartbeat(self.group, self.every * 3))
        if count != self.processes:
            log.info("%s: %d processes share the request budget", self.group, count)
        self.processes = count
        for budget, total in self._budgets:
            budget.set_rate(total / count)
        return count

    async def start(self) -> None:
        """Beat once now (so the first requests already keep to the share), then keep beating."""
        if not self.cluster.shared:
            return
        await self._try_beat()
        self._task = asyncio.create_task(self._run(), name=f"budget share {self.group}")

    async def _run(self) -> None:
        while True:
            await self.clock.sleep(self.every)
            await self._try_beat()

    async def _try_beat(self) -> None:
        try:
            await self.beat()
        except Exception as exc:  # Redis away: keep the last share, beat again later
            log.warning("%s: heartbeat failed (%s)", self.group, type(exc).__name__)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(Exception):
                await self.cluster.leave(self.group)
