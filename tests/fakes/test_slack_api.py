"""The Slack stand-in itself, driven by slack-sdk: what tests rely on it to record and enforce."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

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
