"""Tests for core.render (StreamRenderer, alone and sharing an EditBudget) and core.clock, all on
virtual time; EditBudget alone is tested in test_budget.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.budget import EditBudget, SendBudgets
from core.clock import Clock, FakeClock, MonotonicClock
from core.controls import Action, Control
from core.render import (
    PENDING_PART,
    PROGRESS_LINE_CHARS,
    PROGRESS_LINES,
    REPLACED_PART,
    TRANSIENT_RETRIES,
    TRANSIENT_WAIT,
    BufferedRenderer,
    ControlsSink,
    DeletingSink,
    MessageSink,
    RenderResult,
    SinkGone,
    SinkRateLimited,
    SinkTransient,
    StreamRenderer,
    with_note,
)
from core.split import split_message, split_segments
from tests.core.test_budget import assert_rate

MARKER = " ▌"


@dataclass(frozen=True)
class Call:
    time: float
    sink: str
    kind: str  # "post" | "edit"
    ref: int
    text: str


class RecordingSink:
    """In-memory MessageSink: keeps every message's current text and the history of calls.

    ``faults`` maps an attempt number (0-based, posts and edits together) to the exception that
    attempt raises; ``latency`` makes every call take that many virtual seconds.
    """

    def __init__(
        self,
        max_len: int = 2000,
        *,
        clock: FakeClock,
        name: str = "",
        latency: float = 0.0,
        faults: dict[int, Exception] | None = None,
        log: list[Call] | None = None,
    ) -> None:
        self.max_len = max_len
        self.clock = clock
        self.name = name
        self.latency = latency
        self.faults = dict(faults or {})
        self.messages: list[str] = []
        self.history: list[Call] = []
        self.attempt_times: list[float] = []
        self.log = log if log is not None else []

    async def _call(self, kind: str, ref: int, text: str) -> None:
        started = self.clock.now()
        attempt = len(self.attempt_times)
        self.attempt_times.append(started)
        if self.latency:
            await self.clock.sleep(self.latency)
        else:
            await asyncio.sleep(0)
        fault = self.faults.pop(attempt, None)
        if fault is not None:
            raise fault
        call = Call(started, self.name, kind, ref, text)
        self.history.append(call)
        self.log.append(call)

    async def post(self, text: str) -> int:
        ref = len(self.messages)
        await self._call("post", ref, text)
        self.messages.append(text)
        return ref

    async def edit(self, ref: Any, text: str) -> None:
        assert 0 <= ref < len(self.messages)
        await self._call("edit", ref, text)
        self.messages[ref] = text

    @property
    def posts(self) -> int:
        return sum(c.kind == "post" for c in self.history)

    @property
    def edits(self) -> int:
        return sum(c.kind == "edit" for c in self.history)


def make(
    max_len: int = 2000, *, min_interval: float = 1.0, **sink_kw: Any
) -> tuple[FakeClock, RecordingSink, StreamRenderer]:
    clock = FakeClock()
    sink = RecordingSink(max_len, clock=clock, **sink_kw)
    return clock, sink, StreamRenderer(sink, min_interval=min_interval, clock=clock)


# -- clock ----------------------------------------------------------------------------------------


async def test_fake_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await clock.sleep(delay)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper(n, d)) for n, d in (("c", 3), ("a", 1), ("b", 2))]
    await clock.settle()
    assert clock.pending == 3
    await clock.advance(1.5)
    assert woke == [("a", 1.0)]
    assert clock.now() == 1.5
    await clock.advance(10)
    assert woke == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    await asyncio.gather(*tasks)


async def test_fake_clock_run_detects_deadlock() -> None:
    clock = FakeClock()
    with pytest.raises(RuntimeError, match="deadlock"):
        await clock.run(asyncio.Event().wait())


async def test_clocks_satisfy_protocol() -> None:
    assert isinstance(FakeClock(), Clock)
    assert isinstance(MonotonicClock(), Clock)
    await MonotonicClock().sleep(0)  # non-positive: just yields


# -- the BufferedRenderer machine -----------------------------------------------------------------


class Collector(BufferedRenderer):
    """The smallest BufferedRenderer: each step records the text so far, or raises ``fault``."""

    def __init__(self, clock: FakeClock, fault: Exception | None = None) -> None:
        super().__init__(min_interval=0, clock=clock)
        self.seen: list[str] = []
        self.steps = 0
        self.fault = fault

    async def _step(self) -> bool:
        self.steps += 1
        if self.fault is not None:
            raise self.fault
        if not self.seen or self.seen[-1] != self._body:
            self.seen.append(self._body)
        if self._finishing:
            return True
        await self._wait_for_text()
        return False

    def _result(self, *, gone: bool) -> RenderResult:
        return RenderResult((), tuple(self.seen[-1:]), 0, len(self.seen), gone)


async def test_buffered_renderer_wakes_its_step_with_all_new_text_and_ends_with_the_note() -> None:
    clock = FakeClock()
    r = Collector(clock)
    await r.feed("a")
    await r.feed("b")  # before the task ran: absorbed together
    await clock.settle()
    await r.feed("c")
    await clock.settle()
    assert r.seen == ["ab", "abc"]
    result = await clock.run(r.finish("⏹ stopped"))
    assert r.seen == ["ab", "abc", "abc\n⏹ stopped"]
    assert (result.texts, result.gone) == (("abc\n⏹ stopped",), False)
    with pytest.raises(RuntimeError):
        await r.feed("d")
    with pytest.raises(RuntimeError):
        await r.finish()


async def test_buffered_renderer_without_text_runs_no_step() -> None:
    clock = FakeClock()
    r = Collector(clock)
    result = await clock.run(r.finish())
    assert (r.steps, result.texts) == (0, ())


async def test_buffered_renderer_keeps_a_step_failure_for_feed_and_finish() -> None:
    clock = FakeClock()
    r = Collector(clock, fault=RuntimeError("boom"))
    await r.feed("a")
    await clock.settle()
    with pytest.raises(RuntimeError, match="boom"):
        await r.feed("b")
    with pytest.raises(RuntimeError, match="boom"):
        await r.finish()
    assert r.steps == 1  # the failure stopped the task for good


async def test_buffered_renderer_reports_sink_gone_as_gone() -> None:
    clock = FakeClock()
    r = Collector(clock, fault=SinkGone())
    await r.feed("a")
    await clock.settle()
    assert r.gone
    with pytest.raises(SinkGone):
        await r.feed("b")
    result = await r.finish("⏹ stopped")
    assert result.gone


async def test_buffered_renderer_aclose_stops_a_waiting_task() -> None:
    clock = FakeClock()
    r = Collector(clock)
    await r.feed("a")
    await clock.settle()  # the step waits for text
    await r.aclose()
    await r.aclose()  # twice is harmless
    assert r.seen == ["a"]
    with pytest.raises(RuntimeError):
        await r.feed("b")


# -- renderer basics --------------------------------------------------------------------------------


async def test_first_delta_is_posted_at_once_with_marker() -> None:
    clock, sink, r = make()
    assert isinstance(sink, MessageSink)
    await r.feed("Hel")
    await clock.settle()
    assert sink.history == [Call(0.0, "", "post", 0, "Hel" + MARKER)]
    assert r.messages == [0]
    assert r.posts == 1
    assert r.edits == 0


async def test_throttle_coalesces_and_final_edit_is_exact() -> None:
    clock, sink, r = make(min_interval=1.0)
    deltas = [f"w{i} " for i in range(100)]
    for d in deltas:
        await r.feed(d)
        await asyncio.sleep(0)  # let the flusher run between deltas
    await clock.settle()
    assert clock.now() == 0.0
    assert sink.posts == 1
    assert sink.edits <= 1
    assert sink.edits == 0  # the post went out at once; the next edit waits for min_interval
    assert sink.history[0].text.startswith("w0 ")
    await clock.advance(0.5)
    assert sink.edits == 0
    await clock.advance(0.5)
    assert sink.edits == 1
    full = "".join(deltas)
    assert sink.history[-1] == Call(1.0, "", "edit", 0, full + MARKER)  # everything so far
    result = await clock.run(r.finish())
    assert sink.messages == [full]
    assert sink.history[-1] == Call(2.0, "", "edit", 0, full)  # min_interval after the last one
    assert result.texts == (full,)
    assert result.refs == (0,)
    assert (result.posts, result.edits, result.gone) == (1, 2, False)


async def test_slow_edits_coalesce_to_latest_text() -> None:
    clock, sink, r = make(min_interval=1.0, latency=3.0)
    await r.feed("a")
    await clock.settle()  # post in flight until t=3
    for d in ("b", "c"):
        await clock.advance(1)
        await r.feed(d)
    await clock.advance(1)  # t=3: post done; next edit carries b and c at once
    await clock.advance(1)
    await r.feed("d")
    await clock.advance(1)
    await r.feed("e")
    await clock.advance(1)  # t=6: edit done; next edit carries d and e
    result = await clock.run(r.finish())
    assert [(c.time, c.text) for c in sink.history] == [
        (0.0, "a" + MARKER),
        (3.0, "abc" + MARKER),
        (6.0, "abcde" + MARKER),
        (9.0, "abcde"),
    ]
    assert result.texts == ("abcde",)


async def test_rate_limited_edit_waits_retry_after_then_sends_latest() -> None:
    clock, sink, r = make(min_interval=1.0, faults={1: SinkRateLimited(3)})
    await r.feed("a")
    await clock.settle()
    await r.feed("b")
    await clock.advance(1)  # t=1: the edit is answered with 429, retry_after=3
    assert sink.attempt_times == [0.0, 1.0]
    await clock.advance(1)
    await r.feed("c")  # arrives while the renderer waits
    await clock.advance(1.5)
    assert sink.attempt_times == [0.0, 1.0]  # still waiting at t=3.5
    await clock.advance(0.5)
    assert sink.history[-1] == Call(4.0, "", "edit", 0, "abc" + MARKER)
    result = await clock.run(r.finish())
    assert sink.messages == ["abc"]
    assert result.texts == ("abc",)
    assert r.rate_limited == 1


async def test_rate_limited_post_is_retried_with_latest_text() -> None:
    clock, sink, r = make(faults={0: SinkRateLimited(2)})
    await r.feed("a")
    await clock.settle()
    await r.feed("b")
    await clock.advance(2)
    assert sink.history == [Call(2.0, "", "post", 0, "ab" + MARKER)]
    result = await clock.run(r.finish())
    assert result.texts == ("ab",)
    assert result.posts == 1


async def test_transient_failures_are_retried_with_growing_waits_apart_from_rate_limits() -> None:
    clock, sink, r = make(
        min_interval=1.0,
        faults={1: SinkTransient(OSError("502")), 2: SinkTransient(OSError("503"))},
    )
    await r.feed("a")
    await clock.settle()
    await r.feed("b")
    await clock.advance(1)  # t=1: the edit fails; wait TRANSIENT_WAIT
    await r.feed("c")  # arrives while the renderer waits
    await clock.advance(TRANSIENT_WAIT)  # t=2: fails again; wait twice as long
    assert sink.attempt_times == [0.0, 1.0, 2.0]
    await clock.advance(2 * TRANSIENT_WAIT)  # t=4: goes through, with the latest text
    assert sink.history[-1] == Call(4.0, "", "edit", 0, "abc" + MARKER)
    assert (r.rate_limited, r.transient) == (0, 2)
    result = await clock.run(r.finish())
    assert result.texts == ("abc",)


async def test_a_success_resets_the_transient_retries() -> None:
    # Failures 1-3, a success, then failures 5-7: never more than TRANSIENT_RETRIES in a row.
    faults = {n: SinkTransient(OSError("500")) for n in (1, 2, 3, 5, 6, 7)}
    clock, sink, r = make(min_interval=1.0, faults=faults)
    await r.feed("a")
    await clock.settle()
    await r.feed("b")
    await clock.advance(10)
    await r.feed("c")
    result = await clock.run(r.finish())
    assert result.texts == ("abc",)
    assert len(sink.attempt_times) == 9  # post, 3 failures, edit, 3 failures, final edit
    assert r.transient == 6
    assert r.error is None


async def test_transient_failures_past_the_retries_stop_with_the_sinks_own_error() -> None:
    boom = OSError("the platform is down")
    faults = {n: SinkTransient(boom) for n in range(1, TRANSIENT_RETRIES + 2)}
    clock, sink, r = make(min_interval=1.0, faults=faults)
    await r.feed("a")
    await clock.settle()
    await r.feed("b")
    with pytest.raises(OSError, match="the platform is down"):
        await clock.run(r.finish())
    assert r.error is boom
    assert not r.gone
    assert r.texts == ["a" + MARKER]  # what was shown stays
    assert (r.rate_limited, r.transient) == (0, TRANSIENT_RETRIES + 1)
    waits = [b - a for a, b in itertools.pairwise(sink.attempt_times[1:])]
    assert waits == [TRANSIENT_WAIT * n for n in range(1, TRANSIENT_RETRIES + 1)]


async def test_finish_appends_note_on_its_own_line() -> None:
    clock, sink, r = make()
    await r.feed("hello")
    result = await clock.run(r.finish(note="⚠️ provider unavailable"))
    assert sink.messages == ["hello\n⚠️ provider unavailable"]
    assert result.texts == ("hello\n⚠️ provider unavailable",)


async def test_note_alone_when_nothing_was_generated() -> None:
    clock, sink, r = make()
    result = await clock.run(r.finish(note="⏹ stopped"))
    assert sink.history == [Call(0.0, "", "post", 0, "⏹ stopped")]
    assert result.texts == ("⏹ stopped",)


async def test_finish_without_text_posts_nothing() -> None:
    clock, sink, r = make()
    result = await clock.run(r.finish())
    assert sink.history == []
    assert (result.refs, result.texts) == ((), ())


def test_with_note_closes_an_open_code_fence_first() -> None:
    assert with_note("```py\nx = 1", "⏹ stopped") == "```py\nx = 1\n```\n⏹ stopped"
    assert with_note("```py\nx = 1\n", "⏹ stopped") == "```py\nx = 1\n```\n⏹ stopped"
    assert with_note("done\n", "note") == "done\nnote"
    assert with_note("done", None) == "done"


async def test_feed_after_finish_is_refused() -> None:
    clock, _sink, r = make()
    await r.feed("x")
    await clock.run(r.finish())
    with pytest.raises(RuntimeError):
        await r.feed("y")
    with pytest.raises(RuntimeError):
        await r.finish()


async def test_sink_gone_stops_renderer_and_is_reported() -> None:
    clock, sink, r = make(faults={1: SinkGone("message deleted")})
    await r.feed("a")
    await clock.settle()
    await r.feed("b")
    await clock.advance(1)  # the edit finds the message gone
    assert r.gone
    assert isinstance(r.error, SinkGone)
    with pytest.raises(SinkGone):
        await r.feed("c")
    result = await clock.run(r.finish(note="⏹ stopped"))
    assert result.gone
    assert result.texts == ("a" + MARKER,)  # what was last shown
    assert sink.attempt_times == [0.0, 1.0]  # nothing was tried after SinkGone
    assert clock.pending == 0


async def test_sink_gone_on_first_post() -> None:
    clock, sink, r = make(faults={0: SinkGone()})
    await r.feed("a")
    await clock.settle()
    with pytest.raises(SinkGone):
        await r.feed("b")
    result = await r.finish()
    assert result.gone
    assert result.refs == ()
    assert sink.history == []


async def test_other_sink_errors_are_raised_from_feed_and_finish() -> None:
    clock, _sink, r = make(faults={0: RuntimeError("boom")})
    await r.feed("a")
    await clock.settle()
    with pytest.raises(RuntimeError, match="boom"):
        await r.feed("b")
    with pytest.raises(RuntimeError, match="boom"):
        await r.finish()


async def test_aclose_stops_without_final_edit() -> None:
    clock, sink, r = make()
    await r.feed("a")
    await clock.settle()
    await r.feed("b")
    await clock.settle()
    assert clock.pending == 1  # waiting for min_interval
    await r.aclose()
    await clock.advance(5)
    assert sink.messages == ["a" + MARKER]
    with pytest.raises(RuntimeError):
        await r.feed("c")


async def test_long_reply_continues_in_new_messages_and_freezes_full_ones() -> None:
    clock, sink, r = make(40, min_interval=1.0)
    words = [f"word{i:02d} " for i in range(30)]
    for w in words:
        await r.feed(w)
        await clock.advance(0.5)
    result = await clock.run(r.finish())
    full = "".join(words)
    expected = split_message(full, 40)
    assert len(expected) >= 6
    assert sink.messages == expected
    assert result.texts == tuple(expected)
    assert result.refs == tuple(range(len(expected)))
    for call in sink.history:
        assert len(call.text) <= 40
    # Once a message shows its final text it is never touched again.
    for k, final in enumerate(expected):
        calls = [c for c in sink.history if c.ref == k]
        assert calls[-1].text == final
        assert all(c.text != final for c in calls[:-1])
        if k < len(expected) - 1:  # frozen before the stream ended
            assert calls[-1].time < sink.history[-1].time


async def test_code_fence_split_while_streaming() -> None:
    clock, sink, r = make(60, min_interval=1.0)
    code = "".join(f"value_{i} = {i}\n" for i in range(12))
    text = "Here:\n\n```python\n" + code + "```\nDone."
    for i in range(0, len(text), 7):
        await r.feed(text[i : i + 7])
        await clock.advance(0.3)
    await clock.run(r.finish())
    assert sink.messages == split_message(text, 60)
    assert len(sink.messages) >= 3
    assert all(m.startswith("```python\n") for m in sink.messages[1:-1])
    assert all(m.endswith("\n```") for m in sink.messages[:-1])


# -- renderers sharing an EditBudget ---------------------------------------------------------------


async def test_shared_rate_limit_defers_the_whole_budget() -> None:
    clock = FakeClock()
    budget = EditBudget(10, 1.0, clock=clock)
    sink_a = RecordingSink(clock=clock, name="A", faults={0: SinkRateLimited(5, shared=True)})
    sink_b = RecordingSink(clock=clock, name="B")
    ra = StreamRenderer(sink_a, min_interval=1.0, budget=budget)
    rb = StreamRenderer(sink_b, min_interval=1.0, budget=budget)
    await ra.feed("a")
    await clock.settle()  # A's post gets 429 for the whole scope
    await rb.feed("b")
    await clock.advance(4.9)
    assert sink_b.history == []
    await clock.advance(0.2)
    assert sink_b.history[0].time == 5.0
    await clock.run(asyncio.gather(ra.finish(), rb.finish()))
    assert (sink_a.messages, sink_b.messages) == (["a"], ["b"])


async def test_budget_finals_before_pending_interims_across_renderers() -> None:
    clock = FakeClock()
    budget = EditBudget(1, 1.0, clock=clock)
    log: list[Call] = []
    rs = {
        n: StreamRenderer(
            RecordingSink(clock=clock, name=n, log=log), min_interval=0.0, budget=budget
        )
        for n in "ABC"
    }
    await rs["A"].feed("a")
    await clock.settle()  # A posts at once
    await rs["B"].feed("b")
    await rs["C"].feed("c")
    await clock.settle()
    await rs["A"].feed("a")
    await clock.settle()  # queue: B, C, A (A just sent, so it is behind)
    await clock.advance(1)  # B posts
    await rs["B"].feed("b")
    await clock.settle()  # queue: C, A, B
    await clock.advance(1)  # C posts; A and B wait with interim edits
    finish_c = asyncio.create_task(rs["C"].finish())
    await clock.settle()
    await clock.advance(1)
    assert finish_c.done()
    await clock.advance(1)
    await clock.advance(1)
    assert [(c.time, c.sink, c.kind, c.text) for c in log] == [
        (0.0, "A", "post", "a" + MARKER),
        (1.0, "B", "post", "b" + MARKER),
        (2.0, "C", "post", "c" + MARKER),
        (3.0, "C", "edit", "c"),  # final edit jumps ahead of A's and B's pending interims
        (4.0, "A", "edit", "aa" + MARKER),
        (5.0, "B", "edit", "bb" + MARKER),
    ]
    assert_rate([c.time for c in log], 1, 1.0)
    await clock.run(asyncio.gather(rs["A"].finish(), rs["B"].finish()))


async def test_finish_promotes_a_queued_interim_edit_to_final() -> None:
    clock = FakeClock()
    budget = EditBudget(1, 1.0, clock=clock)
    log: list[Call] = []
    ra = StreamRenderer(
        RecordingSink(clock=clock, name="A", log=log), min_interval=0, budget=budget
    )
    rb = StreamRenderer(
        RecordingSink(clock=clock, name="B", log=log), min_interval=0, budget=budget
    )
    await ra.feed("a")
    await clock.settle()  # A posts at t=0
    await rb.feed("b")
    await clock.settle()  # B's first post queues; it goes at t=1
    await clock.advance(1)
    await rb.feed("b")
    await clock.settle()  # B queues an interim edit
    await ra.feed("a")
    await clock.settle()  # A queues an interim edit behind B's
    finish_a = asyncio.create_task(ra.finish())
    await clock.advance(1)
    assert finish_a.done()
    await clock.run(rb.finish())
    assert [(c.time, c.sink, c.text) for c in log] == [
        (0.0, "A", "a" + MARKER),
        (1.0, "B", "b" + MARKER),
        (2.0, "A", "aa"),  # promoted: now a final edit, served before B's earlier interim
        (3.0, "B", "bb"),  # B finished while queued: its edit is the final one
    ]


async def test_a_first_post_goes_before_a_final_until_the_final_waited_its_slack() -> None:
    clock = FakeClock()
    budget = EditBudget(1, 1.0, clock=clock, final_slack=1.5)
    log: list[Call] = []
    ra, rb, rc, rd = (
        StreamRenderer(RecordingSink(clock=clock, name=n, log=log), min_interval=0, budget=budget)
        for n in "ABCD"
    )
    await ra.feed("a")
    await clock.settle()  # A posts at t=0
    finish_a = asyncio.create_task(ra.finish())  # A's final is due by t=1.5
    await clock.settle()
    await rb.feed("b")  # B's first post is due now
    await clock.settle()
    await clock.advance(1)  # t=1: B's post goes first, nobody sees B yet
    await rc.feed("c")  # C's first post is due at t=1, before A's final (t=1.5)
    await clock.settle()
    await clock.advance(1)  # t=2: C's post
    await rd.feed("d")  # D's first post is due at t=2: after A's final
    await clock.settle()
    await clock.run(finish_a)
    await clock.run(asyncio.gather(rb.finish(), rc.finish(), rd.finish()))
    assert [(c.time, c.sink, c.text) for c in log] == [
        (0.0, "A", "a" + MARKER),
        (1.0, "B", "b" + MARKER),
        (2.0, "C", "c" + MARKER),
        (3.0, "A", "a"),  # waited its slack: before D's later first post
        (4.0, "D", "d"),  # D finished while its post queued: one request carries it all
        (5.0, "B", "b"),
        (6.0, "C", "c"),
    ]


async def test_budget_round_robin_and_finishing_promotes_pending_interims() -> None:
    clock = FakeClock()
    budget = EditBudget(1, 1.0, clock=clock)
    log: list[Call] = []
    names = "ABC"
    rs = [
        StreamRenderer(RecordingSink(clock=clock, name=n, log=log), min_interval=0.0, budget=budget)
        for n in names
    ]

    async def feeder() -> None:
        for _ in range(48):  # 12 virtual seconds, every stream always has new text
            for r in rs:
                await r.feed("x")
            await clock.sleep(0.25)

    await clock.run(feeder())
    interim = [c.sink for c in log]
    assert len(interim) >= 12
    assert interim[:12] == list(names) * 4  # strict round-robin
    assert budget.waiting >= 2  # streams wait with interim edits (one may just have sent)
    finals = asyncio.gather(*(r.finish() for r in rs))
    results = await clock.run(finals)
    tail = log[len(interim) :]
    assert [c.kind for c in tail] == ["edit"] * 3
    assert sorted(c.sink for c in tail) == list(names)
    assert all(not c.text.endswith(MARKER) for c in tail)  # finals, served first
    assert [res.texts for res in results] == [("x" * 48,)] * 3
    assert_rate([c.time for c in log], 1, 1.0)


# -- property: any stream renders to exactly split_message of the full text ----------------------

_ALPHABET = [*"ab yz\n\t`.é漢🙂", "\u0301", "\u200d"]
deltas_st = st.lists(
    st.tuples(
        st.one_of(
            st.text(alphabet=st.sampled_from(_ALPHABET), max_size=12),
            st.sampled_from(
                ["\n\n", "```python\n", "```\n", "\n```\n", "```js title\n", "x" * 70, "word " * 9]
            ),
        ),
        st.sampled_from([0.0, 0.0, 0.0, 0.4, 1.0, 3.0]),
    ),
    max_size=30,
)


def _repairable(text: str, max_len: int) -> bool:
    # Same exclusion as in test_split: fences whose repair cannot fit by construction.
    if "`````" in text:
        return False
    return all(
        len(line) < max_len // 2
        for line in text.split("\n")
        if line.lstrip(" \t").startswith("```")
    )


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    deltas=deltas_st,
    max_len=st.integers(20, 300),
    note=st.sampled_from([None, None, "⏹ stopped"]),
    faults=st.dictionaries(st.integers(0, 12), st.sampled_from([1.0, 2.5]), max_size=3),
    budget_burst=st.sampled_from([0, 1, 2]),  # 0: no budget
)
def test_any_stream_renders_exactly(
    deltas: list[tuple[str, float]],
    max_len: int,
    note: str | None,
    faults: dict[int, float],
    budget_burst: int,
) -> None:
    text = "".join(d for d, _ in deltas)
    full = with_note(text, note)
    assume(_repairable(full, max_len))
    min_interval = 1.0

    async def scenario() -> tuple[RecordingSink, Any]:
        clock = FakeClock()
        sink = RecordingSink(
            max_len, clock=clock, faults={k: SinkRateLimited(v) for k, v in faults.items()}
        )
        budget = EditBudget(2, 1.0, burst=budget_burst, clock=clock) if budget_burst else None
        r = StreamRenderer(sink, min_interval=min_interval, budget=budget, clock=clock)
        for delta, pause in deltas:
            await r.feed(delta)
            if pause:
                await clock.advance(pause)
            else:
                await asyncio.sleep(0)
        result = await clock.run(r.finish(note))
        if budget is not None:
            assert_rate(sink.attempt_times, 2, 1.0)
        return sink, result

    sink, result = asyncio.run(scenario())

    segs = split_segments(full, max_len)
    expected = [s.text for s in segs]
    assert sink.messages == expected
    assert list(result.texts) == expected
    assert list(result.refs) == list(range(len(expected)))
    assert all(len(c.text) <= max_len for c in sink.history)
    assert all(MARKER not in m for m in sink.messages)
    # Modulo fence repair the messages give back the full text: each message is the segment's
    # reopener + a span of the text + the segment's closer, and the spans concatenate to the text.
    spans = []
    for seg, msg in zip(segs, sink.messages, strict=True):
        assert msg.startswith(seg.reopen)
        assert msg.endswith(seg.close)
        spans.append(msg[len(seg.reopen) : len(msg) - len(seg.close)])
    assert "".join(spans) == full
    # Interim texts: marker-terminated prefixes of what the message will hold, never going back,
    # each message updated at most once per min_interval and never after its final text.
    for k, seg in enumerate(segs):
        calls = [c for c in sink.history if c.ref == k]
        assert calls[-1].text == seg.text
        source = seg.reopen + full[seg.start :]
        previous = ""
        for c in calls[:-1]:
            assert c.text.endswith(MARKER)
            shown = c.text[: -len(MARKER)]
            assert source.startswith(shown)
            assert shown.startswith(previous)
            previous = shown
        for a, b in itertools.pairwise(calls):
            assert b.time - a.time >= min_interval - 1e-9


# -- the platform's edit window: finals as soon as it has room -------------------------------------


def make_windowed(
    *, min_interval: float = 1.2, limit: int = 5, seconds: float = 5.0
) -> tuple[FakeClock, RecordingSink, StreamRenderer]:
    clock = FakeClock()
    sink = RecordingSink(clock=clock)
    renderer = StreamRenderer(
        sink, min_interval=min_interval, clock=clock, window_limit=limit, window_seconds=seconds
    )
    return clock, sink, renderer


async def test_final_goes_at_once_when_the_window_has_room() -> None:
    clock, sink, r = make_windowed()
    await r.feed("a")
    await clock.settle()  # post at t=0
    await clock.advance(1.2)
    await r.feed("b")
    await clock.settle()  # interim edit at t=1.2
    await clock.advance(0.3)
    await r.feed("c")
    await clock.advance(0.1)  # t=1.6: an interim edit of "abc" waits until 2.4
    finish = asyncio.create_task(r.finish())
    await clock.settle()
    assert finish.done()  # finish() cut that wait short; the final did not wait min_interval
    assert [(c.time, c.text) for c in sink.history] == [
        (0.0, "a" + MARKER),
        (1.2, "ab" + MARKER),
        (1.6, "abc"),
    ]
    await finish


async def test_final_0_1_s_after_an_interim_edit_goes_at_once() -> None:
    clock, sink, r = make_windowed()
    await r.feed("a")
    await clock.settle()
    await r.feed("b")
    await clock.advance(1.2)  # interim edit at t=1.2
    await clock.advance(0.1)
    await r.feed("c")
    await clock.run(r.finish())
    assert [(c.time, c.text) for c in sink.history][-2:] == [(1.2, "ab" + MARKER), (1.3, "abc")]


async def test_final_waits_only_until_the_window_has_room() -> None:
    # At the limit: 5 edits in the last 5 s -> the 6th waits exactly until the oldest leaves.
    clock, sink, r = make_windowed(min_interval=0.5, limit=5, seconds=5.0)
    await r.feed("x")
    await clock.settle()  # post at t=0 (posts are another bucket: not counted)
    for _ in range(5):
        await clock.advance(0.5)
        await r.feed("x")
        await clock.settle()
    edits = [c.time for c in sink.history if c.kind == "edit"]
    assert edits == [0.5, 1.0, 1.5, 2.0, 2.5]  # limit reached: 5 edits in 5 s
    await clock.advance(0.6)  # t=3.1; nothing pending
    await r.feed("y")
    finish = asyncio.create_task(r.finish())
    await clock.advance(2.3)  # t=5.4: the window still holds 5 edits
    assert not finish.done()
    await clock.advance(0.1)  # t=5.5: the edit of 0.5 left the window
    assert finish.done()
    assert sink.history[-1].time == 5.5
    assert sink.history[-1].text == "x" * 6 + "y"
    await finish


async def test_window_limit_minus_one_edits_leave_room_for_the_final() -> None:
    clock, sink, r = make_windowed(min_interval=0.5, limit=5, seconds=5.0)
    await r.feed("x")
    await clock.settle()
    for _ in range(4):
        await clock.advance(0.5)
        await r.feed("x")
        await clock.settle()
    await r.feed("y")
    await clock.run(r.finish())
    assert [c.time for c in sink.history if c.kind == "edit"] == [0.5, 1.0, 1.5, 2.0, 2.0]


async def test_interim_edits_stay_min_interval_apart_with_a_window() -> None:
    clock, sink, r = make_windowed(min_interval=1.2)
    await r.feed("a")
    await clock.settle()
    for _ in range(30):
        await clock.advance(0.1)
        await r.feed("a")
    await clock.run(r.finish())
    times = [c.time for c in sink.history]
    interims = times[:-1]
    assert all(round(b - a, 6) >= 1.2 for a, b in itertools.pairwise(interims))
    assert sink.messages == ["a" * 31]


async def test_interim_edits_respect_the_window_too() -> None:
    # A short min_interval: the window, not the interval, caps the interim edits.
    clock, sink, r = make_windowed(min_interval=0.1, limit=2, seconds=1.0)
    await r.feed("a")
    await clock.settle()
    for _ in range(30):
        await clock.advance(0.1)
        await r.feed("a")
    await clock.run(r.finish())
    edits = [c.time for c in sink.history if c.kind == "edit"]
    for i in range(len(edits) - 2):
        assert round(edits[i + 2] - edits[i], 6) >= 1.0  # never 3 edits within 1 s
    assert sink.messages == ["a" * 31]


async def test_without_a_window_the_final_waits_min_interval() -> None:
    clock, sink, r = make(min_interval=1.0)
    await r.feed("a")
    await clock.settle()
    await r.feed("b")
    await clock.run(r.finish())
    assert [c.time for c in sink.history] == [0.0, 1.0]


def test_a_negative_window_is_refused() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock=clock)
    with pytest.raises(ValueError, match="window"):
        StreamRenderer(sink, min_interval=1.0, clock=clock, window_limit=-1, window_seconds=1.0)
    with pytest.raises(ValueError, match="window"):
        StreamRenderer(sink, min_interval=1.0, clock=clock, window_limit=1, window_seconds=-1.0)


async def test_posts_and_edits_take_their_own_budgets_and_owed_finals_are_reserved() -> None:
    clock = FakeClock()
    posts = EditBudget(10, 1.0, burst=10, clock=clock)
    updates = EditBudget(3, 60.0, burst=3, clock=clock, reserve_finals=True)
    budgets = SendBudgets(posts=(posts,), edits=(updates,))
    log: list[Call] = []
    ra, rb = (
        StreamRenderer(RecordingSink(clock=clock, name=n, log=log), min_interval=0, budget=budgets)
        for n in "AB"
    )
    assert updates.owed == 2  # each reply's final is reserved from its start
    await ra.feed("a")
    await rb.feed("b")
    await clock.settle()  # both post: the post budget, not the update one
    assert (posts.granted, updates.granted, updates.owed) == (2, 0, 2)
    await ra.feed("a")
    await clock.settle()  # A's interim edit: 1 used + 2 owed = the window's 3
    await rb.feed("b")
    await clock.settle()  # B's interim would eat a final's slot: it waits
    assert [(c.sink, c.text) for c in log] == [
        ("A", "a" + MARKER),
        ("B", "b" + MARKER),
        ("A", "aa" + MARKER),
    ]
    await ra.finish()  # A's final goes at once, on its reserved slot
    await rb.finish()  # B's waiting edit becomes its final and goes at once too
    assert [(c.time, c.sink, c.text) for c in log[3:]] == [(0.0, "A", "aa"), (0.0, "B", "bb")]
    assert (updates.granted, updates.owed) == (3, 0)


async def test_a_renderer_that_stops_gives_back_the_finals_it_owed() -> None:
    clock = FakeClock()
    updates = EditBudget(5, 60.0, burst=5, clock=clock, reserve_finals=True)
    budgets = SendBudgets(posts=(), edits=(updates,))
    gone = StreamRenderer(
        RecordingSink(clock=clock, faults={1: SinkGone("deleted")}), min_interval=0, budget=budgets
    )
    await gone.feed("a")
    await clock.settle()
    assert updates.owed == 1
    await gone.feed("b")  # the edit finds the message deleted
    await clock.settle()
    assert gone.gone
    assert updates.owed == 0
    never = StreamRenderer(RecordingSink(clock=clock), min_interval=0, budget=budgets)
    assert updates.owed == 1
    await never.aclose()  # closed before any text: nothing will be sent
    assert updates.owed == 0
    unsent = StreamRenderer(RecordingSink(clock=clock), min_interval=0, budget=budgets)
    await unsent.finish()  # no text, no note: no message
    assert updates.owed == 0
    closed = StreamRenderer(RecordingSink(clock=clock), min_interval=0, budget=budgets)
    await closed.feed("a")
    await clock.settle()
    assert updates.owed == 1
    await closed.aclose()  # shutdown: no final will come
    assert updates.owed == 0


# -- buttons (core.controls) ride on the text's own requests --------------------------------------


class ControlsRecordingSink(RecordingSink):
    """A RecordingSink whose messages carry buttons: each call records the action ids sent."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.buttons: list[tuple[str, ...]] = []  # per message, as last sent
        self.calls: list[tuple[str, int, str, tuple[str, ...]]] = []

    async def post(self, text: str, *, controls: Sequence[Control] = ()) -> int:
        ref = await super().post(text)
        self.buttons.append(tuple(c.action_id for c in controls))
        self.calls.append(("post", ref, text, self.buttons[ref]))
        return ref

    async def edit(self, ref: Any, text: str, *, controls: Sequence[Control] = ()) -> None:
        await super().edit(ref, text)
        self.buttons[ref] = tuple(c.action_id for c in controls)
        self.calls.append(("edit", ref, text, self.buttons[ref]))


STOP = Control(Action.STOP, "llmc:stop:0123456789ab:00000000", "Stop", "⏹", "danger")
REGEN = Control(
    Action.REGENERATE, "llmc:regen:0123456789ab:00000000", "Regenerate", "🔄", "secondary"
)
UP = Control(Action.UP, "llmc:up:0123456789ab:00000000", "", "👍", "secondary")


async def test_stop_rides_on_the_posts_and_the_final_edit_swaps_it_for_the_final_buttons() -> None:
    clock = FakeClock()
    sink = ControlsRecordingSink(clock=clock)
    assert isinstance(sink, ControlsSink)
    r = StreamRenderer(sink, min_interval=1.0, clock=clock, controls=(STOP,))
    await r.feed("Hel")
    await clock.settle()
    await r.feed("lo")
    result = await clock.run(r.finish(controls=(REGEN, UP)))
    assert sink.calls == [
        ("post", 0, "Hel" + MARKER, (STOP.action_id,)),
        ("edit", 0, "Hello", (REGEN.action_id, UP.action_id)),
    ]
    assert (result.posts, result.edits) == (1, 1)  # no request for the buttons alone


async def test_a_final_edit_goes_for_the_buttons_even_when_the_text_is_unchanged() -> None:
    clock = FakeClock()
    sink = ControlsRecordingSink(clock=clock)
    r = StreamRenderer(sink, min_interval=1.0, clock=clock, controls=(STOP,), marker="")
    await r.feed("Done")
    await clock.settle()
    await clock.run(r.finish(controls=(REGEN,)))
    assert sink.calls[-1] == ("edit", 0, "Done", (REGEN.action_id,))
    assert sink.edits == 1


async def test_a_message_frozen_full_loses_its_buttons_in_its_final_edit() -> None:
    clock = FakeClock()
    sink = ControlsRecordingSink(20, clock=clock)
    r = StreamRenderer(sink, min_interval=1.0, clock=clock, controls=(STOP,))
    await r.feed("word " * 3)
    await clock.settle()
    await r.feed("word " * 6)
    result = await clock.run(r.finish(controls=(REGEN,)))
    assert len(result.refs) >= 2
    assert sink.buttons[:-1] == [()] * (len(result.refs) - 1)
    assert sink.buttons[-1] == (REGEN.action_id,)
    assert sink.posts + sink.edits == result.posts + result.edits
    for _, _ref, text, _buttons in sink.calls:
        assert text  # no call sent buttons without text


async def test_without_controls_the_sink_is_called_as_before() -> None:
    clock, sink, r = make()  # RecordingSink.post/edit take no controls keyword
    await r.feed("x")
    result = await clock.run(r.finish(controls=(REGEN,)))
    assert sink.messages == ["x"]
    assert result.posts == 1


async def test_reuse_renders_into_an_existing_message_with_edits_only() -> None:
    clock = FakeClock()
    sink = ControlsRecordingSink(clock=clock)
    old = await sink.post("old answer", controls=(REGEN,))
    sink.calls.clear()
    r = StreamRenderer(sink, min_interval=1.0, clock=clock, controls=(STOP,), reuse=old)
    await r.feed("new")
    await clock.settle()
    result = await clock.run(r.finish(controls=(UP,)))
    assert sink.calls == [
        ("edit", 0, "new" + MARKER, (STOP.action_id,)),
        ("edit", 0, "new", (UP.action_id,)),
    ]
    assert (result.refs, result.posts, result.edits) == ((old,), 0, 2)


# -- tool progress ------------------------------------------------------------------------------


async def test_progress_lines_show_under_the_text_at_the_normal_pace_never_in_the_final() -> None:
    clock, sink, renderer = make(min_interval=1.0)
    await renderer.feed("Let me look.")
    await clock.advance(0)
    assert sink.messages == ["Let me look. ▌"]
    renderer.show_progress("🔧 files.read(path='a') …")
    await clock.advance(0.5)
    assert sink.edits == 0  # the progress waits for the next edit's turn: no request of its own
    await clock.advance(0.5)
    assert sink.messages == ["Let me look.\n\n🔧 files.read(path='a') … ▌"]
    renderer.show_progress("🔧 files.read(path='a') ✓")
    await renderer.feed(" Found it.")
    await clock.advance(1.0)
    assert sink.messages == ["Let me look. Found it.\n\n🔧 files.read(path='a') ✓ ▌"]
    await clock.run(renderer.finish("🔧 files.read"))
    assert sink.messages == ["Let me look. Found it.\n🔧 files.read"]
    assert (sink.posts, sink.edits) == (1, 3)


async def test_progress_before_any_text_is_the_message_and_is_cut_to_its_limits() -> None:
    clock, sink, renderer = make(max_len=400, min_interval=0)
    lines = [f"🔧 s.t{i}() …" for i in range(PROGRESS_LINES + 1)]
    lines[-1] = "🔧 s." + "x" * PROGRESS_LINE_CHARS + "() …"
    renderer.show_progress("\n".join(lines))
    await clock.advance(0)
    [shown] = sink.messages
    kept = shown.removesuffix(" ▌").split("\n")
    assert kept[:-1] == lines[1:-1]  # the latest PROGRESS_LINES lines
    assert len(kept) == PROGRESS_LINES
    assert kept[-1] == lines[-1][: PROGRESS_LINE_CHARS - 1] + "…"
    # Longer than a message: the text gives way, the progress stays whole (interim only).
    await renderer.feed("y" * 300)
    await clock.advance(0)
    assert sink.messages[0].startswith("yyy")
    assert sink.messages[0].endswith("\n\n" + "\n".join(kept) + " ▌")
    assert len(sink.messages[0]) == 400
    await clock.run(renderer.finish())
    assert sink.messages == ["y" * 300]


# -- a regeneration renders into all of the replaced reply's messages ----------------------------


class DeletingRecordingSink(ControlsRecordingSink):
    """A ControlsRecordingSink that can delete; a deleted message takes no further call.

    ``delete_faults``: the n-th delete (0-based) raises that exception instead."""

    def __init__(self, *args: Any, delete_faults: dict[int, Exception] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.deleted: set[int] = set()
        self.delete_attempts = 0
        self.delete_faults = dict(delete_faults or {})

    async def edit(self, ref: Any, text: str, *, controls: Sequence[Control] = ()) -> None:
        assert ref not in self.deleted
        await super().edit(ref, text, controls=controls)

    async def delete(self, ref: Any) -> None:
        attempt = self.delete_attempts
        self.delete_attempts += 1
        self.attempt_times.append(self.clock.now())
        await asyncio.sleep(0)
        fault = self.delete_faults.pop(attempt, None)
        if fault is not None:
            raise fault
        assert ref not in self.deleted
        self.deleted.add(ref)
        self.calls.append(("delete", ref, "", ()))

    @property
    def visible(self) -> list[str]:
        return [m for k, m in enumerate(self.messages) if k not in self.deleted]


async def old_reply(sink: ControlsRecordingSink, *parts: str) -> list[int]:
    """An earlier reply's messages, buttons on the last; the sink's calls then cleared."""
    refs = [await sink.post(p) for p in parts[:-1]]
    refs.append(await sink.post(parts[-1], controls=(REGEN, UP)))
    sink.calls.clear()
    return refs


async def test_a_shorter_regeneration_fills_the_first_messages_and_deletes_the_rest() -> None:
    clock = FakeClock()
    sink = DeletingRecordingSink(20, clock=clock)
    assert isinstance(sink, DeletingSink)
    old = await old_reply(sink, "old one", "old two", "old three")
    r = StreamRenderer(sink, min_interval=1.0, clock=clock, controls=(STOP,), replace=old)
    await r.feed("new")
    await clock.settle()
    # While it streams, the later parts of the old answer show a placeholder, without buttons.
    assert sink.messages == ["new" + MARKER, PENDING_PART, PENDING_PART]
    assert sink.buttons == [(STOP.action_id,), (), ()]
    result = await clock.run(r.finish(controls=(REGEN, UP)))
    assert sink.visible == ["new"]
    assert sink.buttons[0] == (REGEN.action_id, UP.action_id)
    assert sink.deleted == {old[1], old[2]}
    # Deleted last, once the new answer is complete above them.
    assert [c[:2] for c in sink.calls[-3:]] == [("edit", 0), ("delete", 1), ("delete", 2)]
    assert (result.refs, result.texts) == ((old[0],), ("new",))
    assert (result.posts, result.cleared) == (0, 2)


async def test_without_delete_the_surplus_messages_are_emptied_to_a_note() -> None:
    clock = FakeClock()
    sink = ControlsRecordingSink(40, clock=clock)
    assert not isinstance(sink, DeletingSink)
    old = await old_reply(sink, "old one", "old two")
    r = StreamRenderer(sink, min_interval=1.0, clock=clock, controls=(STOP,), replace=old)
    await r.feed("new")
    result = await clock.run(r.finish(controls=(REGEN,)))
    assert sink.messages == ["new", REPLACED_PART]
    assert sink.buttons == [(REGEN.action_id,), ()]
    assert (result.refs, result.cleared) == ((old[0],), 1)


async def test_a_longer_regeneration_edits_the_old_messages_in_order_then_posts() -> None:
    clock = FakeClock()
    sink = DeletingRecordingSink(20, clock=clock)
    old = await old_reply(sink, "old one", "old two")
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    r = StreamRenderer(sink, min_interval=1.0, clock=clock, controls=(STOP,), replace=old)
    for word in text.split(" "):
        await r.feed(word + " ")
        await clock.advance(0.3)
    result = await clock.run(r.finish(controls=(REGEN,)))
    expected = split_message(text + " ", 20)
    assert len(expected) > 2
    assert sink.messages == expected
    assert not sink.deleted
    assert result.refs[:2] == tuple(old)
    assert result.posts == len(expected) - 2
    assert sink.buttons == [()] * (len(expected) - 1) + [(REGEN.action_id,)]


async def test_a_regeneration_that_shows_nothing_touches_none_of_the_old_messages() -> None:
    clock = FakeClock()
    sink = DeletingRecordingSink(20, clock=clock)
    old = await old_reply(sink, "old one", "old two")
    r = StreamRenderer(sink, min_interval=1.0, clock=clock, controls=(STOP,), replace=old)
    result = await clock.run(r.finish(None))
    assert sink.calls == []
    assert sink.messages == ["old one", "old two"]
    assert result.refs == tuple(old)


async def test_a_rate_limited_delete_is_retried_and_a_gone_one_counts_as_deleted() -> None:
    clock = FakeClock()
    sink = DeletingRecordingSink(
        20,
        clock=clock,
        delete_faults={0: SinkRateLimited(2.0), 2: SinkGone("deleted by someone")},
    )
    old = await old_reply(sink, "old one", "old two", "old three")
    r = StreamRenderer(sink, min_interval=1.0, clock=clock, controls=(STOP,), replace=old)
    await r.feed("new")
    result = await clock.run(r.finish(controls=(REGEN,)))
    assert sink.delete_attempts == 3
    assert r.rate_limited == 1
    assert (result.refs, result.cleared) == ((old[0],), 2)
    assert sink.deleted == {old[1]}  # the other one was gone already


async def test_surplus_deletes_take_the_shared_edit_budget() -> None:
    clock = FakeClock()
    sink = DeletingRecordingSink(20, clock=clock)
    old = await old_reply(sink, "old one", "old two", "old three", "old four")
    budget = EditBudget(1, 1.0, burst=1, clock=clock)
    r = StreamRenderer(
        sink, min_interval=1.0, clock=clock, controls=(STOP,), replace=old, budget=budget
    )
    await r.feed("new")
    await clock.run(r.finish(controls=(REGEN,)))
    assert sink.visible == ["new"]
    assert len(sink.deleted) == 3
    requests = sink.attempt_times[4:]  # after the old reply's posts
    assert len(requests) >= 4  # the final edit and three deletes, at least
    assert_rate(requests, 1, 1.0)  # edits and deletes together, 1/s


def test_reuse_must_be_among_the_replaced_messages() -> None:
    sink = ControlsRecordingSink(clock=FakeClock())
    with pytest.raises(ValueError, match="reuse must be one of"):
        StreamRenderer(sink, min_interval=1.0, controls=(STOP,), reuse=5, replace=(1, 2))


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    deltas=deltas_st,
    max_len=st.integers(20, 120),
    old_parts=st.integers(1, 4),
    note=st.sampled_from([None, "⏹ stopped"]),
    can_delete=st.booleans(),
    budget_burst=st.sampled_from([0, 1]),  # 0: no budget
)
def test_any_regeneration_leaves_exactly_the_new_text_visible(
    deltas: list[tuple[str, float]],
    max_len: int,
    old_parts: int,
    note: str | None,
    can_delete: bool,
    budget_burst: int,
) -> None:
    text = "".join(d for d, _ in deltas)
    full = with_note(text, note)
    assume(full and _repairable(full, max_len))

    async def scenario() -> tuple[ControlsRecordingSink, RenderResult, list[int]]:
        clock = FakeClock()
        kind = DeletingRecordingSink if can_delete else ControlsRecordingSink
        sink = kind(max_len, clock=clock)
        old = await old_reply(sink, *(f"OLD{k}" for k in range(old_parts)))
        budget = EditBudget(2, 1.0, burst=budget_burst, clock=clock) if budget_burst else None
        r = StreamRenderer(
            sink, min_interval=1.0, clock=clock, controls=(STOP,), replace=old, budget=budget
        )
        for delta, pause in deltas:
            await r.feed(delta)
            if pause:
                await clock.advance(pause)
            else:
                await asyncio.sleep(0)
        return sink, await clock.run(r.finish(note, controls=(REGEN,))), old

    sink, result, old = asyncio.run(scenario())
    expected = split_message(full, max_len)
    refs = list(result.refs)
    assert [sink.messages[k] for k in refs] == expected
    assert refs[: min(old_parts, len(expected))] == old[: len(expected)]  # in place, in order
    assert refs == sorted(refs)
    assert all(sink.buttons[k] == () for k in refs[:-1])
    assert sink.buttons[refs[-1]] == (REGEN.action_id,)
    if isinstance(sink, DeletingRecordingSink):
        assert sink.visible == expected
        kinds = [c[0] for c in sink.calls]
        if "delete" in kinds:  # after every edit and post
            assert "delete" not in kinds[: max(i for i, k in enumerate(kinds) if k != "delete")]
    else:
        replaced = REPLACED_PART if len(REPLACED_PART) <= max_len else PENDING_PART
        assert all(len(m) <= max_len for m in sink.messages)
        assert sink.messages == expected + [replaced] * (len(sink.messages) - len(expected))


async def test_an_earlier_replaced_message_deleted_meanwhile_is_skipped() -> None:
    clock = FakeClock()
    sink = DeletingRecordingSink(20, clock=clock)
    old = await old_reply(sink, "old one", "old two", "old three")
    sink.deleted.add(old[0])  # a moderator deleted it

    async def edit(ref: Any, text: str, *, controls: Sequence[Control] = ()) -> None:
        if ref in sink.deleted:
            raise SinkGone("Unknown Message")
        await DeletingRecordingSink.edit(sink, ref, text, controls=controls)

    sink.edit = edit  # type: ignore[method-assign]
    r = StreamRenderer(sink, min_interval=1.0, clock=clock, controls=(STOP,), replace=old)
    await r.feed("new")
    result = await clock.run(r.finish(controls=(REGEN,)))
    assert sink.visible == ["new"]  # in the next one; the third deleted as surplus
    assert (result.refs, result.cleared) == ((old[1],), 1)
    assert not result.gone


async def test_the_clicked_message_gone_stops_the_regeneration() -> None:
    clock = FakeClock()
    sink = ControlsRecordingSink(20, clock=clock, faults={2: SinkGone("Unknown Message")})
    old = await old_reply(sink, "old one", "old two")  # attempts 0 and 1
    r = StreamRenderer(sink, min_interval=1.0, clock=clock, controls=(STOP,), reuse=old[-1])
    await r.feed("new")
    result = await clock.run(r.finish(controls=(REGEN,)))
    assert result.gone


async def test_finish_while_a_placeholder_waits_for_its_slot_still_deletes_last() -> None:
    clock = FakeClock()
    sink = DeletingRecordingSink(20, clock=clock)
    old = await old_reply(sink, "old one", "old two", "old three")
    budget = EditBudget(1, 1.0, burst=1, clock=clock)
    r = StreamRenderer(
        sink, min_interval=1.0, clock=clock, controls=(STOP,), replace=old, budget=budget
    )
    await r.feed("new")
    await clock.settle()  # the first edit went; a placeholder waits for the next slot
    assert sink.calls == [("edit", 0, "new" + MARKER, (STOP.action_id,))]
    await clock.run(r.finish(controls=(REGEN,)))
    assert sink.visible == ["new"]
    kinds = [c[:2] for c in sink.calls]
    assert kinds.index(("edit", 0), 1) < kinds.index(("delete", 1))  # the final edit first
    assert sink.buttons[0] == (REGEN.action_id,)


async def test_every_send_gives_its_slot_back_to_a_confirming_budget() -> None:
    # A budget that counts requests until they come back (Discord's): each post and edit is
    # counted while it is on its way, and given back when it came back, failed or was skipped;
    # a renderer stopped mid-send gives back too.
    clock = FakeClock()
    budget = EditBudget(50, 1.0, burst=5, clock=clock, confirm=True)
    sink = RecordingSink(
        clock=clock, latency=0.1, faults={1: SinkRateLimited(0.5), 2: SinkTransient(OSError("x"))}
    )
    r = StreamRenderer(sink, min_interval=0.2, budget=budget, clock=clock)
    in_flight: list[int] = []

    async def watch() -> None:
        while True:
            in_flight.append(budget.in_flight)
            await clock.sleep(0.05)

    watcher = asyncio.create_task(watch())
    for word in ("one ", "two ", "three ", "four"):
        await r.feed(word)
        await clock.advance(0.5)
    result = await clock.run(r.finish())
    assert result.texts == ("one two three four",)
    assert (r.rate_limited, r.transient) == (1, 1)
    assert max(in_flight) == 1  # one send at a time, counted while it was out
    assert in_flight[1] == 1  # the post, out at t=0-0.1...
    assert in_flight[3] == 0  # ...and back before its edit
    assert budget.in_flight == 0
    stopped = StreamRenderer(
        RecordingSink(clock=clock, latency=10.0), min_interval=0.2, budget=budget, clock=clock
    )
    await stopped.feed("never answered")
    await clock.advance(1.0)
    assert budget.in_flight == 1
    await stopped.aclose()
    assert budget.in_flight == 0
    watcher.cancel()
