"""A reasoning model through the real Slack front end (bolt over HTTP against the Web API
stand-in), on a :class:`FakeClock`: the thinking status in a top-level answer (post + updates),
never in a final message with ``SHOW_REASONING`` off or status, a quote above the answer with
full, in a top-level answer and in a native stream (a thread)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.clock import FakeClock
from core.conversations import Status
from core.delivery import REASONING_CUT
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.slack_api import FakeSlackAPI, Message

from .conftest import CHANNEL, BotMaker, next_ts, wait_for

THINKING = ["Six ", "times ", "seven.\n", "Done."]
ANSWER = "Forty-two."


async def think_then_answer(
    make_bot: BotMaker,
    slack_api: FakeSlackAPI,
    llm: FakeLLMServer,
    show: str,
    *,
    thread: bool = False,
    thinking: list[str] | str = THINKING,
    **scripted: Any,
) -> list[Message]:
    """The model thinks for 3 s of the bot's clock, then answers; the bot's messages after."""
    clock = FakeClock(1000.0)
    gate = asyncio.Event()
    llm.enqueue(Reply(deltas=["Forty", "-two."], reasoning=thinking, text_gate=gate, **scripted))
    running = await make_bot(clock=clock, show_reasoning=show)
    root = next_ts() if thread else None
    await running.slack.mention("why?", thread_ts=root)
    await wait_for(lambda: bool(running.engine._last))
    [reply] = running.engine._last.values()
    await wait_for(lambda: reply.reasoning_text == "".join(thinking))
    if show == "status" and not thread:
        await wait_for(lambda: bool(slack_api.texts(CHANNEL)))  # the status is posted
    for _ in range(3):
        await clock.advance(1.0)
        await asyncio.sleep(0.05)  # an update reaches the stand-in over loopback
    gate.set()
    await wait_for(lambda: reply.status is Status.COMPLETE)
    for _ in range(100):  # the final update waits its turn on the bot's clock
        texts = slack_api.texts(CHANNEL, root)
        if (
            texts
            and texts[-1].endswith(ANSWER)
            and not slack_api.thread(CHANNEL, root)[-1].streaming
        ):
            break
        await clock.advance(0.5)
        await asyncio.sleep(0.01)
    return slack_api.thread(CHANNEL, root)


async def test_status_in_a_top_level_answer_then_the_answer_alone(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    [message] = await think_then_answer(make_bot, slack_api, llm, "status")
    assert message.text == ANSWER
    assert message.history[0] == "💭 thinking… (0 s) ▌"
    assert "💭 thinking… (3 s) ▌" in message.history
    assert not any("Six" in t or "seven" in t for t in message.history)


@pytest.mark.parametrize("thread", [False, True], ids=["top-level", "native-thread"])
@pytest.mark.parametrize("show", ["off", "status"])
async def test_the_thinking_is_never_in_the_final_message(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, show: str, thread: bool
) -> None:
    messages = await think_then_answer(
        make_bot, slack_api, llm, show, thread=thread, reasoning_as="think"
    )
    assert [m.text for m in messages] == [ANSWER]
    assert not any("Six" in t or "<th" in t for m in messages for t in m.history)
    if show == "off":
        assert not any("💭" in t for m in messages for t in m.history)


@pytest.mark.parametrize("thread", [False, True], ids=["top-level", "native-thread"])
async def test_full_quotes_the_thinking_above_the_answer(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, thread: bool
) -> None:
    [message] = await think_then_answer(make_bot, slack_api, llm, "full", thread=thread)
    assert message.text == f"> Six times seven.\n> Done.\n\n{ANSWER}"


async def test_full_cuts_a_long_thinking_and_says_so(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    long = "pondering " * 800
    [message] = await think_then_answer(make_bot, slack_api, llm, "full", thinking=long)
    quote, answer = message.text.split("\n\n")
    assert answer == ANSWER
    assert quote.startswith("> pondering")
    assert quote.endswith(REASONING_CUT)
    assert len(quote) < 4000
