"""Tools through the real Discord front end: a mention's reply runs a tool on a real MCP server
(tests/fakes/mcp_server.py), shows its progress line in the streaming message, and ends on the
answer with a one-line summary; /stop during a slow tool ends it all."""

from __future__ import annotations

from typing import Any

from core.controls import Action
from core.engine import ONLY_ASKER
from tests.fakes.llm_server import FakeLLMServer, FakeToolCall, Reply
from tests.fakes.mcp_server import stdio_servers

from .conftest import BotStarter, World, wait_for
from .test_buttons import actions, button, ephemeral_answer


async def files_bot(start_bot: BotStarter, *, confirm: bool = False) -> Any:
    """A bot whose conversations may use the test MCP server ``files``, started and ready."""
    bot = await start_bot(
        mcp_servers=stdio_servers("files", confirm=confirm), mcp_default_servers="files"
    )
    await bot.engine.start()
    await bot.engine.mcp.wait_ready()
    return bot


def adding(llm: FakeLLMServer, answer: str) -> None:
    """The model calls ``files.add(a=2, b=3)``, then answers ``answer``."""
    llm.enqueue(
        Reply(text="Adding.", tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 3})]),
        Reply(text=answer),
    )


async def test_a_mention_runs_a_tool_shows_its_progress_and_answers(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await files_bot(start_bot)
    adding(llm, "It is 5.")
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "2 + 3?")
    final = "Adding.\n\nIt is 5.\n🔧 files.add"
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == [final])
    [message] = server.replies_to(prompt)
    shown = [p.get("content", "") for p in message.payloads]
    assert any("🔧 files.add(a=2, b=3)" in text for text in shown[:-1]), shown
    assert shown[0].startswith("Adding.")  # the text that came before the call first
    assert all(p["allowed_mentions"]["parse"] == [] for p in message.payloads)
    assert llm.requests[-1].tool_results()[0].content == "5"


async def test_stop_during_a_slow_tool_ends_the_reply(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await files_bot(start_bot)
    llm.enqueue(Reply(text="Waiting.", tool_calls=[FakeToolCall("files__slow", {"seconds": 60})]))
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "wait")
    await wait_for(
        lambda: any("files.slow(seconds=60) …" in m.content for m in server.replies_to(prompt))
    )
    stop = await server.slash(world.general, world.alice, "stop")
    await wait_for(lambda: stop.responded)
    final = "Waiting.\n🔧 files.slow ✗\n⏹ stopped"
    await wait_for(lambda: server.replies_to(prompt)[0].content == final)
    assert len([r for r in llm.requests if r.path.endswith("/completions")]) == 1


async def test_a_confirm_call_waits_for_the_askers_button_a_strangers_click_is_refused(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await files_bot(start_bot, confirm=True)
    adding(llm, "It is 5.")
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "2 + 3?")
    waiting = "🔧 files.add(a=2, b=3) — waiting for approval"
    await wait_for(
        lambda: any(
            waiting in m.content and Action.APPROVE in actions(m) for m in server.replies_to(prompt)
        )
    )
    [message] = server.replies_to(prompt)
    assert actions(message) == [Action.STOP, Action.APPROVE, Action.DENY]
    assert [(b["label"], b["style"]) for b in message.buttons[1:]] == [
        ("Approve", 1),  # blurple
        ("Deny", 2),
    ]
    assert all(len(c) <= 100 for c in message.custom_ids)
    assert len(llm.requests) == 1  # the call waits: nothing more was asked

    click = await server.click(message, world.bob, button(message, Action.APPROVE))
    assert await ephemeral_answer(click) == ONLY_ASKER
    assert message.content.count(waiting) == 1
    assert len(llm.requests) == 1

    click = await server.click(message, world.alice, button(message, Action.APPROVE))
    final = "Adding.\n\nIt is 5.\n🔧 files.add"
    await wait_for(lambda: message.content == final)
    assert click.callbacks == [{"type": 6}]  # acknowledged: the message shows the effect
    assert actions(message) == [Action.REGENERATE, Action.UP, Action.DOWN]
    assert llm.requests[-1].tool_results()[0].content == "5"
    assert all(p["allowed_mentions"]["parse"] == [] for p in message.payloads)


async def test_a_denied_confirm_call_reaches_the_model_as_an_error_and_the_reply_ends(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await files_bot(start_bot, confirm=True)
    adding(llm, "You said no.")
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "2 + 3?")
    await wait_for(lambda: any(Action.DENY in actions(m) for m in server.replies_to(prompt)))
    [message] = server.replies_to(prompt)
    await server.click(message, world.alice, button(message, Action.DENY))
    await wait_for(lambda: message.content == "Adding.\n\nYou said no.\n🔧 files.add ✗")
    [result] = llm.requests[-1].tool_results()
    assert result.content == "Error: files.add: the user denied this call."


async def test_an_unknown_tool_and_bad_arguments_are_error_results_and_the_reply_ends(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await files_bot(start_bot)
    llm.enqueue(
        Reply(
            text="Trying.",
            tool_calls=[
                FakeToolCall("files__nope", {}),
                FakeToolCall("files__add", {"a": "two", "b": 3}),
            ],
        ),
        Reply(text="Neither worked."),
    )
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "try things")
    # A tool no server has is shown in the server.tool form too.
    final = "Trying.\n\nNeither worked.\n🔧 files.nope ✗, files.add ✗"
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == [final])
    results = llm.requests[-1].tool_results()
    assert results[0].content.startswith("Error: Unknown tool 'files__nope'")
    assert results[1].content.startswith("Error: Invalid arguments for files.add")
