"""Socket Mode: bolt's client opens ``apps.connections.open`` on the stand-in, connects to its
websocket, acks every envelope and answers over the Web API."""

from __future__ import annotations

import pytest

from bots.slack import SlackBot, SlackConfigError
from core.engine import ChatEngine
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import CHANNEL, TEAM, USER, next_ts, slack_settings, wait_for


async def test_connects_with_the_app_token_and_answers_a_mention(
    socket_bot: SlackBot, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    [opened] = slack_api.calls_to("apps.connections.open")
    assert opened.token == slack_api.app_token

    ts = next_ts()
    envelope = await slack_api.send_envelope(
        "events_api",
        {
            "token": "unused",
            "team_id": TEAM,
            "api_app_id": "A0001",
            "type": "event_callback",
            "event_id": "EvSocket1",
            "event_time": 1,
            "event": {
                "type": "app_mention",
                "user": USER,
                "text": "<@UBOT> over the socket",
                "ts": ts,
                "channel": CHANNEL,
                "team": TEAM,
            },
        },
    )

    assert await slack_api.wait_ack(envelope) == {"envelope_id": envelope}
    await wait_for(lambda: slack_api.texts(CHANNEL) == ["You said: over the socket"])


async def test_acks_a_slash_command_then_answers_through_response_url(
    socket_bot: SlackBot, slack_api: FakeSlackAPI
) -> None:
    envelope = await slack_api.send_envelope(
        "slash_commands",
        {
            "token": "unused",
            "team_id": TEAM,
            "channel_id": CHANNEL,
            "user_id": USER,
            "command": "/models",
            "text": "",
            "api_app_id": "A0001",
            "response_url": slack_api.response_url("sock1"),
            "trigger_id": "t1",
        },
    )

    ack = await slack_api.wait_ack(envelope)
    assert ack["envelope_id"] == envelope
    await wait_for(lambda: "sock1" in slack_api.responses)
    assert slack_api.responses["sock1"][0]["text"].startswith("Available models:")


async def test_socket_mode_needs_the_app_token(slack_api: FakeSlackAPI) -> None:
    settings, slack = slack_settings(slack_api, slack_app_token=None, llmconnect_model="echo")
    engine = ChatEngine(settings, env={})
    async with SlackBot(slack, engine) as bot:
        with pytest.raises(SlackConfigError, match="SLACK_APP_TOKEN"):
            await bot.start_socket_mode()
    await engine.aclose()
