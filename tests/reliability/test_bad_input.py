"""Bad input through the real Slack and Discord bots: each gets a clear answer or a clean
refusal, nothing crashes, nothing is lost, and nothing the bot writes can ping anyone."""

from __future__ import annotations

import json
import time

from bots.discord import NO_MENTIONS
from core.engine import HELP_TEXT
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import (
    CHANNEL,
    MARKER,
    BotMaker,
    Chat,
    ChatMaker,
    DiscordChat,
    SlackChat,
    chat_messages,
    wait_for,
)


async def still_answers(chat: Chat) -> None:
    """The bot is alive and well afterwards: a normal question gets its normal answer."""
    asked = await chat.ask("still there?")
    await chat.answer(asked, "You said: still there?")


async def refused(chat: Chat, text: str, *, user: str | None = None) -> str:
    """Ask ``text``; wait for the one refusal; the LLM must not have been asked."""
    before = len(chat_messages(chat.llm))
    asked = await chat.ask(text, user=user)
    await wait_for(lambda: len(chat.refusals(asked)) == 1)
    assert len(chat_messages(chat.llm)) == before
    return chat.refusals(asked)[0]


async def test_an_empty_mention_gets_the_help_text(make_chat: ChatMaker) -> None:
    chat = await make_chat()
    assert await refused(chat, "") == HELP_TEXT
    await still_answers(chat)


async def test_whitespace_only_gets_the_help_text(make_chat: ChatMaker) -> None:
    chat = await make_chat()
    assert await refused(chat, "   \t \n\n  ") == HELP_TEXT
    await still_answers(chat)


async def test_a_100_kb_prompt_is_refused_with_the_limit(make_chat: ChatMaker) -> None:
    chat = await make_chat()
    answer = await refused(chat, "x" * 100_000)
    assert "100,000 characters" in answer
    assert "the limit is 8,000" in answer
    await still_answers(chat)


async def test_an_unknown_model_is_refused_and_the_model_stays(make_chat: ChatMaker) -> None:
    chat = await make_chat(llmconnect_allowed_models="local/alpha,local/beta")
    answer = await chat.command("model", "nosuch/thing")
    assert "Available: local/alpha, local/beta." in answer, answer
    # As mention text too (the core grammar), with the same answer.
    mention = await refused(chat, "model nosuch/thing")
    assert "Available: local/alpha, local/beta." in mention
    await still_answers(chat)
    assert chat.llm.requests[-1].json["model"] == "alpha"


async def test_malformed_command_arguments_get_a_clear_answer(make_chat: ChatMaker) -> None:
    chat = await make_chat(llmconnect_allowed_models="local/alpha,local/beta")
    for arg in ("///", "local/", "/alpha", "local/alpha extra words", "\u200b"):
        answer = await chat.command("model", arg)
        assert "Available: local/alpha, local/beta." in answer, (arg, answer)
        assert "Traceback" not in answer
    shown = await chat.command("model")  # no argument: shows the model
    assert "local/alpha" in shown
    await still_answers(chat)
    assert chat.llm.requests[-1].json["model"] == "alpha"


async def test_zero_width_and_right_to_left_text_round_trips_exactly(
    make_chat: ChatMaker,
) -> None:
    chat = await make_chat()
    text = "he\u200bllo \u202eolleh\u202c \u200f\u05e9\u05dc\u05d5\u05dd\u200e \u0645\u0631\u062d\u0628\u0627 \u2066isolate\u2069 e\u0301"
    asked = await chat.ask(text)
    await chat.answer(asked, f"You said: {text}")
    assert chat_messages(chat.llm)[-1] == [{"role": "user", "content": text}]


async def test_only_invisible_characters_get_the_help_text(make_chat: ChatMaker) -> None:
    """Zero-width and direction marks show nothing: like an empty mention, nothing goes to the
    model (it would cost a call for a prompt nobody can read)."""
    chat = await make_chat()
    for text in ("\u200b\u200d\u2060", " \u200e\u200f \ufeff\u2066\u2069 "):
        assert await refused(chat, text) == HELP_TEXT
    await still_answers(chat)


PINGS = "Hey @everyone and @here, <@&{role}>, <!channel>, <!here>, <!everyone>, <@{user}>!"


async def test_echoed_mass_mentions_ping_nobody(make_chat: ChatMaker) -> None:
    chat = await make_chat()
    if isinstance(chat, DiscordChat):
        role, user = chat.world.mod_role, chat.world.bob
    else:
        role, user = "S0TEAM", "U0OTHER"
    pings = PINGS.format(role=role, user=user)
    chat.llm.enqueue(Reply(deltas=[pings[:15], pings[15:40], pings[40:]], delay=0.03))
    asked = await chat.ask("please ping @everyone and the mods")
    await chat.settled(asked)
    [shown] = chat.shown(asked)
    if isinstance(chat, DiscordChat):
        assert shown == pings
        message = chat.server.replies_to(asked.ref)[0]
        assert len(message.payloads) >= 2  # the create and at least one edit
        for payload in message.payloads:
            assert payload["allowed_mentions"] == NO_MENTIONS
    else:
        assert isinstance(chat, SlackChat)
        sent = [
            str(c.args.get("text", ""))
            for c in chat.api.calls
            if c.method in ("chat.postMessage", "chat.update")
        ]
        assert len(sent) >= 2
        for text in sent:  # Slack only pings through <!...> and <@...>
            assert "<!" not in text
            assert "<@" not in text
        assert "&lt;!channel&gt;" in shown
        assert "&lt;@U0OTHER&gt;" in shown
    await still_answers(chat)


async def test_slack_bad_signature_and_replayed_timestamp_get_401(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    client = running.slack
    event = {
        "type": "app_mention",
        "user": "U0USER",
        "text": "<@UBOT> do something",
        "ts": "1690000000.999999",
        "channel": CHANNEL,
        "team": "T0001",
    }
    body = client.event_body(event)
    status, answer = await client.post(body, "application/json", signature="v0=" + "f" * 64)
    assert (status, json.loads(answer)) == (401, {"error": "invalid request"})
    # A request captured and replayed ten minutes later (correctly signed for that time).
    status, _ = await client.post(body, "application/json", timestamp=int(time.time()) - 600)
    assert status == 401
    assert llm.requests == []
    assert [c.method for c in slack_api.calls] == []


async def test_a_blocked_user_is_refused_and_others_still_served(make_chat: ChatMaker) -> None:
    chat = await make_chat(block_other_user=True)
    answer = await refused(chat, "let me in", user=chat.other_user())
    assert answer == "Sorry, you are not allowed to use this bot."
    await still_answers(chat)


async def test_a_flood_from_one_user_is_rate_limited_without_losing_anything(
    make_chat: ChatMaker,
) -> None:
    chat = await make_chat(user_rate_limit=3, user_rate_window=600)
    asks = [await chat.ask(f"prompt {i}") for i in range(6)]
    answers = [f"You said: prompt {i}" for i in range(3)]
    if isinstance(chat, SlackChat):
        await wait_for(
            lambda: sorted(chat.shown(asks[0])) == answers and len(chat.api.ephemeral) == 3
        )
        refusals = [e["text"] for e in chat.api.ephemeral]
    else:
        for asked, answer in zip(asks[:3], answers, strict=True):
            await chat.answer(asked, answer)
        await wait_for(lambda: all(len(chat.refusals(a)) == 1 for a in asks[3:]))
        refusals = [chat.refusals(a)[0] for a in asks[3:]]
    assert len(refusals) == 3
    for text in refusals:
        assert text.startswith("You are sending messages too fast; try again in ")
    assert [m[-1]["content"] for m in chat_messages(chat.llm)] == [f"prompt {i}" for i in range(3)]
    # Another user is not affected by this one's flood.
    other = await chat.ask("my turn", user=chat.other_user())
    await chat.settled(other)
    assert chat.shown(other)[-1] == "You said: my turn"
    assert not any(MARKER in t for t in chat.shown(other))
