"""``RedisCluster``: what bot processes sharing one Redis agree on, against a real Redis.

Each ``RedisCluster`` below plays one process (its own process id); engines get their own store
connections, as separate processes would. Real separate processes: tests/bots/web/test_multiprocess.py.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from core.budget import EditBudget
from core.clock import FakeClock
from core.cluster import BudgetShare, cluster_for
from core.conversations import ConversationKey, Status
from core.engine import STORE_UNAVAILABLE, ChatEngine, Refused
from core.policy import Actor
from core.settings import load_settings
from core.stores import redis_cluster
from core.stores.redis_cluster import RedisCluster
from core.stores.redis_store import RedisStore


class Wall:
    """A settable wall clock shared by the 'processes' of one test."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def make_cluster(redis_url: str) -> AsyncIterator[Callable[..., RedisCluster]]:
    """``make_cluster(wall=...)``: one 'process' (its own store connection) on this test's keys."""
    prefix = f"test:{uuid.uuid4().hex}:"
    stores: list[RedisStore] = []

    def make(wall: Callable[[], float] | None = None) -> RedisCluster:
        stores.append(RedisStore(redis_url, prefix=prefix))
        return RedisCluster(stores[-1], **({"wall": wall} if wall else {}))

    yield make
    for store in stores:
        await store.aclose()


async def test_the_redis_store_gets_a_shared_cluster_on_its_own_keys(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix="test:x:")
    try:
        cluster = cluster_for(store)
        assert isinstance(cluster, RedisCluster)
        assert cluster.shared is True
        key = ConversationKey("test", "c")
        assert await cluster.running(key) is False
        async with store.lock(key):
            assert await cluster.running(key) is True  # the lock is the store's own
        assert await cluster.running(key) is False
        assert "redis://" not in repr(cluster)
    finally:
        await store.aclose()


async def test_the_prompt_limit_counts_across_processes(make_cluster: Any) -> None:
    wall = Wall()
    one, two = make_cluster(wall), make_cluster(wall)
    assert await one.retry_after("u", 2, 10.0) == 0
    wall.now += 2.5
    assert await two.retry_after("u", 2, 10.0) == 0
    assert await one.retry_after("u", 2, 10.0) == pytest.approx(7.5)  # the first leaves at +10
    assert await two.retry_after("u", 2, 10.0) == pytest.approx(7.5)  # refusals are not counted
    assert await two.retry_after("v", 2, 10.0) == 0
    wall.now += 7.5
    assert await two.retry_after("u", 2, 10.0) == 0
    assert await one.retry_after("u", 0, 10.0) == 0  # 0: no limit


async def test_the_last_slot_goes_to_one_process_only(make_cluster: Any) -> None:
    clusters = [make_cluster() for _ in range(8)]
    waits = await asyncio.gather(*(c.retry_after("racer", 3, 60.0) for c in clusters))
    assert sorted(w == 0 for w in waits) == [False] * 5 + [True] * 3


async def test_an_event_is_first_seen_by_one_process_only(make_cluster: Any) -> None:
    one, two = make_cluster(), make_cluster()
    seen = await asyncio.gather(*(c.first_sighting("Ev1", 60) for c in (one, two, one, two)))
    assert sorted(seen) == [False, False, False, True]
    assert await two.first_sighting("Ev2", 60) is True
    assert await one.first_sighting("short", 0.001) is True
    await asyncio.sleep(0.01)  # past the 1 ms memory (Redis expires it)
    assert await two.first_sighting("short", 0.001) is True


async def test_heartbeats_count_live_processes_and_forget_silent_ones(make_cluster: Any) -> None:
    wall = Wall()
    one, two = make_cluster(wall), make_cluster(wall)
    assert await one.heartbeat("discord", 15) == 1
    assert await two.heartbeat("discord", 15) == 2
    assert await one.heartbeat("slack", 15) == 1  # groups are separate
    wall.now += 16  # `two` stopped beating (crashed): gone after its ttl
    assert await one.heartbeat("discord", 15) == 1
    await two.heartbeat("discord", 15)
    await two.leave("discord")  # a clean stop leaves at once
    assert await one.heartbeat("discord", 15) == 1


async def test_budget_shares_divide_the_bots_rate_among_processes(make_cluster: Any) -> None:
    clock = FakeClock()
    budgets = [EditBudget(40, 1.0, burst=5, clock=clock) for _ in range(2)]
    shares = [BudgetShare(make_cluster(), "discord", clock=clock) for _ in range(2)]
    for share, budget in zip(shares, budgets, strict=True):
        share.add(budget, 40)
    await shares[0].start()
    assert budgets[0].rate == 40
    await shares[1].start()  # the newcomer takes its share at once...
    assert budgets[1].rate == 20
    await clock.advance(shares[0].every)  # ...the other at its next (background) beat
    await until(lambda: budgets[0].rate == 20)
    await shares[1].aclose()  # leaves the group: the other takes the whole rate back
    assert await shares[0].beat() == 1
    assert budgets[0].rate == 40
    await shares[0].aclose()


async def until(condition: Callable[[], bool], tries: int = 500) -> None:
    """Wait (bounded) for a background task's Redis round trip to show."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


# --------------------------------------------------------------------------- engines


@pytest.fixture
async def engines(fresh_redis_url: str) -> AsyncIterator[Callable[..., ChatEngine]]:
    made: list[ChatEngine] = []

    def make(words: int = 400, **overrides: Any) -> ChatEngine:
        settings = load_settings(
            store_url=fresh_redis_url,
            llmconnect_model="echo",
            **{"user_rate_limit": 0, **overrides},
        )
        engine = ChatEngine(settings, env={}, options={"words": words, "delay": 0.01})
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.aclose()


async def first_delta(reply: Any) -> None:
    async for _ in reply:
        if reply.status is Status.STREAMING and reply.text:
            return


async def test_stop_in_one_process_stops_the_generation_running_in_another(engines: Any) -> None:
    one, two = engines(), engines()
    key = ConversationKey("test", "shared")
    reply = await one.submit(key, "talk for a while")
    await first_delta(reply)

    assert await two.stop(key) is True
    await reply
    assert reply.status is Status.CANCELLED
    assert reply.text
    assert len(reply.text.split()) < 400
    stored = await two.get(key)
    assert stored is not None
    assert [m.status for m in stored.messages] == [Status.COMPLETE, Status.CANCELLED]
    assert stored.llm_history() == [  # what the user saw of a stopped reply stays in history
        {"role": "user", "content": "talk for a while"},
        {"role": "assistant", "content": reply.text},
    ]
    assert await two.stop(key) is False  # nothing runs any more
    assert await one.stop(key) is False


async def test_stop_reaches_the_running_generation_not_the_one_queued_here(engines: Any) -> None:
    one, two = engines(), engines(words=20)
    key = ConversationKey("test", "queued")
    running = await one.submit(key, "first")
    await first_delta(running)
    queued = await two.submit(key, "second")  # waits for the conversation lock

    assert await two.stop(key) is True
    await running
    assert running.status is Status.CANCELLED
    await queued  # ours runs next, in full
    assert queued.status is Status.COMPLETE
    assert len(queued.text.split()) == 20


async def test_the_prompt_limit_holds_across_processes(engines: Any) -> None:
    one, two = engines(user_rate_limit=2), engines(user_rate_limit=2)
    actor = Actor("U1")
    await one.submit(ConversationKey("test", "a"), "one", actor=actor)
    await two.submit(ConversationKey("test", "b"), "two", actor=actor)
    with pytest.raises(Refused, match="too fast"):
        await one.submit(ConversationKey("test", "c"), "three", actor=actor)
    await two.submit(ConversationKey("test", "d"), "someone else", actor=Actor("U2"))


async def test_an_unreachable_redis_is_a_clear_refusal_not_a_crash() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = load_settings(store_url=f"redis://127.0.0.1:{port}/0", llmconnect_model="echo")
    engine = ChatEngine(settings, env={})
    key = ConversationKey("test", "down")
    try:
        with pytest.raises(Refused) as refused:
            await engine.submit(key, "hello?", actor=Actor("U1"))
        assert refused.value.user_message == STORE_UNAVAILABLE
        assert await engine.stop(key) is False
    finally:
        await engine.aclose()


async def test_a_model_and_system_prompt_set_elsewhere_while_a_reply_streams_survive_its_save(
    engines: Any,
) -> None:
    """The reply's final save writes its whole conversation: it must keep what another process
    changed meanwhile, not the model and system prompt it started with."""
    one, two = engines(), engines()
    key = ConversationKey("test", "changed-elsewhere")
    reply = await one.submit(key, "talk for a while")
    await first_delta(reply)

    assert await two.set_model(key, "echo") == "echo/echo"
    await two.set_system(key, "be terse")
    assert await one.stop(key) is True  # the reply ends (and saves) in its own process
    await reply

    stored = await two.get(key)
    assert stored is not None
    assert (stored.model, stored.system) == ("echo/echo", "be terse")
    assert [m.status for m in stored.messages] == [Status.COMPLETE, Status.CANCELLED]
    assert stored.messages[-1].content == reply.text


async def subscriber_ids(client: Any) -> set[str]:
    return {str(c["id"]) for c in await client.client_list(_type="pubsub")}


async def test_stop_reaches_another_process_after_its_stop_listener_lost_redis(
    engines: Any, fresh_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_cluster, "RESUBSCRIBE_AFTER", 0.01)  # no real second's wait
    one, two = engines(), engines()
    key = ConversationKey("test", "resubscribed")
    reply = await one.submit(key, "talk for a while")  # one now listens for stop requests
    await first_delta(reply)
    admin = RedisStore(fresh_redis_url).client
    try:
        before = await subscriber_ids(admin)
        assert before
        # Redis drops the subscriber connections (a restart, a failover, a proxy's timeout).
        assert await admin.client_kill_filter(_type="pubsub") >= 1
        ids: set[str] = set()

        async def check() -> None:
            ids.clear()
            ids.update(await subscriber_ids(admin))

        for _ in range(500):  # the listener subscribes again, on a new connection
            await check()
            if ids - before:
                break
            await asyncio.sleep(0.01)
        assert ids - before, "the stop listener never subscribed again"

        assert await two.stop(key) is True
        await reply
        assert reply.status is Status.CANCELLED
        assert len(reply.text.split()) < 400
    finally:
        await admin.aclose()
