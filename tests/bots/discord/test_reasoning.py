"""A reasoning model through the real Discord front end (discord.py against the stand-in): the
thinking status while only reasoning has arrived, never in the final message with
``SHOW_REASONING`` off or status, a quoted block above the answer with full. The bot runs on a
:class:`FakeClock`: the seconds of the status are the clock's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.clock import FakeClock
from core.conversations import ConversationKey, Status
from core.delivery import REASONING_CUT
from tests.fakes.discord_server import StoredMessage
from tests.fakes.llm_server import FakeLLMServer, Reply

from .conftest import BotStarter, World, wait_for

THINKING = ["Six ", "times ", "seven.\n", "Done."]
ANSWER = "Forty-two."


def shown(message: StoredMessage) -> list[str]:
    """Every text the message showed: as created, then each edit."""
    return [p["content"] for p in message.payloads if "content" in p]


async def think_then_answer(
    world: World,
    llm: FakeLLMServer,
    start_bot: BotStarter,
    show: str,
    *,
    thinking: list[str] | str = THINKING,
    **scripted: Any,
) -> list[StoredMessage]:
    """The model thinks for 3 s of the bot's clock, then answers :data:`ANSWER`; the bot's
    messages once the reply is complete and shown."""
    clock = FakeClock()
    gate = asyncio.Event()
    llm.enqueue(Reply(deltas=["Forty", "-two."], reasoning=thinking, text_gate=gate, **scripted))
    bot = await start_bot(clock=clock, show_reasoning=show)
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "why?")
    key = ConversationKey("discord", world.general)
    await wait_for(lambda: bot.engine.reply_for(key) is not None)
    reply = bot.engine.reply_for(key)
    assert reply is not None
    await wait_for(lambda: reply.reasoning_text == "".join(thinking))
    if show == "status":
        await wait_for(lambda: bool(server.replies_to(prompt)))  # the status is posted
    for _ in range(3):
        await clock.advance(1.0)
        await asyncio.sleep(0.05)  # an edit reaches the stand-in over loopback
    gate.set()
    await wait_for(lambda: reply.status is Status.COMPLETE)
    for _ in range(100):  # the final edit waits its turn on the bot's clock
        messages = server.replies_to(prompt)
        if messages and messages[-1].content.endswith(ANSWER):
            break
        await clock.advance(0.5)
        await asyncio.sleep(0.01)
    return server.replies_to(prompt)


async def test_status_shows_the_seconds_then_the_answer_alone(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    [message] = await think_then_answer(world, llm, start_bot, "status")
    assert message.content == ANSWER
    texts = shown(message)
    assert texts[0] == "💭 thinking… (0 s) ▌"
    assert "💭 thinking… (3 s) ▌" in texts
    seconds = [t for t in texts if t.startswith("💭")]
    assert seconds == sorted(seconds)  # counting up, never back
    assert not any("Six" in t or "seven" in t for t in texts)


@pytest.mark.parametrize("way", ["reasoning", "think"])
async def test_off_shows_nothing_of_the_thinking(
    world: World, llm: FakeLLMServer, start_bot: BotStarter, way: str
) -> None:
    [message] = await think_then_answer(world, llm, start_bot, "off", reasoning_as=way)
    assert message.content == ANSWER
    assert not any("💭" in t or "Six" in t or "think" in t for t in shown(message))


async def test_think_tag_split_across_chunks_with_status(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    # <th + ink> ... </thi + nk>: the tag never shows, the thinking neither
    [message] = await think_then_answer(world, llm, start_bot, "status", reasoning_as="think")
    assert message.content == ANSWER
    assert not any("<" in t or "Six" in t for t in shown(message))
    assert "💭 thinking… (3 s) ▌" in shown(message)


async def test_full_quotes_the_thinking_above_the_answer(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    [message] = await think_then_answer(world, llm, start_bot, "full")
    assert message.content == f"> Six times seven.\n> Done.\n\n{ANSWER}"
    assert shown(message)[0].startswith("> Six")  # shown while the model thinks


async def test_full_cuts_a_long_thinking_to_fit_and_says_so(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    long = "pondering " * 400  # 4,000 characters: twice a Discord message
    messages = await think_then_answer(world, llm, start_bot, "full", thinking=long)
    assert len(messages) == 1
    quote, answer = messages[0].content.split("\n\n")
    assert answer == ANSWER
    assert quote.startswith("> pondering pondering")
    assert quote.endswith(REASONING_CUT)
    assert len(messages[0].content) <= 2000
    assert len(quote) <= 1000  # half a message
