"""How answers reach Slack: native streams, post + throttled edits, fallbacks, limits, 429s."""

from __future__ import annotations

import asyncio

from bots.slack.sink import UPDATE_MAX_LEN
from bots.slack.streaming import NATIVE_MAX_LEN
from core.clock import FakeClock
from core.conversations import ConversationKey, Status
from tests.fakes.llm_server import Fail, FakeLLMServer, Reply
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import CHANNEL, TEAM, USER, BotMaker, next_ts, wait_for


def long_text(chars: int) -> str:
    """Plain paragraphs (nothing mrkdwn would change), ``chars`` characters or a little more."""
    words, size, n = [], 0, 0
    while size < chars:
        word = f"word{n}" + ("\n\n" if n % 60 == 59 else " ")
        words.append(word)
        size += len(word)
        n += 1
    return "".join(words).rstrip() + " end."


def joined(parts: list[str]) -> str:
    """The messages of a split answer read as one text (the split only moves whitespace)."""
    return " ".join(" ".join(p.split()) for p in parts)


def flat(text: str) -> str:
    return " ".join(text.split())


async def test_native_stream_sends_markdown_chunks_and_ends_on_the_whole_answer(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    answer = "Here is **bold** and `code`:\n\n```python\nprint(1 < 2)\n```\n" + long_text(600)
    llm.enqueue(Reply(text=answer))
    root = next_ts()

    await running.slack.mention("show me", thread_ts=root)

    # The whole text may be appended before the stop: wait for the stop too.
    await wait_for(lambda: len(slack_api.calls_to("chat.stopStream")) == 1)
    assert slack_api.texts(CHANNEL, root) == [answer]
    [message] = slack_api.thread(CHANNEL, root)
    assert message.streamed
    assert not message.streaming
    # slack-sdk 3.48 sends the text as chunks; Slack renders the Markdown itself.
    start = slack_api.calls_to("chat.startStream")[0].args
    assert start["chunks"][0]["type"] == "markdown_text"
    assert "markdown_text" not in start
    assert len(slack_api.calls_to("chat.stopStream")) == 1
    assert not slack_api.calls_to("chat.update")


async def test_update_mode_converts_markdown_to_mrkdwn_and_escapes_control_characters(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="update")
    llm.enqueue(Reply(text="# Title\n**bold** [docs](https://x.test/?a=1&b=2) <!channel>"))
    root = next_ts()

    await running.slack.mention("format", thread_ts=root)

    expected = "*Title*\n*bold* <https://x.test/?a=1&amp;b=2|docs> &lt;!channel&gt;"
    await wait_for(lambda: slack_api.texts(CHANNEL, root) == [expected])
    assert not slack_api.calls_to("chat.startStream")
    assert slack_api.calls_to("chat.postMessage")[0].args["thread_ts"] == root


async def test_a_long_answer_continues_in_further_messages_by_updates(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    answer = long_text(3 * UPDATE_MAX_LEN)
    llm.enqueue(Reply(text=answer))

    await running.slack.mention("a long story")

    await wait_for(lambda: flat(joined(slack_api.texts(CHANNEL))) == flat(answer), tries=2000)
    texts = slack_api.texts(CHANNEL)
    assert len(texts) >= 3
    assert all(len(t) <= UPDATE_MAX_LEN for t in texts)
    assert not any(t.endswith("▌") for t in texts)


async def test_a_long_native_answer_continues_in_further_streams(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    answer = long_text(NATIVE_MAX_LEN + NATIVE_MAX_LEN // 2)
    llm.enqueue(Reply(text=answer))
    root = next_ts()

    await running.slack.mention("a very long story", thread_ts=root)

    await wait_for(lambda: flat(joined(slack_api.texts(CHANNEL, root))) == flat(answer), tries=2000)
    messages = slack_api.thread(CHANNEL, root)
    assert len(messages) == 2
    assert all(m.streamed and not m.streaming for m in messages)
    assert all(len(m.text) <= NATIVE_MAX_LEN for m in messages)


async def test_an_expired_stream_continues_by_chat_update_in_the_same_message(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    slack_api.expire_streams_after = 1  # the second append finds the stream expired
    answer = long_text(400)
    llm.enqueue(Reply(text=answer, delay=0.005))
    root = next_ts()

    await running.slack.mention("take your time", thread_ts=root)

    await wait_for(lambda: slack_api.texts(CHANNEL, root) == [answer])
    [message] = slack_api.thread(CHANNEL, root)
    assert message.streamed
    assert message.updates >= 1
    errors = [c.error for c in slack_api.calls if c.error]
    assert "message_not_in_streaming_state" in errors
    reply = running.engine.reply_for(ConversationKey("slack", f"{CHANNEL}/{root}"))
    assert reply is not None
    assert reply.status is Status.COMPLETE


async def test_without_native_streaming_the_answer_is_posted_and_edited(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    slack_api.fail["chat.startStream"] = "not_allowed_token_type"
    root = next_ts()

    await running.slack.mention("no streams here", thread_ts=root)

    await wait_for(lambda: slack_api.texts(CHANNEL, root) == ["You said: no streams here"])
    [message] = slack_api.thread(CHANNEL, root)
    assert not message.streamed


async def test_rate_limited_updates_lose_nothing(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="update", slack_final_update_gap=0)
    slack_api.update_interval = 0.05  # faster updates of one message get 429 + Retry-After
    answer = long_text(UPDATE_MAX_LEN + 1500)
    llm.enqueue(Reply(text=answer, delay=0.0005))

    await running.slack.mention("under pressure")

    await wait_for(lambda: flat(joined(slack_api.texts(CHANNEL))) == flat(answer), tries=3000)
    limited = [c for c in slack_api.calls_to("chat.update") if c.status == 429]
    assert limited, "the stand-in never rate limited: the test proves nothing"
    assert len(slack_api.texts(CHANNEL)) == 2


async def test_native_everywhere_answers_a_channel_question_in_its_thread(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="native")

    question = await running.slack.mention("first")
    await wait_for(lambda: slack_api.texts(CHANNEL, question) == ["You said: first"])
    start = slack_api.calls_to("chat.startStream")[0].args
    assert (start["recipient_user_id"], start["recipient_team_id"]) == (USER, TEAM)

    # A follow-up in that thread continues the channel's conversation.
    await running.slack.mention("second", thread_ts=question)
    await wait_for(lambda: len(slack_api.texts(CHANNEL, question)) == 2)
    last = [r.json for r in llm.requests if r.path.endswith("/chat/completions")][-1]
    assert [m["content"] for m in last["messages"]] == ["first", "You said: first", "second"]


async def test_a_provider_error_ends_the_answer_with_a_short_note(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    llm.enqueue(Fail(401), Fail(401))
    root = next_ts()

    await running.slack.mention("in the channel")
    await running.slack.mention("in a thread", thread_ts=root)

    def shown() -> list[str]:
        return slack_api.texts(CHANNEL) + slack_api.texts(CHANNEL, root)

    await wait_for(lambda: len(shown()) == 2 and all(t.startswith("⚠️") for t in shown()))
    for text in shown():
        assert text.startswith("⚠️ The provider rejected the API key")
        assert "\n" not in text
        assert "Traceback" not in text


async def test_a_deleted_answer_stops_the_generation(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="update")
    llm.enqueue(Reply(text=long_text(2000), delay=0.002))
    key = running.bot.threads.channel_key(CHANNEL)

    await running.slack.mention("go on")
    await wait_for(lambda: len(slack_api.texts(CHANNEL)) == 1)
    slack_api.messages.clear()  # someone deleted the answer

    await wait_for(lambda: not running.engine.is_busy(key))
    assert running.engine.reply_for(key).status is Status.CANCELLED  # type: ignore[union-attr]
    assert slack_api.texts(CHANNEL) == []


async def test_a_workspace_without_streaming_is_answered_by_updates_from_then_on(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    slack_api.fail["chat.startStream"] = "unknown_method"
    first, second = next_ts(), next_ts()

    await running.slack.mention("one", thread_ts=first)
    await wait_for(lambda: slack_api.texts(CHANNEL, first) == ["You said: one"])
    await running.slack.mention("two", thread_ts=second)
    await wait_for(lambda: slack_api.texts(CHANNEL, second) == ["You said: two"])

    assert len(slack_api.calls_to("chat.startStream")) == 1  # tried once, then remembered


async def test_stop_in_a_thread_ends_the_native_stream_with_what_was_written(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    llm.enqueue(Reply(text="one two three four", hang_after=2))
    root = next_ts()

    await running.slack.mention("count", thread_ts=root)
    await wait_for(lambda: slack_api.texts(CHANNEL, root) == ["one two "])
    await running.slack.mention("stop", thread_ts=root)

    await wait_for(lambda: slack_api.texts(CHANNEL, root) == ["one two \n⏹ stopped"])
    [message] = slack_api.thread(CHANNEL, root)
    assert message.streamed
    assert not message.streaming
    await wait_for(lambda: [e["text"] for e in slack_api.ephemeral] == ["Stopped."])


async def test_the_final_update_waits_the_message_gap_not_the_edit_interval(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    """An edit interval of a minute: the final chat.update goes once the stand-in's per-message
    gap (0.3 s here) has passed, without a 429. Before, it waited the whole interval."""
    running = await make_bot(
        slack_streaming="update", slack_edit_interval=60.0, slack_final_update_gap=0.3
    )
    slack_api.update_interval = 0.3  # a faster update of one message gets 429
    answer = long_text(300)
    llm.enqueue(Reply(text=answer, delay=0.002))

    await running.slack.mention("quickly")

    await wait_for(lambda: flat(joined(slack_api.texts(CHANNEL))) == flat(answer))
    assert [c for c in slack_api.calls_to("chat.update") if c.status == 429] == []


async def test_a_stream_that_fell_back_to_updates_sends_its_final_one_update_gap_later(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    clock = FakeClock(1000.0)
    running = await make_bot(clock=clock, slack_edit_interval=30.0, slack_final_update_gap=1.0)
    slack_api.expire_streams_after = 0  # the first append finds the stream expired
    llm.enqueue(Reply(deltas=["one ", "two ", "three"], delay=0.3))
    root = next_ts()
    await running.slack.mention("slowly", thread_ts=root)
    await wait_for(lambda: bool(running.engine._last))
    [reply] = running.engine._last.values()
    await wait_for(lambda: slack_api.texts(CHANNEL, root) == ["one "])  # the stream starts
    await wait_for(lambda: "two" in reply.text)
    await clock.advance(30.0)  # the next append is due: the stream expired, updates take over
    await wait_for(lambda: slack_api.thread(CHANNEL, root)[0].updates == 1)
    await wait_for(lambda: reply.status is Status.COMPLETE)
    for _ in range(8):  # the final goes one update gap (1 s) after the last update, not 30 s
        if slack_api.texts(CHANNEL, root) == ["one two three"]:
            break
        await clock.advance(0.25)
        await asyncio.sleep(0.02)
    assert slack_api.texts(CHANNEL, root) == ["one two three"]
    assert clock.now() <= 1032.0
