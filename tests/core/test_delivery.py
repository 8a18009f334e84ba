"""Tests for core.delivery: an engine reply rendered into a sink, ending on its exact text."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from core.budget import EditBudget
from core.clock import FakeClock
from core.conversations import Message, Status
from core.delivery import (
    EMPTY_NOTE,
    REASONING_CUT,
    STOPPED_NOTE,
    ReasoningQuote,
    deliver,
    deliver_with,
    final_note,
    shown_events,
    thinking_line,
)
from core.engine import ChatEngine, Reply
from core.render import RenderResult, SinkGone, with_note
from core.split import split_message
from llmconnect.protocols.echo import echo_reply
from tests.core.test_render import RecordingSink
from tests.fakes.llm_server import Fail, FakeLLMServer
from tests.fakes.llm_server import Reply as Scripted

from .conftest import KEY, OTHER, EngineMaker, wait_for


def echo_text(prompt: str, words: int | None = None) -> str:
    return "".join(echo_reply(prompt, words))


async def test_complete_reply_ends_on_exactly_its_text(make_engine: EngineMaker) -> None:
    clock = FakeClock()
    engine = make_engine(options={"words": 300})
    sink = RecordingSink(clock=clock)

    reply = await engine.submit(KEY, "tell me a story")
    result = await deliver(engine, reply, sink, min_interval=0, clock=clock)

    expected = echo_text("tell me a story", 300)
    assert reply.status is Status.COMPLETE
    assert final_note(reply) is None
    assert sink.messages == [expected]
    assert result.texts == (expected,)
    assert not result.gone
    assert sink.posts == 1


async def test_long_reply_is_split_and_paced(make_engine: EngineMaker) -> None:
    clock = FakeClock()
    engine = make_engine(options={"words": 400})
    sink = RecordingSink(max_len=200, clock=clock)

    reply = await engine.submit(KEY, "split me please")
    result = await clock.run(deliver(engine, reply, sink, min_interval=1.0, clock=clock))

    expected = echo_text("split me please", 400)
    assert sink.messages == split_message(expected, 200)
    assert list(result.texts) == sink.messages
    # Edits of one message are at least min_interval apart (virtual time).
    for ref in range(len(sink.messages)):
        times = [c.time for c in sink.history if c.ref == ref]
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))


async def test_two_replies_share_a_budget_and_both_end_exact(make_engine: EngineMaker) -> None:
    clock = FakeClock()
    engine = make_engine(options={"words": 200})
    budget = EditBudget(rate=2, per=1.0, clock=clock)
    sinks = [RecordingSink(clock=clock, name=n) for n in ("a", "b")]

    replies = [await engine.submit(KEY, "alpha"), await engine.submit(OTHER, "beta")]
    await clock.run(
        asyncio.gather(
            *(
                deliver(engine, r, s, min_interval=0.5, budget=budget, clock=clock)
                for r, s in zip(replies, sinks, strict=True)
            )
        )
    )

    assert sinks[0].messages == [echo_text("alpha", 200)]
    assert sinks[1].messages == [echo_text("beta", 200)]


async def test_error_reply_ends_with_the_warning_note(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = local_engine(llm_max_retries=0)
    llm_server.enqueue(Scripted(deltas=["one ", "two ", "three"], drop_after=2))
    sink = RecordingSink(clock=clock)

    reply = await engine.submit(KEY, "go")
    await deliver(engine, reply, sink, min_interval=0, clock=clock)

    assert reply.status is Status.ERROR
    assert sink.messages == ["one two \n⚠️ The reply was cut off by the provider. (local)"]
    assert sink.messages == [with_note(reply.text, final_note(reply))]


async def test_error_before_any_text_is_just_the_note(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = local_engine()
    llm_server.enqueue(Fail(401))
    sink = RecordingSink(clock=clock)

    reply = await engine.submit(KEY, "go")
    await deliver(engine, reply, sink, min_interval=0, clock=clock)

    assert len(sink.messages) == 1
    assert sink.messages[0].startswith("⚠️ The provider rejected the API key")


async def test_stopped_reply_ends_with_the_stopped_note(make_engine: EngineMaker) -> None:
    clock = FakeClock()
    engine = make_engine(options={"words": 5000})
    sink = RecordingSink(clock=clock)

    reply = await engine.submit(KEY, "ramble on")
    delivery = asyncio.create_task(deliver(engine, reply, sink, min_interval=0, clock=clock))
    await wait_for(lambda: sink.posts == 1)
    await engine.stop(KEY)
    result = await delivery

    assert reply.status is Status.CANCELLED
    assert sink.messages[-1].endswith("\n" + STOPPED_NOTE)
    assert "".join(sink.messages) == with_note(reply.text, STOPPED_NOTE)
    assert len(reply.text) < len(echo_text("ramble on", 5000))
    assert not result.gone


async def test_sink_gone_stops_the_generation_quietly(make_engine: EngineMaker) -> None:
    clock = FakeClock()
    engine = make_engine(options={"words": 5000})
    sink = RecordingSink(clock=clock, faults={1: SinkGone()})  # the first edit: message deleted

    reply = await engine.submit(KEY, "ramble on")
    result = await deliver(engine, reply, sink, min_interval=0, clock=clock)

    assert result.gone
    assert reply.status is Status.CANCELLED
    assert len(reply.text) < len(echo_text("ramble on", 5000))
    assert sink.posts == 1
    assert sink.edits == 0
    assert not engine.is_busy(KEY)


async def test_sink_gone_after_the_reply_ended_does_not_stop_the_next_prompt(
    make_engine: EngineMaker,
) -> None:
    """The renderer learns the message is gone, the reply ends, and only then the observer gets
    its last text (the last deltas and the end arrived in one network read): by then the next
    queued prompt of the channel runs, and it must not be the one stopped."""
    clock = FakeClock()
    engine = make_engine(options={"words": 5000})
    running = await engine.submit(KEY, "the next prompt")
    await wait_for(lambda: running.status is Status.STREAMING)

    parts = ["first "]
    ended = Reply(KEY, Message("assistant", status=Status.STREAMING, parts=parts), "echo/echo")
    sink = RecordingSink(clock=clock, faults={0: SinkGone()})  # the post fails
    delivery = asyncio.create_task(deliver(engine, ended, sink, min_interval=0, clock=clock))
    await wait_for(lambda: bool(sink.attempt_times))  # the post was tried ...
    for _ in range(3):
        await asyncio.sleep(0)  # ... and raised SinkGone
    assert not sink.messages

    parts.append("second")  # the rest and the end, in one step
    ended.message.finish(Status.COMPLETE)
    ended._finish()
    result = await delivery

    assert result.gone
    assert ended.status is Status.COMPLETE
    assert running.status is Status.STREAMING  # untouched
    await engine.stop(KEY)
    assert running.status is Status.CANCELLED


class CollectingRenderer:
    """A renderer of another kind (a platform's own streaming API): keeps what it was given."""

    def __init__(self, gone_after: int | None = None) -> None:
        self.deltas: list[str] = []
        self.note: str | None = None
        self.gone_after = gone_after

    async def feed(self, delta: str) -> None:
        if self.gone_after is not None and len(self.deltas) >= self.gone_after:
            raise SinkGone()
        self.deltas.append(delta)

    async def finish(self, note: str | None = None) -> RenderResult:
        self.note = note
        text = with_note("".join(self.deltas), note)
        return RenderResult(("ref",), (text,), 1, 0, self.gone_after is not None)


async def test_deliver_with_drives_any_renderer(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 50})
    renderer = CollectingRenderer()

    reply = await engine.submit(KEY, "stream natively")
    result = await deliver_with(engine, reply, renderer)

    assert "".join(renderer.deltas) == echo_text("stream natively", 50)
    assert renderer.note is None
    assert result.texts == (echo_text("stream natively", 50),)


async def test_deliver_with_stops_the_reply_when_its_renderer_is_gone(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine(options={"words": 5000})
    renderer = CollectingRenderer(gone_after=1)

    reply = await engine.submit(KEY, "ramble on")
    await deliver_with(engine, reply, renderer)

    assert reply.status is Status.CANCELLED
    assert renderer.note == STOPPED_NOTE


async def test_an_empty_complete_reply_says_so() -> None:
    """An answer with no text would leave the asker with nothing: the note says why."""
    reply = Reply(KEY, Message("assistant", status=Status.COMPLETE), "echo/echo")
    assert final_note(reply) == EMPTY_NOTE
    reply.message.content = "text"
    assert final_note(reply) is None


# --------------------------------------------------------------------------- reasoning

THINKING = ["Let me ", "think.\nStep ", "two."]


async def _thinking_then_answer(
    engine: ChatEngine,
    llm_server: FakeLLMServer,
    clock: FakeClock,
    sink: RecordingSink,
    *,
    seconds: float = 12.0,
    **scripted: Any,
) -> tuple[Reply, RenderResult]:
    """A reply that thinks for ``seconds`` (virtual) before it answers "Answer here"."""
    gate = asyncio.Event()
    llm_server.enqueue(
        Scripted(deltas=["Answer ", "here"], reasoning=THINKING, text_gate=gate, **scripted)
    )
    reply = await engine.submit(KEY, "why?")
    delivery = asyncio.ensure_future(deliver(engine, reply, sink, min_interval=1.0, clock=clock))
    await wait_for(lambda: reply.reasoning_text == "".join(THINKING))
    await clock.advance(seconds)
    gate.set()
    await wait_for(lambda: reply.done)
    result = await clock.run(delivery)
    return reply, result


async def test_status_line_while_thinking_then_the_answer_replaces_it(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = local_engine(clock=clock)  # SHOW_REASONING defaults to status
    sink = RecordingSink(clock=clock)
    reply, result = await _thinking_then_answer(engine, llm_server, clock, sink)

    assert sink.messages == ["Answer here"]
    assert result.texts == ("Answer here",)
    shown = [call.text for call in sink.history]
    assert shown[0] == "💭 thinking… (0 s) ▌"  # posted at once
    # one edit per second at most (min_interval 1.0), each with the seconds on the clock
    assert shown[1:13] == [f"💭 thinking… ({n} s) ▌" for n in range(1, 13)]
    assert all("Let me" not in text and "think." not in text for text in shown)
    times = [call.time for call in sink.history]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))
    assert reply.text == "Answer here"
    assert reply.reasoning_text == "".join(THINKING)


async def test_reasoning_off_shows_nothing_of_it(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = local_engine(clock=clock, show_reasoning="off")
    sink = RecordingSink(clock=clock)
    await _thinking_then_answer(engine, llm_server, clock, sink)

    assert sink.messages == ["Answer here"]
    assert sink.history[0].text.startswith("Answer")  # the message appears with the answer
    assert all("thinking" not in call.text and "Let me" not in call.text for call in sink.history)


async def test_reasoning_full_is_a_quote_above_the_answer(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = local_engine(clock=clock, show_reasoning="full")
    sink = RecordingSink(clock=clock)
    await _thinking_then_answer(engine, llm_server, clock, sink)

    assert sink.messages == ["> Let me think.\n> Step two.\n\nAnswer here"]
    assert sink.history[0].text.startswith("> Let me")  # shown while it is written


async def test_reasoning_full_is_cut_to_fit_and_says_so(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = local_engine(clock=clock, show_reasoning="full")
    sink = RecordingSink(max_len=200, clock=clock)
    llm_server.enqueue(Scripted(text="Short answer.", reasoning="word " * 100))
    reply = await engine.submit(KEY, "why?")
    delivery = asyncio.ensure_future(deliver(engine, reply, sink, min_interval=1.0, clock=clock))
    await wait_for(lambda: reply.done)
    await clock.run(delivery)

    [message] = sink.messages
    quote, answer = message.split("\n\n")
    assert answer == "Short answer."
    assert quote.endswith("\n" + REASONING_CUT)
    assert quote.startswith("> word word")
    assert 60 <= len(quote) <= 100  # at most half the message length, the cut line included


@pytest.mark.parametrize("way", ["reasoning", "think"])
async def test_status_never_in_the_final_message(
    local_engine: EngineMaker, llm_server: FakeLLMServer, way: str
) -> None:
    clock = FakeClock()
    engine = local_engine(clock=clock)
    sink = RecordingSink(clock=clock)
    await _thinking_then_answer(engine, llm_server, clock, sink, seconds=3, reasoning_as=way)
    assert sink.messages == ["Answer here"]
    assert "💭 thinking… (3 s) ▌" in [call.text for call in sink.history]


async def test_only_reasoning_then_nothing_ends_on_the_empty_note(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = local_engine(clock=clock)
    sink = RecordingSink(clock=clock)
    llm_server.enqueue(Scripted(deltas=["<think>", "hmm, never done"]))  # the tag never closes
    reply = await engine.submit(KEY, "why?")
    delivery = asyncio.ensure_future(deliver(engine, reply, sink, min_interval=1.0, clock=clock))
    await wait_for(lambda: reply.done)
    await clock.run(delivery)
    assert sink.messages == [EMPTY_NOTE]
    assert reply.reasoning_text == "hmm, never done"


def test_reasoning_quote_keeps_line_ends_inside_only() -> None:
    quote = ReasoningQuote(1000)
    pieces = [quote.add(p) for p in ["\n\n  First", " line\n", "\nsecond\n", "\n"]]
    assert "".join(pieces) == "> First line\n> \n> second"
    assert quote.close() == "\n\n"
    assert ReasoningQuote(10).close() == ""  # nothing quoted: nothing between


def test_thinking_line() -> None:
    assert thinking_line(12.9) == "💭 thinking… (12 s)"
    assert thinking_line(-0.1) == "💭 thinking… (0 s)"


async def test_closing_shown_events_while_the_model_thinks(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    # a web page that goes away mid-thought: the read under way is stopped cleanly, the reply
    # goes on and ends complete
    clock = FakeClock()
    engine = local_engine(clock=clock)
    gate = asyncio.Event()
    llm_server.enqueue(Scripted(deltas=["Answer"], reasoning=THINKING, text_gate=gate))
    reply = await engine.submit(KEY, "why?")
    events = shown_events(engine, reply)
    assert await anext(events) == ("status", thinking_line(0))
    await events.aclose()
    gate.set()
    await reply
    assert reply.status is Status.COMPLETE
    assert reply.text == "Answer"
    again = [event async for event in shown_events(engine, reply)]  # a late observer
    assert again == [("text", "Answer")]


async def test_with_controls_stop_rides_while_streaming_and_the_final_edit_carries_the_rest(
    make_engine: EngineMaker,
) -> None:
    from core.controls import final_controls, streaming_controls
    from tests.core.test_render import ControlsRecordingSink

    clock = FakeClock()
    engine = make_engine(options={"words": 300})
    sink = ControlsRecordingSink(clock=clock)

    reply = await engine.submit(KEY, "tell me a story")
    result = await clock.run(
        deliver(engine, reply, sink, min_interval=1.0, clock=clock, controls=True)
    )

    stop = tuple(c.action_id for c in streaming_controls(KEY, reply.id))
    final = tuple(c.action_id for c in final_controls(reply))
    assert len(final) == 3
    assert sink.calls[0][3] == stop
    assert all(call[3] == stop for call in sink.calls[:-1])
    assert sink.calls[-1][2:] == (echo_text("tell me a story", 300), final)
    assert result.posts + result.edits == len(sink.calls)


async def test_a_regeneration_renders_into_the_old_message(make_engine: EngineMaker) -> None:
    from core.controls import Action, action_id, press
    from tests.core.test_render import ControlsRecordingSink

    clock = FakeClock()
    engine = make_engine()
    sink = ControlsRecordingSink(clock=clock)
    first = await engine.submit(KEY, "again please")
    done = await clock.run(deliver(engine, first, sink, min_interval=0, clock=clock, controls=True))

    pressed = await press(engine, KEY, action_id(Action.REGENERATE, KEY, first.id), None)
    assert pressed.reply is not None
    again = await clock.run(
        deliver(
            engine,
            pressed.reply,
            sink,
            min_interval=0,
            clock=clock,
            controls=True,
            reuse=done.refs[-1],
        )
    )

    assert again.refs == done.refs
    assert again.posts == 0
    assert sink.messages == [echo_text("again please")]
    assert all(pressed.reply.id in button for button in sink.buttons[0])


async def test_a_regeneration_stopped_before_it_ran_leaves_the_message_as_it_was(
    make_engine: EngineMaker,
) -> None:
    from core.controls import Action, action_id, press
    from tests.core.test_render import ControlsRecordingSink

    clock = FakeClock()
    engine = make_engine()
    sink = ControlsRecordingSink(clock=clock)
    first = await engine.submit(KEY, "keep me")
    done = await clock.run(deliver(engine, first, sink, min_interval=0, clock=clock, controls=True))
    shown = (list(sink.messages), list(sink.buttons))

    pressed = await press(engine, KEY, action_id(Action.REGENERATE, KEY, first.id), None)
    assert pressed.reply is not None
    pressed.reply.cancel()  # before it ran
    again = await clock.run(
        deliver(
            engine,
            pressed.reply,
            sink,
            min_interval=0,
            clock=clock,
            controls=True,
            reuse=done.refs[-1],
        )
    )

    assert (again.posts, again.edits) == (0, 0)
    assert (sink.messages, sink.buttons) == shown
    assert (await engine.conversation(KEY)).messages[-1].id == first.id


class NamedRefSink:
    """A deleting sink with string refs (``"m0"``, ``"m1"``…), as platforms have them (a
    Discord message id, a Slack ts): those are the refs a reply's turn can keep."""

    def __init__(self, max_len: int, clock: FakeClock) -> None:
        from tests.core.test_render import DeletingRecordingSink

        self.inner = DeletingRecordingSink(max_len, clock=clock)
        self.max_len = max_len

    async def post(self, text: str, *, controls: Any = ()) -> str:
        return f"m{await self.inner.post(text, controls=controls)}"

    async def edit(self, ref: str, text: str, *, controls: Any = ()) -> None:
        await self.inner.edit(int(ref[1:]), text, controls=controls)

    async def delete(self, ref: str) -> None:
        await self.inner.delete(int(ref[1:]))


async def test_a_regeneration_renders_into_every_message_of_a_long_reply_even_after_a_restart(
    make_engine: EngineMaker, tmp_path: Any
) -> None:
    from core.controls import Action, action_id, press

    clock = FakeClock()
    store = f"sqlite:///{tmp_path / 'c.db'}"
    engine = make_engine(options={"words": 120}, store_url=store)
    sink = NamedRefSink(200, clock)
    first = await engine.submit(KEY, "tell me a lot")
    # Awaited as they are (min_interval 0: nothing sleeps), the SQLite store works in a thread.
    done = await deliver(engine, first, sink, min_interval=0, clock=clock, controls=True)
    assert len(done.refs) >= 3
    # The turn keeps its messages, in the store too.
    assert (await engine.conversation(KEY)).messages[-1].refs == done.refs
    await engine.aclose()

    again_engine = make_engine(options={"words": 5}, store_url=store)  # a new process
    pressed = await press(again_engine, KEY, action_id(Action.REGENERATE, KEY, first.id), None)
    assert pressed.reply is not None
    assert pressed.reply.replaced_refs == done.refs
    again = await deliver(
        again_engine,
        pressed.reply,
        sink,
        min_interval=0,
        clock=clock,
        controls=True,
        reuse=done.refs[-1],
    )

    new_text = echo_text("tell me a lot", 5)
    assert again.refs == done.refs[:1]
    assert again.cleared == len(done.refs) - 1
    assert sink.inner.visible == [new_text]
    # One message now: nothing more to remember.
    assert (await again_engine.conversation(KEY)).messages[-1].refs == ()


async def test_a_reply_in_one_message_or_without_buttons_keeps_no_refs(
    make_engine: EngineMaker,
) -> None:
    clock = FakeClock()
    engine = make_engine(options={"words": 120})
    short = await engine.submit(KEY, "short")
    await clock.run(
        deliver(
            engine, short, NamedRefSink(2000, clock), min_interval=0, clock=clock, controls=True
        )
    )
    assert (await engine.conversation(KEY)).messages[-1].refs == ()
    long = await engine.submit(OTHER, "long")
    done = await clock.run(
        deliver(engine, long, NamedRefSink(200, clock), min_interval=0, clock=clock)
    )
    assert len(done.refs) > 1
    assert (await engine.conversation(OTHER)).messages[-1].refs == ()
