"""Safety: nothing the bot sends pings anyone, secrets stay out of logs, access lists hold."""

from __future__ import annotations

import logging

import discord
import pytest

from bots.discord import NO_MENTIONS
from tests.fakes.llm_server import FakeLLMServer, Reply

from .conftest import BotStarter, World, wait_for

EPHEMERAL = 1 << 6


def pings(world: World) -> str:
    return f"Hey @everyone and @here, <@&{world.mod_role}> and <@{world.bob}>: read this!"


async def test_an_llm_reply_with_mentions_pings_nobody_on_create_and_every_edit(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    text = pings(world)
    llm.enqueue(Reply(deltas=[text[:10], text[10:25], text[25:]], delay=0.05))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "say it")
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == [text])
    message = server.replies_to(prompt)[0]
    assert len(message.payloads) >= 2  # the create and at least one edit
    for payload in message.payloads:
        assert payload["allowed_mentions"] == NO_MENTIONS == {"parse": [], "replied_user": False}


async def test_slash_answers_ping_nobody_either(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    text = pings(world)
    llm.enqueue(Reply(deltas=[text[:20], text[20:]], delay=0.05))
    await start_bot()
    server = world.server
    asked = await server.slash(world.general, world.alice, "ask", prompt="say it")
    await wait_for(lambda: [m.content for m in server.interaction_messages(asked)] == [text])
    for payload in server.interaction_messages(asked)[0].payloads[1:]:  # [0]: the defer
        assert payload["allowed_mentions"] == NO_MENTIONS
    # Command answers sent by discord.py itself carry "parse nothing" as well.
    helped = await server.slash(world.general, world.alice, "help")
    await wait_for(lambda: helped.responded)
    assert helped.callbacks[0]["data"]["allowed_mentions"]["parse"] == []


async def test_default_intents_only(world: World, start_bot: BotStarter) -> None:
    await start_bot()
    identified = world.server.intents
    assert identified is not None
    assert identified == discord.Intents.default().value
    assert not discord.Intents._from_value(identified).message_content


async def test_message_content_intent_only_when_asked_for(
    world: World, start_bot: BotStarter
) -> None:
    await start_bot(discord_message_content=True)
    identified = world.server.intents
    assert identified is not None
    assert discord.Intents._from_value(identified).message_content
    assert (
        identified == discord.Intents.default().value | discord.Intents(message_content=True).value
    )


async def test_no_secret_in_any_log_line_or_repr(
    world: World, llm: FakeLLMServer, start_bot: BotStarter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bot = await start_bot()
    server = world.server
    server.inject_429(1, retry_after=0.01, is_global=True, methods=("PATCH", "POST"))
    llm.enqueue(Reply(deltas=["a ", "b ", "c"], delay=0.03))
    prompt = await server.send_message(world.general, world.alice, "hi")
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == ["a b c"])
    asked = await server.slash(world.general, world.alice, "ask", prompt="x")
    await wait_for(
        lambda: [m.content for m in server.interaction_messages(asked)] == ["You said: x"]
    )
    assert server.rate_limited  # the 429 path ran and logged
    assert server.token not in caplog.text
    for obj in (bot.rest, bot.settings, bot):
        assert server.token not in repr(obj)
    assert asked.token not in repr(bot.rest)


async def test_allowed_roles_and_channels(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot(allowed_roles=world.mod_role, allowed_channels=world.general)
    server = world.server
    refused = await server.send_message(world.general, world.alice, "hi")
    await wait_for(lambda: bool(server.replies_to(refused)))
    assert server.replies_to(refused)[0].content == "Sorry, you are not allowed to use this bot."
    served = await server.send_message(world.thread, world.mod, "in the thread")
    await wait_for(
        lambda: [m.content for m in server.replies_to(served)] == ["You said: in the thread"]
    )
    ignored = await server.send_message(world.random, world.mod, "elsewhere")
    slashed = await server.slash(world.random, world.mod, "reset")
    await wait_for(lambda: slashed.responded)
    assert slashed.callbacks[0]["data"]["content"] == "I am not enabled in this channel."
    assert slashed.callbacks[0]["data"]["flags"] & EPHEMERAL
    assert server.replies_to(ignored) == []  # a channel the bot is not enabled in: silence
    assert len(llm.requests) == 1


async def test_blocked_users_roles_and_channels(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot(
        blocked_users=world.bob, blocked_roles=world.mod_role, blocked_channels=world.general
    )
    server = world.server
    for user in (world.bob, world.mod):
        message = await server.send_message(world.random, user, "hi")
        await wait_for(lambda message=message: bool(server.replies_to(message)))
        assert (
            server.replies_to(message)[0].content == "Sorry, you are not allowed to use this bot."
        )
    # The blocked channel and its threads are ignored.
    await server.send_message(world.general, world.alice, "hi")
    await server.send_message(world.thread, world.alice, "hi")
    ok = await server.send_message(world.random, world.alice, "fine")
    await wait_for(lambda: [m.content for m in server.replies_to(ok)] == ["You said: fine"])
    assert len(llm.requests) == 1
    assert server.bot_messages(world.general) == []
    assert server.bot_messages(world.thread) == []


def long_reply_with_pings(world: World) -> str:
    """Over two Discord messages, with mentions in the part only the later messages carry."""
    return "word " * 500 + pings(world) + " more " * 200 + pings(world)


async def test_every_message_of_a_reply_over_2000_characters_pings_nobody(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    text = long_reply_with_pings(world)
    assert len(text) > 2 * 2000 - 1000
    llm.enqueue(Reply(deltas=[text[i : i + 300] for i in range(0, len(text), 300)], delay=0.02))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "say it at length")
    await wait_for(
        lambda: (
            "".join(m.content for m in server.replies_to(prompt))
            .replace("\n", "")
            .count("read this!")
            == 2
        ),
        tries=3000,
    )
    messages = server.replies_to(prompt)
    assert len(messages) >= 2
    assert any("@everyone" in m.content for m in messages[1:])  # a later message has the pings
    for message in messages:
        for payload in message.payloads:
            assert payload["allowed_mentions"] == NO_MENTIONS, message.id


async def test_ask_follow_ups_of_a_long_answer_ping_nobody(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    text = long_reply_with_pings(world)
    llm.enqueue(Reply(deltas=[text[i : i + 300] for i in range(0, len(text), 300)], delay=0.02))
    await start_bot()
    server = world.server
    asked = await server.slash(world.general, world.alice, "ask", prompt="say it at length")
    await wait_for(
        lambda: (
            "".join(m.content for m in server.interaction_messages(asked)).count("read this!") == 2
        ),
        tries=3000,
    )
    messages = server.interaction_messages(asked)
    assert len(messages) >= 2
    assert asked.followup_ids  # the answer went on in follow-up messages
    assert any("@everyone" in m.content for m in messages[1:])
    for message in messages[1:]:  # follow-ups: their create and every edit
        assert message.payloads
        for payload in message.payloads:
            assert payload["allowed_mentions"] == NO_MENTIONS, message.id
    for payload in messages[0].payloads[1:]:  # the original: [0] is the defer
        assert payload["allowed_mentions"] == NO_MENTIONS
