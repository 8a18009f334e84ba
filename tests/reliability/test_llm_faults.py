"""LLM faults through the real Slack and Discord bots: what the user sees, what is sent next.

Each case scripts the LLM stand-in, asks once, and checks the final visible text (the whole
reply, or the text that had arrived plus one ``⚠️`` line); then asks again and checks the
request the LLM received: a failed turn is not sent, a completed one is.
"""

from __future__ import annotations

from typing import Any

import pytest

from bots.discord.sink import MAX_LEN as DISCORD_MAX_LEN
from bots.slack.sink import UPDATE_MAX_LEN as SLACK_MAX_LEN
from core.conversations import Status
from core.split import split_message
from tests.fakes.llm_server import Fail, Reply

from .conftest import MARKER, Chat, ChatMaker, assert_consistent, chat_messages

WORDS = "one two three four five six seven eight"
FAST_RETRY = {"retry-after-ms": "10"}


def errored(partial: str, note_start: str, texts: list[str]) -> bool:
    """``texts`` is one message: ``partial`` and then a single ``⚠️`` line."""
    if len(texts) != 1:
        return False
    text = texts[0]
    head, sep, note = text.rpartition("\n") if partial else ("", "", text)
    return (
        (sep == "\n" or not partial)
        and head == partial
        and note.startswith(f"⚠️ {note_start}")
        and MARKER not in text
    )


async def ask_after_failure(chat: Chat, first: str) -> None:
    """The failed turn (and its question) is not sent to the LLM; the new question is."""
    nxt = await chat.ask("and now?")
    await chat.answer(nxt, "You said: and now?")
    last = chat_messages(chat.llm)[-1]
    assert last == [{"role": "user", "content": "and now?"}]
    assert first not in str(last)
    assert_consistent(last)


async def check_error(chat: Chat, partial: str, note_start: str) -> None:
    asked = await chat.ask("question one")
    await chat.settled(asked)
    texts = chat.shown(asked)
    assert errored(partial, note_start, texts), texts
    reply = chat.engine.reply_for(chat.key)
    assert reply is not None
    assert reply.status is Status.ERROR
    await ask_after_failure(chat, "question one")


async def test_401_shows_a_short_note_and_is_not_sent_again(make_chat: ChatMaker) -> None:
    chat = await make_chat()
    chat.llm.enqueue(Fail(401))
    await check_error(chat, "", "The provider rejected the API key")
    assert len(chat_messages(chat.llm)) == 2  # a 401 is never retried


async def test_429_then_success_shows_the_whole_reply(make_chat: ChatMaker) -> None:
    chat = await make_chat(llm_max_retries=2)
    chat.llm.enqueue(Fail(429, headers=FAST_RETRY), Reply(text=WORDS))
    asked = await chat.ask("question one")
    await chat.answer(asked, WORDS)
    assert len(chat_messages(chat.llm)) == 2
    nxt = await chat.ask("and now?")
    await chat.answer(nxt, "You said: and now?")
    last = chat_messages(chat.llm)[-1]
    assert last == [
        {"role": "user", "content": "question one"},
        {"role": "assistant", "content": WORDS},
        {"role": "user", "content": "and now?"},
    ]


async def test_500s_until_retries_run_out(make_chat: ChatMaker) -> None:
    chat = await make_chat(llm_max_retries=2)
    chat.llm.enqueue(*[Fail(500, headers=FAST_RETRY) for _ in range(3)])
    await check_error(chat, "", "The provider is unavailable right now")
    assert len(chat_messages(chat.llm)) == 4  # 1 + 2 retries, then the next question


@pytest.mark.parametrize(
    ("fault", "note"),
    [
        ({"drop_after": 3}, "The reply was cut off"),
        ({"error_after": 3}, ""),
        ({"malformed_after": 3}, "The reply was cut off"),
    ],
    ids=["cut", "error-event", "malformed"],
)
async def test_a_stream_broken_in_the_middle_keeps_what_arrived(
    make_chat: ChatMaker, fault: dict[str, Any], note: str
) -> None:
    chat = await make_chat(llm_max_retries=2)
    chat.llm.enqueue(Reply(text=WORDS, **fault))
    await check_error(chat, "one two three ", note)
    assert len(chat_messages(chat.llm)) == 2  # never retried after the first delta


async def test_a_silent_stream_times_out(make_chat: ChatMaker) -> None:
    chat = await make_chat(llm_idle_timeout=0.5)
    chat.llm.enqueue(Reply(text=WORDS, hang_after=2))
    await check_error(chat, "one two ", "The provider took too long")
    assert chat.llm.open_streams == 0  # the hanging stream was closed


async def test_an_answer_ten_messages_long_arrives_whole(make_chat: ChatMaker) -> None:
    chat = await make_chat()
    limit = SLACK_MAX_LEN if chat.name == "slack" else DISCORD_MAX_LEN
    paragraph = " ".join(f"w{i}" for i in range(limit // 15))
    text = "\n\n".join(f"Part {n}. {paragraph}" for n in range(36))
    expected = split_message(text, limit)
    assert len(expected) >= 10
    chat.llm.enqueue(Reply(text=text))
    asked = await chat.ask("write a lot")
    await chat.answer(asked, *expected, tries=3000)
    nxt = await chat.ask("and now?")
    await chat.answer(nxt, "You said: and now?")
    last = chat_messages(chat.llm)[-1]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]
    assert last[1]["content"] == text
