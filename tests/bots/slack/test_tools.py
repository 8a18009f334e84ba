"""Tools through the real Slack front end (bolt against the Slack stand-in): a mention's reply
runs a tool on a real MCP server (tests/fakes/mcp_server.py); its progress line shows in the
streaming message (chat.update), or as a task card (``task_update`` chunks) in a native stream;
/stop during a slow tool ends the reply."""

from __future__ import annotations

from core.controls import Action
from core.engine import ONLY_ASKER
from tests.fakes.llm_server import FakeLLMServer, FakeToolCall, Reply
from tests.fakes.mcp_server import stdio_servers
from tests.fakes.slack_api import SLACK_LIMITS, FakeSlackAPI, Message, MethodLimit

from .conftest import CHANNEL, BotMaker, Running, wait_for
from .test_buttons import STRANGER, actions, button

TOOLS = {"mcp_servers": stdio_servers("files"), "mcp_default_servers": "files"}


async def started(make_bot: BotMaker, **overrides: object) -> Running:
    running = await make_bot(**TOOLS, **overrides)
    await running.engine.start()
    await running.engine.mcp.wait_ready()
    return running


async def test_a_mention_runs_a_tool_and_its_progress_streams_in_the_message(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await started(make_bot, slack_streaming="update")
    llm.enqueue(
        Reply(text="Adding.", tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 3})]),
        Reply(text="It is 5."),
    )
    await running.slack.mention("2 + 3?")
    final = "Adding.\n\nIt is 5.\n🔧 files.add"
    await wait_for(lambda: slack_api.texts(CHANNEL) == [final])
    [message] = slack_api.bot_messages()
    assert any("🔧 files.add(a=2, b=3)" in text for text in message.history[:-1]), message.history
    assert llm.requests[-1].tool_results()[0].content == "5"


def streamed(slack_api: FakeSlackAPI, question: str) -> Message:
    [message] = [m for m in slack_api.thread(CHANNEL, question) if m.streamed]
    return message


async def test_a_native_stream_shows_each_call_as_a_task_card(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await started(make_bot, slack_streaming="native")
    llm.enqueue(
        Reply(
            text="Adding.",
            tool_calls=[
                FakeToolCall("files__add", {"a": 2, "b": 3}),
                FakeToolCall("files__fail", {"message": "no"}),
            ],
        ),
        Reply(text="It is 5."),
    )
    question = await running.slack.mention("2 + 3?")
    final = "Adding.\n\nIt is 5.\n🔧 files.add, files.fail ✗"
    await wait_for(lambda: slack_api.texts(CHANNEL, question) == [final])

    message = streamed(slack_api, question)
    assert message.tasks == {
        "tool-1": {"id": "tool-1", "title": "files.add(a=2, b=3)", "status": "complete"},
        "tool-2": {"id": "tool-2", "title": "files.fail(message='no')", "status": "error"},
    }
    # Each card where its call came: after the text before the calls, before the answer.
    assert message.task_at == {"tool-1": len("Adding."), "tool-2": len("Adding.")}
    assert slack_api.calls_to("chat.update") == []  # no fallback: all of it streamed
    # The cards say it: the thread's status shows no tool line.
    statuses = slack_api.status_history.get((CHANNEL, question), [])
    assert not [s for s in statuses if "🔧" in s], statuses
    assert llm.requests[-1].tool_results()[0].content == "5"


async def test_stop_during_a_slow_tool_in_a_native_stream_ends_its_card_in_error(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await started(make_bot, slack_streaming="native")
    llm.enqueue(Reply(tool_calls=[FakeToolCall("files__slow", {"seconds": 60})]))
    question = await running.slack.mention("wait")

    def card() -> dict[str, object]:
        messages = [m for m in slack_api.thread(CHANNEL, question) if m.streamed]
        return messages[0].tasks.get("tool-1", {}) if messages else {}

    await wait_for(lambda: card().get("status") == "in_progress")
    assert card()["title"] == "files.slow(seconds=60)"
    await running.slack.mention("stop", thread_ts=question)
    await wait_for(lambda: slack_api.texts(CHANNEL, question) == ["🔧 files.slow ✗\n⏹ stopped"])
    message = streamed(slack_api, question)
    assert [u["status"] for u in message.task_updates] == ["in_progress", "error"]
    assert not message.streaming


async def test_task_cards_stay_within_the_streams_budget(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    """Three calls of each streaming method a minute: the start and the stop are kept, the
    cards ride on what is left (the latest state wins); nothing is refused, nothing lost."""
    streams = 3
    slack_api.limits = {
        **SLACK_LIMITS,
        "chat.startStream": (MethodLimit(streams, 60.0),),
        "chat.appendStream": (MethodLimit(streams, 60.0),),
        "chat.stopStream": (MethodLimit(streams, 60.0),),
    }
    running = await started(make_bot, slack_streaming="native", slack_stream_rate=streams)
    llm.enqueue(
        Reply(text="One.", tool_calls=[FakeToolCall("files__add", {"a": 1, "b": 1})]),
        Reply(text="Two.", tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 2})]),
        Reply(text="Done."),
    )
    question = await running.slack.mention("count")
    final = "One.\n\nTwo.\n\nDone.\n🔧 files.add ×2"  # noqa: RUF001
    await wait_for(lambda: slack_api.texts(CHANNEL, question) == [final], tries=3000)

    assert [c for c in slack_api.calls if c.status == 429] == []
    assert len([c for c in slack_api.calls if "Stream" in c.method]) <= streams
    message = streamed(slack_api, question)
    assert {k: v["status"] for k, v in message.tasks.items()} == {
        "tool-1": "complete",
        "tool-2": "complete",
    }


async def test_stop_during_a_slow_tool_ends_the_reply(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await started(make_bot, slack_streaming="update")
    llm.enqueue(Reply(text="Waiting.", tool_calls=[FakeToolCall("files__slow", {"seconds": 60})]))
    await running.slack.mention("wait")
    await wait_for(lambda: any("files.slow(seconds=60) …" in t for t in slack_api.texts(CHANNEL)))
    rid, _, _ = await running.slack.command("/stop")
    [answer] = await running.slack.responses(rid)
    assert answer["text"] == "Stopped."
    await wait_for(lambda: slack_api.texts(CHANNEL) == ["Waiting.\n🔧 files.slow ✗\n⏹ stopped"])
    assert len([r for r in llm.requests if r.path.endswith("/completions")]) == 1


async def test_a_stream_that_expires_shows_the_progress_lines_by_chat_update(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    """The card's append finds the stream expired: the same message goes on by chat.update,
    the progress as lines under the text (the "else the same lines" of the edits)."""
    slack_api.expire_streams_after = 0  # the first append finds the stream expired
    running = await started(make_bot, slack_streaming="native")
    llm.enqueue(
        Reply(text="Waiting.", tool_calls=[FakeToolCall("files__slow", {"seconds": 60})], delay=0.2)
    )
    question = await running.slack.mention("wait")

    def text() -> str:
        return "".join(slack_api.texts(CHANNEL, question))

    await wait_for(lambda: "🔧 files.slow(seconds=60) …" in text(), tries=3000)
    assert text().startswith("Waiting.")
    await running.slack.mention("stop", thread_ts=question)
    await wait_for(lambda: text() == "Waiting.\n🔧 files.slow ✗\n⏹ stopped")
    assert slack_api.calls_to("chat.update")


CONFIRM = {"mcp_servers": stdio_servers("files", confirm=True), "mcp_default_servers": "files"}


def adding(llm: FakeLLMServer, answer: str = "It is 5.") -> None:
    llm.enqueue(
        Reply(text="Adding.", tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 3})]),
        Reply(text=answer),
    )


async def test_a_confirm_call_waits_for_the_askers_button_in_the_streaming_message(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(**CONFIRM, slack_streaming="update")
    await running.engine.start()
    await running.engine.mcp.wait_ready()
    adding(llm)
    await running.slack.mention("2 + 3?")
    await wait_for(lambda: len(slack_api.bot_messages()) == 1)
    [message] = slack_api.bot_messages()
    await wait_for(lambda: Action.APPROVE in actions(message))
    assert "🔧 files.add(a=2, b=3) — waiting for approval" in message.text
    assert actions(message) == [Action.STOP, Action.APPROVE, Action.DENY]
    assert len(llm.requests) == 1

    rid, status, _ = await running.slack.click(
        message, button(message, Action.APPROVE), user=STRANGER
    )
    assert status == 200
    [answer] = await running.slack.responses(rid)
    assert (answer["text"], answer["response_type"]) == (ONLY_ASKER, "ephemeral")
    assert len(llm.requests) == 1

    await running.slack.click(message, button(message, Action.APPROVE))
    final = "Adding.\n\nIt is 5.\n🔧 files.add"
    await wait_for(lambda: slack_api.texts(CHANNEL) == [final])
    assert llm.requests[-1].tool_results()[0].content == "5"
    # Every set of buttons came with a post or an update of the text.
    assert len(message.button_history) == 1 + message.updates


async def test_a_denied_confirm_call_reaches_the_model_and_the_reply_completes(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(**CONFIRM, slack_streaming="update")
    await running.engine.start()
    await running.engine.mcp.wait_ready()
    adding(llm, "Not run, then.")
    await running.slack.mention("2 + 3?")
    await wait_for(lambda: len(slack_api.bot_messages()) == 1)
    [message] = slack_api.bot_messages()
    await wait_for(lambda: Action.DENY in actions(message))
    await running.slack.click(message, button(message, Action.DENY))
    await wait_for(
        lambda: slack_api.texts(CHANNEL) == ["Adding.\n\nNot run, then.\n🔧 files.add ✗"]
    )
    [result] = llm.requests[-1].tool_results()
    assert result.content == "Error: files.add: the user denied this call."


async def test_in_a_native_stream_the_approval_is_asked_in_a_message_of_its_own(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(**CONFIRM, slack_streaming="native")
    await running.engine.start()
    await running.engine.mcp.wait_ready()
    adding(llm)
    question = await running.slack.mention("2 + 3?")

    def asking() -> list[Message]:
        return [m for m in slack_api.thread(CHANNEL, question) if m.buttons and not m.streaming]

    await wait_for(lambda: any(Action.APPROVE in actions(m) for m in asking()))
    [ask] = asking()
    assert ask.text == "🔧 files.add(a=2, b=3) — waiting for approval"
    assert actions(ask) == [Action.APPROVE, Action.DENY]
    assert len(llm.requests) == 1
    await running.slack.click(ask, button(ask, Action.APPROVE))
    await wait_for(
        lambda: (
            slack_api.texts(CHANNEL, question)
            == ["Adding.\n\nIt is 5.\n🔧 files.add", "🔧 files.add(a=2, b=3) — answered"]
            or slack_api.texts(CHANNEL, question)
            == ["🔧 files.add(a=2, b=3) — answered", "Adding.\n\nIt is 5.\n🔧 files.add"]
        )
    )
    assert ask.buttons == []  # answered: its buttons are gone
    assert llm.requests[-1].tool_results()[0].content == "5"
