"""Slack's AI-app surface through the real front end (bolt over signed HTTP, and Socket Mode,
against the Web API stand-in): suggested prompts when an assistant thread opens, its title from
the first question, and the "is thinking…" status the moment any question arrives (assistant
pane and ordinary threads), shown before the LLM is asked and cleared once text is in.

"Before the LLM is asked" is read off a :class:`~tests.fakes.journal.Journal` both stand-ins
write to as requests arrive: an order, not a time."""

from __future__ import annotations

import asyncio
import json

from bots.slack import SlackBot
from bots.slack.app import HEARD_STATUS
from bots.slack.settings import DEFAULT_SUGGESTED_PROMPTS
from core.clock import FakeClock
from core.conversations import Status
from tests.fakes.journal import Journal
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import CHANNEL, DM, TEAM, USER, BotMaker, SlackClient, next_ts, wait_for

SET_STATUS = "assistant.threads.setStatus"
SET_PROMPTS = "assistant.threads.setSuggestedPrompts"
SET_TITLE = "assistant.threads.setTitle"
CHAT = "/v1/chat/completions"


def asked_after_the_status(journal: Journal) -> bool:
    return journal.first("slack", SET_STATUS) < journal.first("llm", CHAT)


async def test_an_opened_assistant_thread_gets_the_default_suggested_prompts(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot()
    thread_ts = await running.slack.thread_started()

    await wait_for(lambda: (DM, thread_ts) in slack_api.suggested_prompts)
    expected = [{"title": p.title, "message": p.message} for p in DEFAULT_SUGGESTED_PROMPTS]
    assert slack_api.suggested_prompts[(DM, thread_ts)] == expected
    assert [c.status for c in slack_api.calls_to(SET_PROMPTS)] == [200]
    assert slack_api.calls_to(SET_TITLE) == []  # no question yet: no title


async def test_suggested_prompts_come_from_the_setting_four_at_most_and_none_when_empty(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    four = ["One", {"title": "Two", "message": "Second prompt"}, "Three", "Four"]
    running = await make_bot(slack_suggested_prompts=json.dumps(four))
    thread_ts = await running.slack.thread_started()
    await wait_for(lambda: (DM, thread_ts) in slack_api.suggested_prompts)
    assert slack_api.suggested_prompts[(DM, thread_ts)] == [
        {"title": "One", "message": "One"},
        {"title": "Two", "message": "Second prompt"},
        {"title": "Three", "message": "Three"},
        {"title": "Four", "message": "Four"},
    ]

    quiet = await make_bot(slack_suggested_prompts="[]")
    await quiet.slack.thread_started()
    answered = await quiet.slack.mention("still here?", thread_ts=next_ts())
    await wait_for(lambda: len(slack_api.calls_to("chat.stopStream")) == 1)
    assert answered
    assert len(slack_api.calls_to(SET_PROMPTS)) == 1  # only the first bot's


async def test_a_question_in_an_assistant_thread_is_answered_there_in_its_own_conversation(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, journal: Journal
) -> None:
    running = await make_bot()
    thread_ts = await running.slack.thread_started()
    await running.slack.assistant_message("What is   the capital\nof France?", thread_ts)
    await wait_for(
        lambda: slack_api.texts(DM, thread_ts) == ["You said: What is   the capital\nof France?"]
    )
    await wait_for(lambda: slack_api.statuses.get((DM, thread_ts)) == "")

    # The status came the moment the question did, before the LLM was asked; cleared after.
    assert asked_after_the_status(journal)
    assert slack_api.status_history[(DM, thread_ts)] == [HEARD_STATUS, ""]
    # The first question is the thread's title (one line), set once.
    assert slack_api.titles[(DM, thread_ts)] == ["What is the capital of France?"]

    llm.enqueue(Reply(text="Paris, still."))
    await running.slack.assistant_message("And again?", thread_ts)
    await wait_for(lambda: len(slack_api.texts(DM, thread_ts)) == 2)
    assert slack_api.texts(DM, thread_ts)[-1] == "Paris, still."
    assert slack_api.titles[(DM, thread_ts)] == ["What is the capital of France?"]
    assert len(slack_api.calls_to(SET_TITLE)) == 1
    # The thread is one conversation: the second request carries the first question and answer.
    second = llm.requests[-1].turns()
    assert [role for role, _ in second] == ["user", "assistant", "user"]
    assert second[0][1][0].text == "What is   the capital\nof France?"
    assert second[2][1][0].text == "And again?"
    # Each question had its status, each cleared.
    assert slack_api.status_history[(DM, thread_ts)] == [HEARD_STATUS, "", HEARD_STATUS, ""]


async def test_the_llm_is_not_asked_until_the_status_has_reached_slack(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, journal: Journal
) -> None:
    # Slack is slow to take the status (held at the stand-in's door); the bot's clock is a fake
    # one, so the engine's HEARD_WAIT never runs out while it is held.
    gate = slack_api.hold[SET_STATUS] = asyncio.Event()
    clock = FakeClock(1000.0)
    running = await make_bot(clock=clock, slack_streaming="update")
    root = next_ts()
    await running.slack.mention("hello", thread_ts=root)
    await wait_for(lambda: slack_api.held == 1)
    await wait_for(lambda: any(r.status is Status.STREAMING for r in running.engine._last.values()))
    await asyncio.sleep(0.05)  # room for a request that should not come (it would be recorded)
    try:
        assert llm.requests == []
    finally:
        gate.set()
    await wait_for(lambda: bool(llm.requests))
    assert asked_after_the_status(journal)
    for _ in range(200):
        if slack_api.texts(CHANNEL, root) == ["You said: hello"]:
            break
        await clock.advance(0.5)
        await asyncio.sleep(0.01)
    assert slack_api.texts(CHANNEL, root) == ["You said: hello"]


async def test_a_question_in_an_ordinary_thread_shows_the_status_before_the_llm_is_asked(
    make_bot: BotMaker, slack_api: FakeSlackAPI, journal: Journal
) -> None:
    running = await make_bot()  # auto: a thread is answered by a native stream
    root = next_ts()
    await running.slack.mention("hello", thread_ts=root)
    await wait_for(lambda: slack_api.texts(CHANNEL, root) == ["You said: hello"])
    await wait_for(lambda: slack_api.statuses.get((CHANNEL, root)) == "")

    assert asked_after_the_status(journal)
    assert slack_api.status_history[(CHANNEL, root)] == [HEARD_STATUS, ""]
    methods = [c.method for c in slack_api.calls]
    # Cleared once the first text was in, not before.
    assert methods.index("chat.startStream") < len(methods) - 1 - methods[::-1].index(SET_STATUS)
    assert slack_api.calls_to(SET_TITLE) == []  # not an assistant thread


async def test_by_chat_update_the_status_is_cleared_after_the_first_post(
    make_bot: BotMaker, slack_api: FakeSlackAPI, journal: Journal
) -> None:
    running = await make_bot(slack_streaming="update")
    root = next_ts()
    await running.slack.mention("hello", thread_ts=root)
    await wait_for(lambda: slack_api.texts(CHANNEL, root) == ["You said: hello"])
    await wait_for(lambda: slack_api.statuses.get((CHANNEL, root)) == "")

    assert asked_after_the_status(journal)
    entries = [what for source, what in journal.entries if source == "slack"]
    first_post = entries.index("chat.postMessage")
    assert entries.index(SET_STATUS) < first_post
    assert SET_STATUS in entries[first_post:]  # the clear
    assert slack_api.status_history[(CHANNEL, root)] == [HEARD_STATUS, ""]


async def test_an_answer_at_a_channels_top_level_sets_no_status(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot(slack_streaming="update")
    await running.slack.mention("hello")
    await wait_for(lambda: slack_api.texts(CHANNEL) == ["You said: hello"])
    await wait_for(lambda: running.bot._tasks == {})
    assert slack_api.calls_to(SET_STATUS) == []  # Slack's status belongs to a thread


async def test_a_refused_question_has_its_status_cleared(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(user_rate_limit=1, user_rate_window=3600)
    root = next_ts()
    await running.slack.mention("first", thread_ts=root)
    await wait_for(lambda: slack_api.texts(CHANNEL, root) == ["You said: first"])
    await running.slack.mention("second", thread_ts=root)
    await wait_for(lambda: len(slack_api.ephemeral) == 1)
    await wait_for(lambda: slack_api.status_history[(CHANNEL, root)] == [HEARD_STATUS, ""] * 2)
    assert "too fast" in slack_api.ephemeral[0]["text"]
    assert len(llm.requests) == 1


async def test_commands_and_refused_users_get_no_status(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot(blocked_users=USER)
    root = next_ts()
    await running.slack.mention("hello", thread_ts=root)
    await running.slack.mention("help", thread_ts=root, user="U0OTHER")
    await wait_for(lambda: len(slack_api.ephemeral) + len(slack_api.texts(CHANNEL, root)) == 2)
    assert slack_api.calls_to(SET_STATUS) == []


async def test_over_socket_mode_an_opened_thread_gets_its_prompts_and_a_question_its_status(
    slack_api: FakeSlackAPI, journal: Journal, socket_bot: SlackBot
) -> None:
    thread_ts = next_ts()
    envelope = await slack_api.send_envelope(
        "events_api",
        {
            "team_id": TEAM,
            "api_app_id": "A0001",
            "type": "event_callback",
            "event_id": "EvAssist1",
            "event_time": 1,
            "event": SlackClient.thread_started_event(thread_ts),
        },
    )
    assert await slack_api.wait_ack(envelope) == {"envelope_id": envelope}
    await wait_for(lambda: (DM, thread_ts) in slack_api.suggested_prompts)

    question = {
        "type": "message",
        "channel_type": "im",
        "user": USER,
        "text": "over the socket",
        "ts": next_ts(),
        "thread_ts": thread_ts,
        "channel": DM,
        "team": TEAM,
    }
    envelope = await slack_api.send_envelope(
        "events_api",
        {
            "team_id": TEAM,
            "api_app_id": "A0001",
            "type": "event_callback",
            "event_id": "EvAssist2",
            "event_time": 2,
            "event": question,
        },
    )
    await slack_api.wait_ack(envelope)
    await wait_for(lambda: slack_api.texts(DM, thread_ts) == ["You said: over the socket"])
    assert asked_after_the_status(journal)
    assert slack_api.titles[(DM, thread_ts)] == ["over the socket"]
