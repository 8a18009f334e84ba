"""Mentions and DMs, POSTed as signed Events API requests to the running bot over HTTP."""

from __future__ import annotations

import socket

import pytest

from core.engine import STORE_UNAVAILABLE
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import CHANNEL, DM, OTHER_CHANNEL, TEAM, USER, BotMaker, next_ts, wait_for


def sent_messages(llm: FakeLLMServer, n: int = -1) -> list[dict[str, str]]:
    """The chat messages the LLM stand-in received in request ``n``."""
    chats = [r for r in llm.requests if r.path.endswith("/chat/completions")]
    return chats[n].json["messages"]


def chat_requests(llm: FakeLLMServer) -> int:
    return sum(1 for r in llm.requests if r.path.endswith("/chat/completions"))


async def test_mention_in_a_channel_is_answered_in_the_channel(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    llm.enqueue(Reply(text="Paris is the capital of **France**."))

    await running.slack.mention("What is the capital of France?")

    await wait_for(lambda: slack_api.texts(CHANNEL) == ["Paris is the capital of *France*."])
    assert sent_messages(llm) == [{"role": "user", "content": "What is the capital of France?"}]
    # The channel's own conversation, at the top level (no thread, no native stream in auto).
    conversation = await running.engine.conversation(running.bot.threads.channel_key(CHANNEL))
    assert [m.role for m in conversation.messages] == ["user", "assistant"]
    assert not slack_api.calls_to("chat.startStream")


async def test_mentions_in_one_channel_share_a_conversation_other_channels_do_not(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    await running.slack.mention("first")
    await wait_for(lambda: slack_api.texts(CHANNEL) == ["You said: first"])
    await running.slack.mention("second")
    await wait_for(lambda: len(slack_api.texts(CHANNEL)) == 2)
    await running.slack.mention("elsewhere", channel=OTHER_CHANNEL)
    await wait_for(lambda: slack_api.texts(OTHER_CHANNEL) == ["You said: elsewhere"])

    assert [m["content"] for m in sent_messages(llm, 1)] == ["first", "You said: first", "second"]
    assert [m["content"] for m in sent_messages(llm, 2)] == ["elsewhere"]


async def test_mention_in_a_thread_streams_natively_in_the_threads_own_conversation(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(llmconnect_system_prompt="Be brief.")
    await running.slack.mention("in the channel")
    await wait_for(lambda: len(slack_api.texts(CHANNEL)) == 1)
    await running.bot.engine.set_model(running.bot.threads.channel_key(CHANNEL), "local/beta")

    root = next_ts()
    await running.slack.mention("in the thread", thread_ts=root)

    await wait_for(lambda: slack_api.texts(CHANNEL, root) == ["You said: in the thread"])
    assert slack_api.thread(CHANNEL, root)[0].streamed
    start = slack_api.calls_to("chat.startStream")[0].args
    assert (start["channel"], start["thread_ts"]) == (CHANNEL, root)
    assert (start["recipient_user_id"], start["recipient_team_id"]) == (USER, TEAM)
    # Its own history, its parent channel's model and system prompt.
    chats = [r.json for r in llm.requests if r.path.endswith("/chat/completions")]
    assert chats[-1]["model"] == "beta"
    assert chats[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "in the thread"},
    ]
    assert slack_api.texts(CHANNEL) == ["You said: in the channel"]  # nothing at the top level


async def test_direct_message_is_answered_in_the_dm_and_follow_ups_continue_it(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()

    question = await running.slack.dm("hello bot")
    # Native streaming can only write in a thread: the answer is under the question.
    await wait_for(lambda: slack_api.texts(DM, question) == ["You said: hello bot"])

    await running.slack.dm("and in the thread?", thread_ts=question)
    await wait_for(lambda: len(slack_api.texts(DM, question)) == 2)
    await running.slack.dm("and at the top?")
    await wait_for(lambda: chat_requests(llm) == 3)

    # One conversation: the DM's, whether the follow-up is in the answer's thread or not.
    assert [m["content"] for m in sent_messages(llm, 1)] == [
        "hello bot",
        "You said: hello bot",
        "and in the thread?",
    ]
    assert len(sent_messages(llm, 2)) == 5


async def test_a_redelivered_event_is_answered_once(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    body = running.slack.event_body(
        {
            "type": "app_mention",
            "user": USER,
            "text": "<@UBOT> once",
            "ts": next_ts(),
            "channel": CHANNEL,
            "team": TEAM,
        },
        event_id="Ev-same",
    )
    for _ in range(2):
        status, _ = await running.slack.post(body, "application/json")
        assert status == 200

    await wait_for(lambda: slack_api.texts(CHANNEL) == ["You said: once"])
    assert chat_requests(llm) == 1


async def test_a_redelivery_to_another_worker_is_answered_once(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, fresh_redis_url: str
) -> None:
    # Two HTTP workers behind one load balancer share Redis; Slack's retry lands on the other.
    first = await make_bot(store_url=fresh_redis_url)
    second = await make_bot(store_url=fresh_redis_url)
    body = first.slack.event_body(
        {
            "type": "app_mention",
            "user": USER,
            "text": "<@UBOT> only once",
            "ts": next_ts(),
            "channel": CHANNEL,
            "team": TEAM,
        },
        event_id="Ev-retried",
    )
    for worker in (first, second, second):
        status, _ = await worker.slack.post(body, "application/json")
        assert status == 200

    await wait_for(lambda: slack_api.texts(CHANNEL) == ["You said: only once"])
    for running in (first, second):
        await running.bot.aclose()  # every delivery has finished: a second answer would be here
    assert slack_api.texts(CHANNEL) == ["You said: only once"]
    assert chat_requests(llm) == 1


async def test_an_unreachable_store_is_said_to_the_asker(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    with socket.socket() as probe:  # a port nothing listens on: Redis is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = await make_bot(store_url=f"redis://127.0.0.1:{port}/0")
    await running.slack.mention("anyone home?")
    await wait_for(lambda: len(slack_api.ephemeral) == 1)
    assert slack_api.ephemeral[0]["text"] == STORE_UNAVAILABLE
    assert chat_requests(llm) == 0
    assert slack_api.texts(CHANNEL) == []


async def test_bot_messages_edits_and_other_subtypes_are_ignored(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    base = {"type": "message", "channel_type": "im", "channel": DM, "team": TEAM}
    for extra in (
        {"user": "UBOT", "bot_id": "BBOT", "text": "my own answer"},
        {"user": "UOTHERBOT", "bot_id": "B2", "text": "another bot"},
        {"subtype": "message_changed", "message": {"text": "edited"}},
        {"user": USER, "subtype": "channel_join", "text": "joined"},
    ):
        status, _ = await running.slack.event({**base, **extra, "ts": next_ts()})
        assert status == 200
    await running.slack.dm("the real one")

    await wait_for(lambda: chat_requests(llm) == 1)
    assert sent_messages(llm)[-1]["content"] == "the real one"


async def test_events_the_filters_drop_are_acknowledged_and_nothing_else_happens(
    make_bot: BotMaker,
    slack_api: FakeSlackAPI,
    llm: FakeLLMServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bolt listener middleware (well-formed, in a channel / from a person, once) answer
    200 for what they drop: Slack must not redeliver it, and bolt sees it handled."""
    running = await make_bot()
    mention = {"type": "app_mention", "text": "<@UBOT> hi", "team": TEAM}
    dropped = [
        {**mention, "user": USER, "channel": DM},  # a DM's mention: answered as its message
        {**mention, "channel": CHANNEL},  # no user
        {"type": "message", "channel_type": "im", "channel": DM, "subtype": "message_deleted"},
        {"type": "app_mention", "user": ["U1"], "text": 5, "channel": CHANNEL},  # wrong types
    ]
    for event in dropped:
        status, answer = await running.slack.event({**event, "ts": next_ts()})
        assert (status, answer) == (200, "")
    repeated = running.slack.event_body(
        {**mention, "user": USER, "channel": CHANNEL, "ts": next_ts()}, event_id="Ev-twice"
    )
    for _ in range(2):
        assert await running.slack.post(repeated, "application/json") == (200, "")

    await wait_for(lambda: slack_api.texts(CHANNEL) == ["You said: hi"])
    await running.bot.aclose()  # every delivery has finished: another answer would be here
    assert chat_requests(llm) == 1
    assert slack_api.texts(DM) == []
    assert not [r for r in caplog.records if "nhandled" in r.getMessage()]


async def test_command_in_mention_text_goes_through_the_core_grammar(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    root = next_ts()

    await running.slack.mention("model local/beta", thread_ts=root)
    await wait_for(lambda: len(slack_api.ephemeral) == 1)
    assert slack_api.ephemeral[0]["text"] == "Model for this conversation is now local/beta."
    assert slack_api.ephemeral[0]["thread_ts"] == root

    await running.slack.mention("help me write a poem", thread_ts=root)  # a prompt, not help
    await wait_for(lambda: chat_requests(llm) == 1)
    chat = next(r.json for r in llm.requests if r.path.endswith("/chat/completions"))
    assert chat["model"] == "beta"
    assert chat["messages"][-1]["content"] == "help me write a poem"


async def test_refusals_are_shown_only_to_the_asker_and_nothing_runs(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(blocked_users="U0TROLL", max_input_chars=20)

    await running.slack.mention("hello", user="U0TROLL")
    await running.slack.mention("x" * 21)
    await wait_for(lambda: len(slack_api.ephemeral) == 2)

    texts = sorted(e["text"] for e in slack_api.ephemeral)
    assert texts[0] == "Sorry, you are not allowed to use this bot."
    assert "the limit is 20" in texts[1]
    assert chat_requests(llm) == 0
    assert slack_api.texts(CHANNEL) == []


async def test_a_thread_of_an_allowed_channel_is_served(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(allowed_channels=CHANNEL)
    root = next_ts()
    await running.slack.mention("in an allowed thread", thread_ts=root)
    await running.slack.mention("elsewhere", channel=OTHER_CHANNEL)

    await wait_for(lambda: slack_api.texts(CHANNEL, root) == ["You said: in an allowed thread"])
    await wait_for(lambda: len(slack_api.ephemeral) == 1)
    assert slack_api.ephemeral[0]["text"] == "I am not enabled in this channel."
    assert chat_requests(llm) == 1


# ------------------------------------------------------------ follow-ups without a mention


async def test_a_thread_follow_up_without_a_mention_is_answered_in_the_thread(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    root = next_ts()
    await running.slack.mention("first question", thread_ts=root)
    await wait_for(lambda: slack_api.texts(CHANNEL, root) == ["You said: first question"])

    await running.slack.message("and a follow-up", thread_ts=root)

    await wait_for(lambda: len(slack_api.texts(CHANNEL, root)) == 2)
    assert slack_api.texts(CHANNEL, root)[1] == "You said: and a follow-up"
    # The thread's own conversation goes on.
    assert [m["content"] for m in sent_messages(llm)] == [
        "first question",
        "You said: first question",
        "and a follow-up",
    ]
    assert slack_api.texts(CHANNEL) == []  # nothing at the top level


async def test_a_top_level_answer_in_its_thread_takes_follow_ups_there(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    """Native streaming answers a top-level mention under the question: that thread is one the
    bot answered in, and a follow-up there continues the channel's conversation."""
    running = await make_bot(slack_streaming="native")
    question = await running.slack.mention("top question")
    await wait_for(lambda: slack_api.texts(CHANNEL, question) == ["You said: top question"])

    await running.slack.message("more", thread_ts=question)

    await wait_for(lambda: len(slack_api.texts(CHANNEL, question)) == 2)
    assert [m["content"] for m in sent_messages(llm)][-1] == "more"
    conversation = await running.engine.conversation(running.bot.threads.channel_key(CHANNEL))
    assert [m.content for m in conversation.messages][-2:] == ["more", "You said: more"]


async def test_messages_elsewhere_and_with_follow_ups_off_are_not_prompts(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    answered, other = next_ts(), next_ts()
    await running.slack.mention("question", thread_ts=answered)
    await wait_for(lambda: len(slack_api.texts(CHANNEL, answered)) == 1)

    await running.slack.message("in another thread", thread_ts=other)
    await running.slack.message("at the top level")
    await running.slack.message("elsewhere", channel=OTHER_CHANNEL)
    await running.slack.mention("the real one", thread_ts=answered)
    await wait_for(lambda: len(slack_api.texts(CHANNEL, answered)) == 2)
    await running.bot.aclose()
    assert chat_requests(llm) == 2
    assert slack_api.texts(CHANNEL, other) == []
    assert slack_api.texts(CHANNEL) == []
    assert slack_api.texts(OTHER_CHANNEL) == []

    off = await make_bot(follow_up_in_threads=False)
    root = next_ts()
    await off.slack.mention("question", thread_ts=root)
    await wait_for(lambda: chat_requests(llm) == 3)
    await off.slack.message("follow-up, ignored", thread_ts=root)
    await off.slack.mention("mentioned again", thread_ts=root)
    await wait_for(lambda: len(slack_api.texts(CHANNEL, root)) == 2)
    await off.bot.aclose()
    assert chat_requests(llm) == 4
    assert sent_messages(llm)[-1]["content"] == "mentioned again"


async def test_every_message_in_an_auto_reply_channel_is_a_prompt(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(auto_reply_channels=OTHER_CHANNEL)

    await running.slack.message("no mention needed", channel=OTHER_CHANNEL)

    await wait_for(lambda: slack_api.texts(OTHER_CHANNEL) == ["You said: no mention needed"])
    await running.slack.message("not here", channel=CHANNEL)
    await running.slack.message("second", channel=OTHER_CHANNEL)
    await wait_for(lambda: len(slack_api.texts(OTHER_CHANNEL)) == 2)
    await running.bot.aclose()
    assert chat_requests(llm) == 2
    assert slack_api.texts(CHANNEL) == []


async def test_bot_messages_are_ignored_unless_allowed_and_its_own_always(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(auto_reply_channels=OTHER_CHANNEL)
    root = next_ts()
    await running.slack.mention("question", thread_ts=root)
    await wait_for(lambda: len(slack_api.texts(CHANNEL, root)) == 1)

    own = {"user": "UBOT", "bot_id": "BBOT"}
    other_bot = {"user": "UOTHERBOT", "bot_id": "B2"}
    await running.slack.message("my own answer", thread_ts=root, **own)
    await running.slack.message("another bot", thread_ts=root, **other_bot)
    await running.slack.message(
        "legacy bot", channel=OTHER_CHANNEL, subtype="bot_message", user="", bot_id="B3"
    )
    await running.slack.message("own in auto", channel=OTHER_CHANNEL, **own)
    bot_mention = {"type": "app_mention", "text": "<@UBOT> hi", "channel": CHANNEL, "team": TEAM}
    status, _ = await running.slack.event({**bot_mention, **other_bot, "ts": next_ts()})
    assert status == 200
    await running.slack.message("the real one", thread_ts=root)
    await wait_for(lambda: len(slack_api.texts(CHANNEL, root)) == 2)
    await running.bot.aclose()
    assert chat_requests(llm) == 2
    assert slack_api.texts(OTHER_CHANNEL) == []

    allowed = await make_bot(auto_reply_channels=OTHER_CHANNEL, allow_bots=True)
    await allowed.slack.message("own, never", channel=OTHER_CHANNEL, **own)
    await allowed.slack.message("another bot", channel=OTHER_CHANNEL, **other_bot)
    await wait_for(lambda: slack_api.texts(OTHER_CHANNEL) == ["You said: another bot"])
    await allowed.bot.aclose()
    assert chat_requests(llm) == 3


async def test_a_mention_that_is_also_a_message_event_is_answered_once(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    """Slack sends ``app_mention`` and ``message.channels`` for a mention (two event ids)."""
    running = await make_bot(auto_reply_channels=OTHER_CHANNEL)
    root = next_ts()
    await running.slack.mention("first", thread_ts=root)
    await wait_for(lambda: len(slack_api.texts(CHANNEL, root)) == 1)

    for channel, thread in ((CHANNEL, root), (OTHER_CHANNEL, None)):
        ts = await running.slack.message("<@UBOT> both", channel=channel, thread_ts=thread)
        await running.slack.mention("both", channel=channel, thread_ts=thread, ts=ts)
    await wait_for(lambda: chat_requests(llm) == 3)
    await running.bot.aclose()
    assert chat_requests(llm) == 3
    assert slack_api.texts(CHANNEL, root) == ["You said: first", "You said: both"]
    assert slack_api.texts(OTHER_CHANNEL) == ["You said: both"]


async def test_the_per_user_rate_limit_applies_to_follow_ups(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(user_rate_limit=1, auto_reply_channels=OTHER_CHANNEL)
    root = next_ts()
    await running.slack.mention("question", thread_ts=root)
    await wait_for(lambda: len(slack_api.texts(CHANNEL, root)) == 1)

    await running.slack.message("follow-up", thread_ts=root)
    await running.slack.message("auto", channel=OTHER_CHANNEL)

    await wait_for(lambda: len(slack_api.ephemeral) == 2)
    await running.bot.aclose()
    assert chat_requests(llm) == 1
    assert all("sending messages too fast" in e["text"] for e in slack_api.ephemeral)
    assert {e["user"] for e in slack_api.ephemeral} == {USER}
