"""The bot's HTTP endpoint: every request signature-checked; configuration errors; no secret leaks."""

from __future__ import annotations

import json
import logging
import time

import pytest

from bots.slack import SlackBot, SlackConfigError
from core.conversations import ConversationKey, Status
from core.engine import ChatEngine
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import CHANNEL, SECRET, TEAM, USER, BotMaker, next_ts, sign, slack_settings, wait_for


def mention_body(running_slack: object, text: str = "hello") -> bytes:
    ts = next_ts()
    return running_slack.event_body(  # type: ignore[attr-defined]
        {
            "type": "app_mention",
            "user": USER,
            "text": f"<@UBOT> {text}",
            "ts": ts,
            "channel": CHANNEL,
            "team": TEAM,
        }
    )


@pytest.mark.parametrize(
    "tamper",
    ["wrong secret", "stale timestamp", "future timestamp", "garbage signature", "body changed"],
)
async def test_an_unverified_request_gets_401_and_nothing_runs(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, tamper: str
) -> None:
    running = await make_bot()
    body = mention_body(running.slack)
    now = int(time.time())
    kwargs: dict[str, object] = {
        "wrong secret": {"secret": "not-the-secret"},
        "stale timestamp": {"timestamp": now - 6 * 60},
        "future timestamp": {"timestamp": now + 6 * 60},
        "garbage signature": {"signature": "v0=" + "0" * 64},
        "body changed": {
            "signature": sign(body.replace(b"hello", b"HELLO"), now),
            "timestamp": now,
        },
    }[tamper]

    status, answer = await running.slack.post(body, "application/json", **kwargs)  # type: ignore[arg-type]

    assert status == 401
    assert json.loads(answer) == {"error": "invalid request"}
    # A correctly signed request afterwards is answered: the bot was listening all along.
    await running.slack.mention("now properly signed")
    await wait_for(lambda: slack_api.texts(CHANNEL) == ["You said: now properly signed"])
    chats = [r for r in llm.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 1
    assert chats[0].json["messages"][-1]["content"] == "now properly signed"


async def test_a_request_without_signature_headers_gets_401(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    async with running.slack.session.post(
        running.slack.url, data=mention_body(running.slack)
    ) as response:
        assert response.status == 401
    assert llm.requests == []
    assert slack_api.calls == []


async def test_a_signed_slash_command_with_a_bad_signature_gets_401(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    body = running.slack.command_body(
        "/ask", "hi", channel=CHANNEL, user=USER, rid="x", url=slack_api.response_url("x")
    )
    status, _ = await running.slack.post(body, "application/x-www-form-urlencoded", secret="wrong")
    assert status == 401
    assert llm.requests == []
    assert slack_api.calls == []
    assert slack_api.responses == {}


async def test_url_verification_is_answered_with_the_challenge(make_bot: BotMaker) -> None:
    running = await make_bot()
    body = json.dumps({"type": "url_verification", "challenge": "c-123", "token": "t"}).encode()
    status, answer = await running.slack.post(body, "application/json")
    assert status == 200
    assert json.loads(answer) == {"challenge": "c-123"}


async def test_only_bolts_route_is_checked_other_paths_and_methods_are_not_found(
    make_bot: BotMaker, llm: FakeLLMServer
) -> None:
    """bolt's own aiohttp app serves HTTP mode; the signature check in front of it applies to
    its route, so another path is a 404 and another method a 405, not a 401."""
    running = await make_bot()
    base = f"http://127.0.0.1:{running.port}"
    async with running.slack.session.post(f"{base}/elsewhere", data=b"{}") as response:
        assert response.status == 404
    async with running.slack.session.get(running.slack.url) as response:
        assert response.status == 405
    assert llm.requests == []


async def test_http_mode_needs_the_signing_secret(slack_api: FakeSlackAPI) -> None:
    settings, slack = slack_settings(slack_api, slack_signing_secret=None, llmconnect_model="echo")
    engine = ChatEngine(settings, env={})
    async with SlackBot(slack, engine) as bot:
        with pytest.raises(SlackConfigError, match="SLACK_SIGNING_SECRET"):
            await bot.serve_http("127.0.0.1", 0)
    await engine.aclose()


def test_the_bot_token_is_required(slack_api: FakeSlackAPI) -> None:
    settings, slack = slack_settings(slack_api, slack_bot_token=None, llmconnect_model="echo")
    with pytest.raises(SlackConfigError, match="SLACK_BOT_TOKEN"):
        SlackBot(slack, ChatEngine(settings, env={}))


async def test_one_set_of_budgets_per_workspace_one_per_limit(slack_api: FakeSlackAPI) -> None:
    settings, slack = slack_settings(
        slack_api,
        slack_workspace_edit_rate=50,
        slack_workspace_post_rate=300,
        slack_channel_post_rate=1,
        slack_channel_post_burst=3,
        slack_stream_rate=100,
        llmconnect_model="echo",
    )
    engine = ChatEngine(settings, env={})
    async with SlackBot(slack, engine) as bot:
        budgets = bot.budgets(TEAM)
        assert bot.budgets(TEAM) is budgets
        assert bot.budgets("T0OTHER") is not budgets
        updates, posts, streams = budgets.updates, budgets.posts, budgets.streams
        assert (updates.rate, updates.per, updates.burst) == (50, 60.5, 50)
        assert (posts.rate, posts.per, posts.burst) == (300, 60.5, 300)
        assert (streams.rate, streams.per, streams.burst) == (100, 60.5, 100)
        channel = budgets.channel(CHANNEL)
        assert budgets.channel(CHANNEL) is channel
        assert (channel.rate, channel.per, channel.burst) == (3, 3.5, 3)  # 1/s, 3 at once
        assert budgets.for_edits(CHANNEL).posts == (channel, posts)
        assert budgets.for_edits(CHANNEL).edits == (updates,)
    await engine.aclose()


async def test_no_secret_in_logs_reprs_or_errors(
    make_bot: BotMaker, slack_api: FakeSlackAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = await make_bot()
    slack_api.fail["chat.update"] = "invalid_auth"  # an API error, logged by the bot
    await running.slack.mention("hello")
    await running.slack.command("/models")
    await running.slack.post(mention_body(running.slack), "application/json", secret="wrong")
    await wait_for(lambda: any("could not be delivered" in r.getMessage() for r in caplog.records))

    secrets = (slack_api.bot_token, slack_api.app_token, SECRET)
    shown = [r.getMessage() for r in caplog.records]
    shown += [repr(running.bot), repr(running.bot.settings), str(running.bot.settings)]
    for text in shown:
        for secret in secrets:
            assert secret not in text


async def test_closing_the_bot_ends_its_answers_and_leaves_a_shared_engine_running(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    llm.enqueue(Reply(text="one two three four", hang_after=2))
    await running.slack.mention("count")
    await wait_for(lambda: slack_api.texts(CHANNEL) == ["one two  ▌"])  # text + marker

    await running.bot.aclose()

    assert slack_api.texts(CHANNEL) == ["one two \n⏹ stopped"]
    other = await running.engine.submit(ConversationKey("web", "elsewhere"), "still here?")
    assert (await other).status is Status.COMPLETE


async def test_workers_sharing_redis_divide_the_workspace_budget(
    make_bot: BotMaker, fresh_redis_url: str
) -> None:
    first = await make_bot(store_url=fresh_redis_url, slack_workspace_edit_rate=600)
    second = await make_bot(store_url=fresh_redis_url, slack_workspace_edit_rate=600)
    assert second.bot.budgets(TEAM).updates.rate == 300  # it counted both when it started
    assert second.bot.budgets(TEAM).posts.rate == 300_000  # every workspace budget is divided
    assert second.bot.budgets(TEAM).statuses.rate == 25  # SLACK_STATUS_RATE's 50 too
    await first.bot.budget_share.beat()  # the first learns at its next heartbeat
    assert first.bot.budgets(TEAM).updates.rate == 300
    await second.bot.aclose()  # leaves the group: the first takes the whole rate back
    await first.bot.budget_share.beat()
    assert first.bot.budgets(TEAM).updates.rate == 600
