"""SlackSink against the Slack stand-in: posts, edits, and Slack errors as core sink errors."""

from __future__ import annotations

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.sink import SlackSink
from core.render import SinkGone, SinkRateLimited
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import CHANNEL


def client(api: FakeSlackAPI) -> AsyncWebClient:
    return AsyncWebClient(token=api.bot_token, base_url=api.api_url)


async def test_posts_and_edits_mrkdwn_in_a_thread(slack_api: FakeSlackAPI) -> None:
    sink = SlackSink(client(slack_api), CHANNEL, thread_ts="1.0")
    ts = await sink.post("**hi** ▌")
    await sink.edit(ts, "**hi** there")

    assert slack_api.texts(CHANNEL, "1.0") == ["*hi* there"]
    assert slack_api.calls_to("chat.postMessage")[0].args["unfurl_links"] is False


async def test_adopts_an_existing_message_instead_of_posting(slack_api: FakeSlackAPI) -> None:
    ts = await SlackSink(client(slack_api), CHANNEL).post("streamed so far")
    sink = SlackSink(client(slack_api), CHANNEL, adopt_ts=ts)

    assert await sink.post("the whole answer") == ts
    assert await sink.post("a second message") != ts
    assert slack_api.texts(CHANNEL) == ["the whole answer", "a second message"]


async def test_429_is_rate_limited_for_the_whole_workspace_with_retry_after(
    slack_api: FakeSlackAPI,
) -> None:
    slack_api.update_interval = 60
    slack_api.retry_after = "7"
    sink = SlackSink(client(slack_api), CHANNEL)
    ts = await sink.post("one")
    await sink.edit(ts, "two")

    with pytest.raises(SinkRateLimited) as info:
        await sink.edit(ts, "three")
    assert (info.value.retry_after, info.value.shared) == (7.0, True)
    assert slack_api.texts(CHANNEL) == ["two"]


async def test_a_deleted_message_or_channel_is_gone(slack_api: FakeSlackAPI) -> None:
    with pytest.raises(SinkGone):
        await SlackSink(client(slack_api), CHANNEL).edit("1700000000.999999", "x")
    with pytest.raises(SinkGone):
        await SlackSink(client(slack_api), "CGONE2").post("x")
