"""The Slack stand-in itself, driven by slack-sdk: what tests rely on it to record and enforce."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.models.messages.chunk import MarkdownTextChunk, TaskUpdateChunk
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.journal import Journal
from tests.fakes.slack_api import SLACK_LIMITS, FakeSlackAPI, MethodLimit


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlackAPI]:
    async with FakeSlackAPI() as api:
        yield api


def client(api: FakeSlackAPI, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or api.bot_token, base_url=api.api_url)


async def test_streamed_text_is_visible_whether_sent_as_markdown_text_or_chunks(
    slack: FakeSlackAPI,
) -> None:
    web = client(slack)
    started = await web.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="Hello")
    await web.chat_appendStream(
        channel="D1", ts=started["ts"], chunks=[{"type": "markdown_text", "text": ", wor"}]
    )
    await web.chat_stopStream(channel="D1", ts=started["ts"], markdown_text="ld!")

    [message] = slack.thread("D1", "1.0")
    assert message.text == "Hello, world!"
    assert message.history == ["Hello", "Hello, wor", "Hello, world!"]
    assert not message.streaming
    with pytest.raises(SlackApiError, match="message_not_in_streaming_state"):
        await web.chat_appendStream(channel="D1", ts=started["ts"], markdown_text="more")


async def test_task_update_chunks_are_kept_as_cards_where_they_came_in_the_text(
    slack: FakeSlackAPI,
) -> None:
    """slack-sdk's own chunk classes, as an app would send them."""
    web = client(slack)
    started = await web.chat_startStream(
        channel="D1",
        thread_ts="1.0",
        chunks=[
            MarkdownTextChunk(text="Let me add."),
            TaskUpdateChunk(id="t1", title="files.add(a=2, b=3)", status="in_progress"),
        ],
    )
    await web.chat_appendStream(
        channel="D1",
        ts=started["ts"],
        chunks=[
            TaskUpdateChunk(id="t1", title="files.add(a=2, b=3)", status="complete", output="5"),
            MarkdownTextChunk(text=" It is 5."),
        ],
    )
    await web.chat_stopStream(channel="D1", ts=started["ts"])

    [message] = slack.thread("D1", "1.0")
    assert message.text == "Let me add. It is 5."
    assert message.tasks == {
        "t1": {"id": "t1", "title": "files.add(a=2, b=3)", "status": "complete", "output": "5"}
    }
    assert [u["status"] for u in message.task_updates] == ["in_progress", "complete"]
    assert message.task_at == {"t1": len("Let me add.")}


@pytest.mark.parametrize(
    "chunk",
    [
        {"type": "task_update", "id": "t1", "title": "x", "status": "done"},
        {"type": "task_update", "title": "x", "status": "complete"},
        {"type": "task_update", "id": "t1", "title": "", "status": "complete"},
        {"type": "task_update", "id": "t1", "title": "x", "status": "error", "output": 5},
        {"type": "markdown_text"},
        {"type": "progress", "text": "x"},
        "task_update",
    ],
)
async def test_a_malformed_chunk_is_refused_and_changes_nothing(
    slack: FakeSlackAPI, chunk: object
) -> None:
    web = client(slack)
    started = await web.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="Hi")
    body = {"channel": "D1", "ts": started["ts"], "chunks": [chunk]}
    for method in ("chat.appendStream", "chat.stopStream"):
        with pytest.raises(SlackApiError, match="invalid_arguments"):
            await web.api_call(method, json=body)
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        await web.api_call(
            "chat.startStream", json={"channel": "D1", "thread_ts": "2.0", "chunks": [chunk]}
        )
    [message] = slack.thread("D1", "1.0")
    assert (message.text, message.tasks, message.streaming) == ("Hi", {}, True)
    assert slack.thread("D1", "2.0") == []


async def test_streams_in_channels_need_a_thread_and_recipients(slack: FakeSlackAPI) -> None:
    web = client(slack)
    with pytest.raises(SlackApiError, match="missing_recipient_user_id"):
        await web.chat_startStream(channel="C1", thread_ts="1.0", markdown_text="x")
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        await web.api_call("chat.startStream", json={"channel": "D1", "markdown_text": "x"})


async def test_wrong_token_is_invalid_auth_and_updates_too_fast_are_429(
    slack: FakeSlackAPI,
) -> None:
    with pytest.raises(SlackApiError, match="invalid_auth"):
        await client(slack, "xoxb-wrong").auth_test()
    slack.update_interval = 60
    web = client(slack)
    posted = await web.chat_postMessage(channel="C1", text="a")
    await web.chat_update(channel="C1", ts=posted["ts"], text="b")
    with pytest.raises(SlackApiError) as info:
        await web.chat_update(channel="C1", ts=posted["ts"], text="c")
    assert info.value.response.status_code == 429
    assert 59 < float(info.value.response.headers["Retry-After"]) <= 60
    assert slack.texts("C1") == ["b"]


async def test_method_limits_count_per_channel_and_per_workspace() -> None:
    limits = {
        "chat.postMessage": (MethodLimit(2, 60.0, "channel"), MethodLimit(3, 60.0)),
        "chat.update": (MethodLimit(1, 60.0),),
    }
    async with FakeSlackAPI(limits=limits) as slack:
        web = client(slack)
        first = await web.chat_postMessage(channel="C1", text="a")
        await web.chat_postMessage(channel="C1", text="b")
        with pytest.raises(SlackApiError) as info:
            await web.chat_postMessage(channel="C1", text="c")  # the channel's 2
        assert info.value.response.status_code == 429
        assert info.value.response.headers["Retry-After"] in ("59", "60")  # whole seconds
        await web.chat_postMessage(channel="C2", text="d")  # another channel: the workspace's 3rd
        with pytest.raises(SlackApiError):
            await web.chat_postMessage(channel="C3", text="e")  # the workspace's 3 are used
        await web.chat_update(channel="C1", ts=first["ts"], text="a2")
        with pytest.raises(SlackApiError):
            await web.chat_update(channel="C1", ts=first["ts"], text="a3")
        assert slack.texts("C1") == ["a2", "b"]
        assert slack.texts("C2") == ["d"]
        assert slack.texts("C3") == []
        assert [c.status for c in slack.calls_to("chat.postMessage")] == [200, 200, 429, 200, 429]


def test_slack_limits_name_the_methods_a_reply_sends() -> None:
    assert {"chat.postMessage", "chat.update", "chat.appendStream"} <= set(SLACK_LIMITS)
    assert SLACK_LIMITS["chat.update"] == (MethodLimit(50, 60.0),)


async def test_suggested_prompts_follow_slacks_rules_and_titles_are_kept(
    slack: FakeSlackAPI,
) -> None:
    web = client(slack)
    four = [{"title": f"t{n}", "message": f"m{n}"} for n in range(4)]
    await web.assistant_threads_setSuggestedPrompts(channel_id="D1", thread_ts="1.0", prompts=four)
    assert slack.suggested_prompts[("D1", "1.0")] == four
    for bad in ([*four, {"title": "t5", "message": "m5"}], [], [{"title": "t"}]):
        with pytest.raises(SlackApiError, match="invalid_arguments"):
            await web.assistant_threads_setSuggestedPrompts(
                channel_id="D1", thread_ts="2.0", prompts=bad
            )
    assert ("D1", "2.0") not in slack.suggested_prompts

    await web.assistant_threads_setTitle(channel_id="D1", thread_ts="1.0", title="First")
    await web.assistant_threads_setTitle(channel_id="D1", thread_ts="1.0", title="Second")
    assert slack.titles[("D1", "1.0")] == ["First", "Second"]
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        await web.assistant_threads_setTitle(channel_id="D1", thread_ts="1.0", title="")


async def test_blocks_are_kept_checked_and_their_buttons_recorded(slack: FakeSlackAPI) -> None:
    web = client(slack)
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}

    def buttons(*ids: str) -> dict[str, object]:
        elements = [
            {"type": "button", "action_id": i, "text": {"type": "plain_text", "text": "b"}}
            for i in ids
        ]
        return {"type": "actions", "elements": elements}

    posted = await web.chat_postMessage(channel="C1", text="hi", blocks=[section, buttons("a")])
    await web.chat_update(channel="C1", ts=posted["ts"], text="hi!", blocks=[section])
    await web.chat_update(channel="C1", ts=posted["ts"], text="hi!!")  # no blocks: kept
    [message] = slack.thread("C1")
    assert message.button_history == [["a"], []]
    assert message.block_text == "hi"
    for bad in (
        [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}],
        [buttons("a", "a")],  # an action id twice
        [buttons("x" * 256)],
        [section] * 51,
    ):
        with pytest.raises(SlackApiError, match="invalid_blocks"):
            await web.chat_postMessage(channel="C1", text="x", blocks=bad)

    started = await web.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="Hi")
    await web.chat_stopStream(channel="D1", ts=started["ts"], blocks=[buttons("z")])
    [streamed] = slack.thread("D1", "1.0")
    assert (streamed.text, streamed.buttons) == ("Hi", ["z"])


async def test_a_held_method_arrives_when_released_and_the_journal_keeps_the_order(
    slack: FakeSlackAPI,
) -> None:
    journal = slack.journal = Journal()
    gate = slack.hold["assistant.threads.setStatus"] = asyncio.Event()
    web = client(slack)
    held = asyncio.ensure_future(
        web.assistant_threads_setStatus(channel_id="C1", thread_ts="1.0", status="is thinking…")
    )
    for _ in range(100):
        if slack.held:
            break
        await asyncio.sleep(0.01)
    assert slack.held == 1
    await web.auth_test()
    assert slack.statuses == {}
    gate.set()
    await held
    assert journal.entries == [("slack", "auth.test"), ("slack", "assistant.threads.setStatus")]
    assert journal.first("slack", "assistant.threads.setStatus") == 1
    assert slack.statuses[("C1", "1.0")] == "is thinking…"


async def test_chat_delete_removes_a_posted_message_and_a_second_delete_is_not_found(
    slack: FakeSlackAPI,
) -> None:
    web = client(slack)
    posted = await web.chat_postMessage(channel="C1", text="one")
    await web.chat_postMessage(channel="C1", text="two")
    await web.chat_delete(channel="C1", ts=posted["ts"])
    assert slack.texts("C1") == ["two"]
    with pytest.raises(SlackApiError, match="message_not_found"):
        await web.chat_delete(channel="C1", ts=posted["ts"])
