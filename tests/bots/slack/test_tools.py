"""Tools through the real Slack front end (bolt against the Slack stand-in): a mention's reply
runs a tool on a real MCP server (tests/fakes/mcp_server.py); its progress line shows in the
streaming message (chat.update) or as the thread's status (native streams); /stop during a slow
tool ends the reply."""

from __future__ import annotations

from core.controls import Action
from core.engine import ONLY_ASKER
from tests.fakes.llm_server import FakeLLMServer, FakeToolCall, Reply
from tests.fakes.mcp_server import stdio_servers
from tests.fakes.slack_api import FakeSlackAPI, Message

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


async def test_a_native_stream_shows_the_progress_as_the_thread_status(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await started(make_bot, slack_streaming="native")
    llm.enqueue(
        Reply(tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 3})]),
        Reply(text="It is 5."),
    )
    question = await running.slack.mention("2 + 3?")
    await wait_for(lambda: slack_api.texts(CHANNEL, question) == ["It is 5.\n🔧 files.add"])
    statuses = slack_api.status_history.get((CHANNEL, question), [])
    assert any(s.startswith("🔧 files.add(a=2, b=3)") for s in statuses), statuses


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
