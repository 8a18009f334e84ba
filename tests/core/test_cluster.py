"""``core.cluster`` in one process: ``LocalCluster`` and ``BudgetShare`` (Redis: tests/core/stores)."""

from __future__ import annotations

import asyncio

from core.budget import EditBudget
from core.clock import FakeClock
from core.cluster import SEEN_EVENTS, BudgetShare, LocalCluster, cluster_for
from core.conversations import ConversationKey, MemoryStore


async def test_the_memory_store_gets_a_local_cluster() -> None:
    cluster = cluster_for(MemoryStore())
    assert isinstance(cluster, LocalCluster)
    assert cluster.shared is False


async def test_local_rate_limit_counts_per_user_and_frees_with_time() -> None:
    clock = FakeClock()
    cluster = LocalCluster(clock)
    assert await cluster.retry_after("u", 2, 10.0) == 0
    await clock.advance(3)
    assert await cluster.retry_after("u", 2, 10.0) == 0
    assert await cluster.retry_after("u", 2, 10.0) == 7  # the first prompt leaves at t=10
    assert await cluster.retry_after("v", 2, 10.0) == 0
    await clock.advance(7)
    assert await cluster.retry_after("u", 2, 10.0) == 0
    assert await cluster.retry_after("u", 0, 10.0) == 0  # 0: no limit


async def test_local_first_sighting_is_once_per_ttl_and_bounded() -> None:
    clock = FakeClock()
    cluster = LocalCluster(clock)
    assert await cluster.first_sighting("Ev1", 60) is True
    assert await cluster.first_sighting("Ev1", 60) is False
    assert await cluster.first_sighting("Ev2", 60) is True
    await clock.advance(60)
    assert await cluster.first_sighting("Ev1", 60) is True  # remembered for ttl only
    for n in range(SEEN_EVENTS + 10):
        await cluster.first_sighting(f"flood{n}", 60)
    assert len(cluster._seen) == SEEN_EVENTS


async def test_local_cluster_has_nobody_else_to_stop_or_share_with() -> None:
    cluster = LocalCluster()
    key = ConversationKey("test", "c")
    assert await cluster.running(key) is False
    ready = asyncio.Event()
    await cluster.listen_stops(lambda k: None, ready)  # returns at once: nothing to hear
    assert ready.is_set()
    assert await cluster.heartbeat("discord", 15) == 1


async def test_budget_share_keeps_the_full_rate_in_one_process() -> None:
    clock = FakeClock()
    share = BudgetShare(LocalCluster(clock), "discord", clock=clock)
    budget = EditBudget(45, 1.0, burst=5, clock=clock)
    share.add(budget, 45)
    await share.start()
    assert share._task is None  # no heartbeat task without other processes
    assert (budget.rate, budget.burst) == (45, 5)
    await share.aclose()
