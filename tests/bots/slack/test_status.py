"""The thinking status of a native stream as the thread's status (``assistant.threads.setStatus``,
:mod:`bots.slack.status`), through the real Slack front end (bolt over HTTP against the Web API
stand-in) on a :class:`FakeClock`: set while the model thinks with the seconds counting, cleared
once the first text is in the message, never in a message; paced by the edit interval and the
workspace's status budget; a refused method never touches the answer."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from bots.slack.app import HEARD_STATUS
from core.clock import FakeClock
from core.conversations import Status
from core.delivery import STOPPED_NOTE, thinking_line
from core.engine import Reply as EngineReply
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import CHANNEL, BotMaker, Running, next_ts, wait_for

THINKING = ["Six ", "times ", "seven.\n", "Done."]
ANSWER = "Forty-two."
SET_STATUS = "assistant.threads.setStatus"


@dataclass
class Thinking:
    """A question in a thread whose answer is held back (the model thinks) until ``gate``."""

    running: Running
    clock: FakeClock
    slack_api: FakeSlackAPI
    reply: EngineReply
    root: str
    gate: asyncio.Event

    def statuses(self) -> list[str]:
        """Every status the thread was given, in order."""
        return self.slack_api.status_history.get((CHANNEL, self.root), [])

    async def tick(self, seconds: float = 1.0) -> None:
        """Let ``seconds`` of the bot's clock pass, a second at a time."""
        while seconds > 0:
            step = min(seconds, 1.0)
            await self.clock.advance(step)
            seconds -= step

    async def answer_and_end(self) -> None:
        """Let the model answer; drive the bot's clock until the stream is stopped."""
        self.gate.set()
        await wait_for(lambda: self.reply.done)
        for _ in range(200):
            messages = self.slack_api.thread(CHANNEL, self.root)
            if messages and not messages[-1].streaming and self.running.bot._tasks == {}:
                return
            await self.clock.advance(0.5)
            await asyncio.sleep(0.01)
        raise AssertionError("the answer never ended")


async def ask_a_thinker(
    running: Running,
    clock: FakeClock,
    slack_api: FakeSlackAPI,
    llm: FakeLLMServer,
    **scripted: Any,
) -> Thinking:
    gate = asyncio.Event()
    llm.enqueue(Reply(deltas=["Forty", "-two."], reasoning=THINKING, text_gate=gate, **scripted))
    root = next_ts()
    before = set(running.engine._last.values())
    await running.slack.mention("why?", thread_ts=root)
    await wait_for(lambda: bool(set(running.engine._last.values()) - before))
    [reply] = set(running.engine._last.values()) - before
    await wait_for(lambda: reply.reasoning_text == "".join(THINKING))
    return Thinking(running, clock, slack_api, reply, root, gate)


async def thinker(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, **settings: Any
) -> Thinking:
    clock = FakeClock(1000.0)
    running = await make_bot(clock=clock, show_reasoning="status", **settings)
    return await ask_a_thinker(running, clock, slack_api, llm)


def lines(*seconds: int) -> list[str]:
    """The statuses of a thread up to the thinking lines of ``seconds``: the status the question
    got the moment it arrived, then a line per second the model thought."""
    return [HEARD_STATUS, *(thinking_line(s) for s in seconds)]


async def test_the_status_counts_the_seconds_and_is_cleared_once_the_first_text_is_in(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    clock = FakeClock(1000.0)
    running = await make_bot(clock=clock, show_reasoning="status")
    # The answer's first delta, then the model hangs: the reply is still being written.
    t = await ask_a_thinker(running, clock, slack_api, llm, hang_after=1)

    await wait_for(lambda: t.statuses() == lines(0))
    for n in (1, 2, 3):
        await t.tick()
        await wait_for(lambda: t.statuses() == lines(*range(n + 1)))  # noqa: B023
    assert slack_api.thread(CHANNEL, t.root) == []  # nothing in the thread while it thinks
    call = slack_api.calls_to(SET_STATUS)[0].args
    assert (call["channel_id"], call["thread_ts"]) == (CHANNEL, t.root)

    t.gate.set()
    await wait_for(lambda: slack_api.texts(CHANNEL, t.root) == ["Forty"])
    await wait_for(lambda: t.statuses()[-1:] == [""])
    [message] = slack_api.thread(CHANNEL, t.root)
    assert message.streaming  # cleared while the answer is still being written...
    methods = [c.method for c in slack_api.calls]
    last_status = len(methods) - 1 - methods[::-1].index(SET_STATUS)
    assert methods.index("chat.startStream") < last_status  # ...right after its first text

    await running.engine.stop(t.reply.key)
    await t.answer_and_end()
    assert slack_api.texts(CHANNEL, t.root) == [f"Forty\n{STOPPED_NOTE}"]
    assert t.statuses() == [*lines(0, 1, 2, 3), ""]  # one clear, no status after it
    history = [text for m in slack_api.thread(CHANNEL, t.root) for text in m.history]
    assert not any("💭" in text or "Six" in text or "seven" in text for text in history)


async def test_a_complete_answer_ends_without_status_or_reasoning_in_the_message(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    t = await thinker(make_bot, slack_api, llm)
    await wait_for(lambda: t.statuses() == lines(0))
    await t.tick(2.0)
    await wait_for(lambda: t.statuses() == lines(0, 1, 2))

    await t.answer_and_end()

    assert t.reply.status is Status.COMPLETE
    [message] = slack_api.thread(CHANNEL, t.root)
    assert message.streamed
    assert message.text == ANSWER
    assert not any("💭" in text or "Six" in text for text in message.history)
    assert t.statuses() == [*lines(0, 1, 2), ""]
    assert slack_api.statuses[(CHANNEL, t.root)] == ""


async def test_a_reply_that_ends_with_no_text_clears_the_status_too(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    t = await thinker(make_bot, slack_api, llm)
    await wait_for(lambda: t.statuses() == lines(0))

    await t.running.engine.stop(t.reply.key)  # stopped while it thinks
    await t.answer_and_end()

    assert slack_api.texts(CHANNEL, t.root) == [STOPPED_NOTE]
    assert t.statuses() == [*lines(0), ""]


async def test_updates_come_at_most_once_per_edit_interval(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    t = await thinker(make_bot, slack_api, llm, slack_edit_interval=1.5)
    await wait_for(lambda: t.statuses() == lines(0))
    for _ in range(4):  # a line a second; at most one update per 1.5 s: t=0, ≥1.5, ≥3
        await t.tick()
        await asyncio.sleep(0.02)  # an update under way reaches the stand-in
    await wait_for(lambda: len(t.statuses()) >= 3)

    heard, *shown = t.statuses()
    assert heard == HEARD_STATUS
    assert 2 <= len(shown) <= 3
    seconds = [int(line.split("(")[1].split(" ")[0]) for line in shown]
    assert seconds[0] == 0
    assert seconds == sorted(set(seconds))  # counting up, never the same line twice
    await t.answer_and_end()
    assert t.statuses()[-1] == ""


async def test_status_updates_are_skipped_when_the_status_budget_has_no_slot_free(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    # Two calls a minute: the status set when the question came takes one, its clear is owed
    # the other; every thinking line finds no free slot and is skipped (not queued), and the
    # answer does not wait for it.
    t = await thinker(make_bot, slack_api, llm, slack_status_rate=2)
    await wait_for(lambda: t.statuses() == lines())
    await t.tick(3.0)
    await asyncio.sleep(0.05)
    assert t.statuses() == lines()

    await t.answer_and_end()

    assert slack_api.texts(CHANNEL, t.root) == [ANSWER]
    assert t.statuses() == [*lines(), ""]  # the clear had its slot
    assert [c for c in slack_api.calls if c.status == 429] == []


async def test_a_refused_set_status_leaves_the_answer_intact_and_the_bot_stops_trying(
    make_bot: BotMaker,
    slack_api: FakeSlackAPI,
    llm: FakeLLMServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slack_api.fail[SET_STATUS] = "missing_scope"
    caplog.set_level(logging.INFO, logger="llmconnect.slack")
    t = await thinker(make_bot, slack_api, llm)
    await wait_for(lambda: len(slack_api.calls_to(SET_STATUS)) == 1)
    await t.tick(2.0)
    await t.answer_and_end()

    assert slack_api.texts(CHANNEL, t.root) == [ANSWER]
    assert t.reply.status is Status.COMPLETE

    again = await ask_a_thinker(t.running, t.clock, slack_api, llm)  # another thread, same bot
    await again.tick(2.0)
    await again.answer_and_end()
    assert slack_api.texts(CHANNEL, again.root) == [ANSWER]
    assert len(slack_api.calls_to(SET_STATUS)) == 1  # refused once: never asked again
    refusals = [r for r in caplog.records if "setStatus" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.INFO
    assert "missing_scope" in refusals[0].getMessage()


async def test_a_rate_limited_set_status_is_skipped_and_the_bot_keeps_trying(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    slack_api.fail[SET_STATUS] = "ratelimited"
    t = await thinker(make_bot, slack_api, llm)
    await wait_for(lambda: len(slack_api.calls_to(SET_STATUS)) == 1)
    await t.tick(2.0)  # Retry-After (1 s, the default) defers the status budget, then a retry
    await wait_for(lambda: len(slack_api.calls_to(SET_STATUS)) >= 2)
    del slack_api.fail[SET_STATUS]
    await t.tick(2.0)
    await wait_for(lambda: bool(t.statuses()))

    await t.answer_and_end()

    assert slack_api.texts(CHANNEL, t.root) == [ANSWER]
    assert t.statuses()[-1] == ""


async def test_the_status_is_cleared_when_the_text_falls_back_to_updates(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    slack_api.fail["chat.startStream"] = "internal_error"  # this stream fails: edits take over
    clock = FakeClock(1000.0)
    running = await make_bot(clock=clock, show_reasoning="status")
    t = await ask_a_thinker(running, clock, slack_api, llm, hang_after=1)
    await wait_for(lambda: t.statuses() == lines(0))

    t.gate.set()
    await wait_for(lambda: slack_api.texts(CHANNEL, t.root) == ["Forty ▌"])  # by chat.postMessage
    await wait_for(lambda: t.statuses() == [*lines(0), ""])  # while the answer is still written
    assert not t.reply.done

    await running.engine.stop(t.reply.key)
    await t.answer_and_end()
    assert slack_api.texts(CHANNEL, t.root) == [f"Forty\n{STOPPED_NOTE}"]
    assert t.statuses() == [*lines(0), ""]
