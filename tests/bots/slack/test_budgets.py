"""A burst of questions in one workspace against a Slack stand-in that enforces Slack's
per-method limits: every answer ends exact, no call is refused, finals keep their slots."""

from __future__ import annotations

import asyncio

from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.slack_api import SLACK_LIMITS, FakeSlackAPI, MethodLimit

from .conftest import BotMaker, wait_for

WORDS = " ".join(f"word{n}" for n in range(24))


def limited(updates: int, streams: int = 100) -> dict[str, tuple[MethodLimit, ...]]:
    """Slack's limits, with ``updates`` chat.update and ``streams`` calls of each streaming
    method per minute."""
    return {
        **SLACK_LIMITS,
        "chat.update": (MethodLimit(updates, 60.0),),
        "chat.startStream": (MethodLimit(streams, 60.0),),
        "chat.appendStream": (MethodLimit(streams, 60.0),),
        "chat.stopStream": (MethodLimit(streams, 60.0),),
    }


def slack_limited_settings(updates: int, streams: int = 100) -> dict[str, object]:
    """The bot's budgets set to the same limits as :func:`limited`."""
    return {
        "slack_workspace_edit_rate": updates,
        "slack_workspace_post_rate": 300,
        "slack_channel_post_rate": 1,
        "slack_channel_post_burst": 3,
        "slack_stream_rate": streams,
        "slack_edit_interval": 0.05,
        "slack_final_update_gap": 0.25,
    }


async def test_a_burst_of_channel_mentions_ends_exact_with_no_429_when_updates_run_short(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    n, updates = 10, 12  # 10 finals owed, 12 updates a minute: 2 may go to interim edits
    slack_api.limits = limited(updates)
    slack_api.update_interval = 0.2  # and one update of a message per 0.2 s
    running = await make_bot(**slack_limited_settings(updates))
    gate = asyncio.Event()  # every answer starts once all ten questions are in
    for _ in range(n):
        llm.enqueue(Reply(text=WORDS, delay=0.03, text_gate=gate))  # about 0.7 s per answer
    channels = [f"C{i:04d}" for i in range(n)]
    for channel in channels:
        await running.slack.mention("count", channel=channel)
    await wait_for(lambda: len(llm.requests) >= n)
    gate.set()

    # Without the finals' reserve, interim edits use up the minute's updates and the finals
    # wait out a 60 s Retry-After: this would not end.
    await wait_for(lambda: all(slack_api.texts(c) == [WORDS] for c in channels), tries=3000)
    assert [c for c in slack_api.calls if c.status == 429] == []
    assert len(slack_api.calls_to("chat.update")) <= updates
    assert len(slack_api.calls_to("chat.postMessage")) == n


async def test_a_reply_reserves_its_final_from_its_start_not_its_first_post(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    """Two answers stream while a third question's answer has not begun: the third's final is
    already reserved, so the first two get one interim update between them, not two."""
    updates = 4  # 3 finals + 1 interim
    slack_api.limits = limited(updates)
    running = await make_bot(**slack_limited_settings(updates))
    start, late = asyncio.Event(), asyncio.Event()
    llm.enqueue(Reply(text=WORDS, delay=0.03, text_gate=start))
    llm.enqueue(Reply(text=WORDS, delay=0.03, text_gate=start))
    llm.enqueue(Reply(text=WORDS, delay=0.03, text_gate=late))  # thinks until released
    for channel in ("C0001", "C0002", "C0003"):
        await running.slack.mention("count", channel=channel)
    await wait_for(lambda: len(llm.requests) >= 3)
    start.set()
    await wait_for(lambda: slack_api.texts("C0001") == [WORDS], tries=3000)
    await wait_for(lambda: slack_api.texts("C0002") == [WORDS], tries=3000)
    late.set()
    await wait_for(lambda: slack_api.texts("C0003") == [WORDS], tries=3000)
    assert [c for c in slack_api.calls if c.status == 429] == []
    assert len(slack_api.calls_to("chat.update")) <= updates


async def test_native_streams_take_the_streams_budget_and_every_stop_keeps_its_slot(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    n, streams = 6, 14  # each answer needs a start and a stop: 12; 2 for appends
    slack_api.limits = limited(50, streams)
    running = await make_bot(**slack_limited_settings(50, streams))
    for _ in range(n):
        llm.enqueue(Reply(text=WORDS, delay=0.03))
    roots = {f"C{i:04d}": f"1700000000.{900 + i:06d}" for i in range(n)}
    for channel, root in roots.items():
        await running.slack.mention("count", channel=channel, thread_ts=root)

    await wait_for(
        lambda: all(slack_api.texts(c, root) == [WORDS] for c, root in roots.items()),
        tries=3000,
    )
    assert [c for c in slack_api.calls if c.status == 429] == []
    stream_calls = [c for c in slack_api.calls if "Stream" in c.method]
    assert len(stream_calls) <= streams
    assert slack_api.calls_to("chat.update") == []  # no stream fell back to edits
