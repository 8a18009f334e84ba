"""Tests for core.budget (EditBudget, BudgetTicket) on virtual time; renderers sharing a budget
are tested in test_render.py."""

from __future__ import annotations

import asyncio

import pytest

from core.budget import EditBudget
from core.clock import FakeClock


def assert_rate(times: list[float], rate: int, per: float) -> None:
    """No window of ``per`` virtual seconds holds more than ``rate`` grants."""
    times = sorted(times)
    for i in range(len(times) - rate):
        assert times[i + rate] - times[i] >= per - 1e-9, times


async def test_budget_serves_finals_first_then_interims_fifo() -> None:
    clock = FakeClock()
    budget = EditBudget(1, 1.0, clock=clock)
    order: list[tuple[float, str]] = []

    async def req(name: str, final: bool) -> None:
        await budget.acquire(final)
        order.append((clock.now(), name))

    tasks = [asyncio.create_task(req("i1", False))]
    await clock.settle()
    for name, final in (("i2", False), ("i3", False), ("f1", True), ("f2", True)):
        tasks.append(asyncio.create_task(req(name, final)))
        await clock.settle()
    assert budget.waiting == 4
    await clock.run(asyncio.gather(*tasks))
    assert order == [(0.0, "i1"), (1.0, "f1"), (2.0, "f2"), (3.0, "i2"), (4.0, "i3")]
    assert budget.granted == 5


async def test_budget_serves_first_posts_and_finals_by_deadline_then_interims() -> None:
    clock = FakeClock()
    budget = EditBudget(1, 1.0, clock=clock, final_slack=2.0)
    order: list[str] = []

    async def req(name: str, final: bool, first: bool) -> None:
        await budget.request(final, first=first).wait()
        order.append(name)

    tasks = [asyncio.create_task(req("i0", False, False))]  # granted at once
    await clock.settle()
    for name, final, first in (
        ("i1", False, False),
        ("f1", True, False),  # due at t=2
        ("p1", False, True),  # due now
        ("p2", False, True),
    ):
        tasks.append(asyncio.create_task(req(name, final, first)))
        await clock.settle()
    await clock.advance(2.5)  # p1 at t=1, p2 at t=2
    tasks.append(asyncio.create_task(req("p3", False, True)))  # due at 2.5, after f1
    await clock.settle()
    await clock.run(asyncio.gather(*tasks))
    assert order == ["i0", "p1", "p2", "f1", "p3", "i1"]


async def test_reserve_keeps_a_slot_in_the_window_for_every_final_owed() -> None:
    clock = FakeClock()
    budget = EditBudget(4, 60.0, burst=4, clock=clock, reserve_finals=True)
    times: list[tuple[str, float]] = []

    async def req(name: str, final: bool = False) -> None:
        await budget.request(final).wait()
        times.append((name, clock.now()))

    budget.owe()
    budget.owe()  # two replies will need a final edit: 2 of the 4 slots are theirs
    interims = [asyncio.create_task(req(f"i{n}")) for n in range(3)]
    await clock.settle()
    assert times == [("i0", 0.0), ("i1", 0.0)]  # the third would take a final's slot
    await clock.advance(10)
    assert len(times) == 2
    budget.settle()  # one final got its slot elsewhere (or never comes)
    await clock.settle()
    assert times[-1] == ("i2", 10.0)
    final = asyncio.create_task(req("f", True))
    await clock.settle()
    assert times[-1] == ("f", 10.0)  # the slot kept for it
    assert budget.owed == 1
    await clock.run(asyncio.gather(*interims, final))


async def test_reserve_blocks_interims_when_finals_fill_the_window_and_lets_finals_through() -> (
    None
):
    clock = FakeClock()
    budget = EditBudget(2, 60.0, burst=2, clock=clock, reserve_finals=True)
    granted: list[str] = []

    async def req(name: str, final: bool = False) -> None:
        await budget.request(final).wait()
        granted.append(name)

    for _ in range(3):
        budget.owe()  # more finals owed than the window holds
    interim = asyncio.create_task(req("interim"))
    await clock.settle()
    await clock.advance(120)
    assert granted == []  # no interim while every slot is a final's
    finals = [asyncio.create_task(req(f"f{n}", True)) for n in range(2)]
    await clock.settle()
    assert granted == ["f0", "f1"]  # the dispatcher, parked on the interim, woke for them
    budget.settle(3)
    await clock.run(asyncio.gather(interim, *finals))
    assert granted == ["f0", "f1", "interim"]
    assert clock.now() >= 180.0  # the window had to slide past the finals


async def test_owe_and_settle_are_no_ops_without_reserve() -> None:
    budget = EditBudget(1, 1.0, clock=FakeClock())
    budget.owe()
    assert budget.owed == 0
    budget.settle()
    assert budget.owed == 0
    assert budget.request().granted


async def test_budget_paces_after_busy_loop_instead_of_bursting() -> None:
    clock = FakeClock()
    budget = EditBudget(2, 1.0, clock=clock)  # one grant per 0.5 s
    times: list[float] = []

    async def req() -> None:
        await budget.acquire()
        times.append(clock.now())

    tasks = [asyncio.create_task(req()) for _ in range(5)]
    await clock.settle()
    assert times == [0.0]
    await clock.jump(10)  # the event loop was busy for 10 s: grants are overdue
    assert times == [0.0, 10.0]  # one grant, not a catch-up burst
    await clock.run(asyncio.gather(*tasks))
    assert times == [0.0, 10.0, 10.5, 11.0, 11.5]


async def test_budget_burst_is_bounded_and_never_overfills_a_window() -> None:
    clock = FakeClock()
    budget = EditBudget(4, 1.0, burst=2, clock=clock)
    times: list[float] = []

    async def req() -> None:
        await budget.acquire()
        times.append(clock.now())

    tasks = [asyncio.create_task(req()) for _ in range(12)]
    await clock.settle()
    assert times == [0.0, 0.0]  # a burst of two, then paced
    await clock.advance(0.5)
    assert times == [0.0, 0.0, 0.25, 0.5]
    await clock.jump(10)  # busy loop: at most `burst` overdue grants go together
    assert clock.now() == 10.5
    assert times[4:] == [10.5, 10.5]
    await clock.run(asyncio.gather(*tasks))
    assert len(times) == 12
    assert_rate(times, 4, 1.0)


async def test_budget_set_rate_paces_at_the_new_rate_from_then_on() -> None:
    clock = FakeClock()
    budget = EditBudget(4, 1.0, burst=4, clock=clock)
    times: list[float] = []

    async def req() -> None:
        await budget.acquire()
        times.append(clock.now())

    budget.set_rate(2)  # another process joined: half of the bot's 4/s is ours
    assert (budget.rate, budget.burst) == (2, 2)  # a burst never exceeds the rate
    tasks = [asyncio.create_task(req()) for _ in range(8)]
    await clock.run(asyncio.gather(*tasks))
    assert_rate(times, 2, 1.0)
    assert times[-1] == 3.0  # 2 at once, then one per 0.5 s

    budget.set_rate(4)  # the other process left: the full rate and burst come back
    assert (budget.rate, budget.burst) == (4, 4)
    with pytest.raises(ValueError, match="positive"):
        budget.set_rate(0)


async def test_budget_cancelled_waiter_does_not_consume_a_grant() -> None:
    clock = FakeClock()
    budget = EditBudget(1, 1.0, clock=clock)
    await budget.acquire()
    gone = asyncio.create_task(budget.acquire())
    kept = asyncio.create_task(budget.acquire())
    await clock.settle()
    gone.cancel()
    await clock.advance(1)
    assert kept.done()
    assert budget.granted == 2


async def test_budget_promote_moves_a_request_ahead_of_interims() -> None:
    clock = FakeClock()
    budget = EditBudget(1, 1.0, clock=clock)
    budget.request()  # takes the free slot at t=0
    a = budget.request()
    b = budget.request()
    b.promote()
    await clock.advance(1)
    assert b.granted
    assert not a.granted
    await clock.advance(1)
    assert a.granted


async def test_budget_defer_pauses_grants() -> None:
    clock = FakeClock()
    budget = EditBudget(10, 1.0, clock=clock)
    budget.defer(5)
    task = asyncio.create_task(budget.acquire())
    await clock.advance(4.9)
    assert not task.done()
    await clock.advance(0.1)
    assert task.done()


async def test_budget_ticket_granted_on_the_spot_when_free_and_cancel_withdraws() -> None:
    clock = FakeClock()
    budget = EditBudget(1, 1.0, clock=clock)
    free = budget.request()
    assert free.granted  # the budget was free: no queue, no wait
    await free.wait()
    queued = budget.request(first=True)
    assert not queued.granted
    assert budget.waiting == 1
    queued.cancel()
    assert budget.waiting == 0
    await clock.advance(5)
    assert budget.granted == 1  # the withdrawn request never consumed a grant


async def test_try_take_takes_a_free_slot_and_otherwise_skips_without_queueing() -> None:
    clock = FakeClock()
    budget = EditBudget(2, 60.0, burst=2, clock=clock, reserve_finals=True)
    assert budget.try_take()  # free: taken on the spot
    budget.owe()  # a final is owed: the last slot of the window is its
    assert not budget.try_take()  # no slot free for a courtesy: skipped...
    assert budget.waiting == 0  # ...not queued
    assert budget.granted == 1
    assert budget.request(True).granted  # the final still has its slot
    budget.settle()
    assert not budget.try_take()  # the window is full
    await clock.advance(60.0)
    assert budget.try_take()  # it slid: a slot is free again
    assert budget.request(True).granted
    queued = budget.request(True)  # the window is full again: this final waits...
    assert not queued.granted
    assert not budget.try_take()  # ...and a courtesy never takes a slot before it
    assert budget.waiting == 1
    queued.cancel()
    assert budget.granted == 4


async def test_a_confirming_budget_counts_a_request_until_it_comes_back() -> None:
    # rate 3 per 1 s: three requests may be in flight or back within the last second, together.
    clock = FakeClock()
    budget = EditBudget(3, 1.0, burst=3, clock=clock, confirm=True)
    assert [budget.request(first=True).granted for _ in range(3)] == [True, True, True]
    assert budget.in_flight == 3
    fourth = budget.request(first=True)
    await clock.advance(5.0)  # nothing came back: none of the three may have arrived yet
    assert not fourth.granted
    budget.returned()  # at t=5; the two still out may arrive any moment
    await clock.advance(0.999)
    assert not fourth.granted
    await clock.advance(0.001)  # the one back at t=5 is out of the last second
    assert fourth.granted
    assert clock.now() == 6.0
    for _ in range(3):
        budget.returned()
    assert budget.in_flight == 0


async def test_a_confirming_budget_catches_up_a_busy_loop_without_overfilling_a_second() -> None:
    # A loop busy for 0.3 s: the burst catches up the missed grants at once, while every
    # second of arrivals (each request arriving any time between its grant and its return)
    # still holds at most `rate`.
    clock = FakeClock()
    budget = EditBudget(10, 1.0, burst=5, clock=clock, confirm=True)
    grants: list[float] = []
    spans: list[tuple[float, float]] = []  # (granted, came back)

    async def send() -> None:
        await budget.request(first=True).wait()
        granted = clock.now()
        grants.append(granted)
        await clock.sleep(0.02)  # the round trip
        spans.append((granted, clock.now()))
        budget.returned()

    tasks = [asyncio.create_task(send()) for _ in range(40)]
    await clock.settle()
    await clock.advance(2.05)  # 10 per second by now
    await clock.jump(0.3)  # the event loop was busy
    caught_up = [g for g in grants if g == clock.now()]
    await clock.run(asyncio.gather(*tasks))
    assert len(grants) == 40
    assert len(caught_up) == 3  # the missed slots the last second still had room for
    # The worst case at the platform: every request arriving at the latest moment of others'
    # windows. For any second (t - 1, t], count each request that may have arrived in it.
    for t in {moment for span in spans for moment in span}:
        inside = [1 for g, back in spans if g <= t and back > t - 1.0]
        assert len(inside) <= 10, (t, spans)


async def test_a_request_never_confirmed_frees_its_slot_after_the_limit() -> None:
    from core.budget import IN_FLIGHT_LIMIT

    clock = FakeClock()
    budget = EditBudget(1, 1.0, clock=clock, confirm=True)
    assert budget.request(first=True).granted  # its sender lost track of it
    second = budget.request(first=True)
    await clock.advance(IN_FLIGHT_LIMIT - 1)
    assert not second.granted
    await clock.advance(1.0)
    assert second.granted


async def test_returned_is_a_no_op_without_confirm() -> None:
    clock = FakeClock()
    budget = EditBudget(1, 1.0, clock=clock)
    assert budget.request().granted
    budget.returned()
    assert budget.in_flight == 0
    second = budget.request()
    await clock.advance(1.0)
    assert second.granted


async def test_arrival_limit_lets_more_be_in_flight_than_the_pace() -> None:
    # Paced at 3 per second; the platform takes 6 (arrival_limit 2): six may be out at once.
    clock = FakeClock()
    budget = EditBudget(3, 1.0, burst=3, clock=clock, confirm=True, arrival_limit=2.0)
    tickets = [budget.request(first=True) for _ in range(7)]
    await clock.advance(1.0)
    assert [t.granted for t in tickets] == [True] * 6 + [False]  # 3 at t=0, 3 by t=1
    await clock.advance(5.0)
    assert not tickets[6].granted  # six in flight: the platform's limit
    budget.returned()
    await clock.advance(1.0)
    assert tickets[6].granted
    with pytest.raises(ValueError, match="arrival_limit"):
        EditBudget(3, 1.0, confirm=True, arrival_limit=0.5)
