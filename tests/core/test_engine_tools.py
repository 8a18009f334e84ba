"""The engine's tool loop: the model's calls run on a real MCP server (tests/fakes/mcp_server.py)
and their results go back to the LLM stand-in, round after round, until it answers in text."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from core.clock import FakeClock
from core.controls import Action, Control, approval_controls, press
from core.conversations import Status
from core.delivery import deliver, final_note
from core.engine import (
    NOT_WAITING,
    ONLY_ASKER,
    ChatEngine,
    Reply,
    ToolProgress,
    parse_progress_line,
)
from core.policy import Actor
from tests.core.test_render import RecordingSink
from tests.fakes.llm_server import FakeLLMServer, FakeToolCall
from tests.fakes.llm_server import Reply as Scripted
from tests.fakes.mcp_server import stdio_servers

from .conftest import KEY, EngineMaker, wait_for

FILES_TOOLS = [
    "files__add",
    "files__echo",
    "files__slow",
    "files__fail",
    "files__env",
    "files__die",
]


async def tool_engine(make: EngineMaker, **overrides: Any) -> ChatEngine:
    overrides.setdefault("mcp_servers", stdio_servers("files"))
    overrides.setdefault("mcp_default_servers", "files")
    engine = make(**overrides)
    await engine.start()
    await engine.mcp.wait_ready()
    return engine


def chats(llm: FakeLLMServer) -> list[Any]:
    return [r for r in llm.requests if r.path.endswith("/chat/completions")]


async def ask(engine: ChatEngine, text: str = "what is 2 + 3?") -> Reply:
    reply = await engine.submit(KEY, text)
    await reply
    return reply


async def test_a_call_runs_its_result_reaches_the_model_and_the_answer_follows(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = await tool_engine(local_engine)
    llm_server.enqueue(
        Scripted(text="Let me add.", tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 3})]),
        Scripted(text="It is 5."),
    )
    reply = await ask(engine)

    assert reply.status is Status.COMPLETE
    assert reply.text == "Let me add.\n\nIt is 5."
    first, second = chats(llm_server)
    assert first.tool_names() == FILES_TOOLS
    assert [(c.name, c.arguments) for c in second.tool_calls()] == [
        ("files__add", {"a": 2, "b": 3})
    ]
    [result] = second.tool_results()
    assert (result.name, result.content, result.native) == ("files__add", "5", "tool")
    assert second.tool_names() == FILES_TOOLS  # the model may call again
    assert [p.line for p in reply.tool_progress] == ["🔧 files.add(a=2, b=3) ✓"]
    assert final_note(reply) == "🔧 files.add"
    [step] = reply.message.tool_steps
    assert (step.text, step.names) == ("Let me add.", ("files.add",))
    assert reply.message.final_text == "\n\nIt is 5."
    assert reply.usage is not None
    assert reply.usage.input_tokens == 14  # both rounds counted


async def test_parallel_calls_run_at_once(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    """A slow call and a quick one of the same turn: the quick one's result is in while the slow
    one still runs (one after the other, it would wait for the slow one)."""
    clock = FakeClock()
    engine = await tool_engine(local_engine, clock=clock, tool_timeout=30)
    llm_server.enqueue(
        Scripted(
            tool_calls=[
                FakeToolCall("files__slow", {"seconds": 60}),
                FakeToolCall("files__add", {"a": 1, "b": 1}),
            ]
        ),
        Scripted(text="One timed out, one is 2."),
    )
    reply = await engine.submit(KEY, "both")
    await wait_for(lambda: [p.state for p in reply.tool_progress] == ["running", "ok"], tries=2000)
    await wait_for(lambda: clock.next_deadline() == 30.0)
    await clock.advance(30.0)  # TOOL_TIMEOUT for the slow one
    await reply
    assert reply.text == "One timed out, one is 2."
    assert [p.line for p in reply.tool_progress] == [
        "🔧 files.slow(seconds=60) ✗",
        "🔧 files.add(a=1, b=1) ✓",
    ]
    results = chats(llm_server)[1].tool_results()
    # OpenAI-compatible results carry no error flag: llmconnect marks an error in the text.
    assert [(r.name, r.content) for r in results] == [
        ("files__slow", "Error: files.slow timed out after 30 s (TOOL_TIMEOUT)."),
        ("files__add", "2"),
    ]
    assert final_note(reply) == "🔧 files.slow ✗, files.add"


async def test_unknown_tools_bad_arguments_and_failures_are_error_results(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = await tool_engine(local_engine)
    llm_server.enqueue(
        Scripted(
            tool_calls=[
                FakeToolCall("files__nope", {}),
                FakeToolCall("files__add", {"a": "two", "b": 3}),
                FakeToolCall("files__fail", {"message": "boom"}),
                FakeToolCall("files__add", '{"a": 1,'),  # not JSON: llmconnect says why
            ]
        ),
        Scripted(text="Sorry, none of that worked."),
    )
    reply = await ask(engine)
    assert reply.status is Status.COMPLETE
    assert reply.text == "Sorry, none of that worked."
    results = chats(llm_server)[1].tool_results()
    assert len(results) == 4
    # OpenAI-compatible results carry no error flag: llmconnect marks an error in the text.
    assert results[0].content.startswith("Error: Unknown tool 'files__nope'")
    assert results[1].content == (
        "Error: Invalid arguments for files.add: a: 'two' is not of type 'integer'"
    )
    assert results[2].content.startswith("Error: files.fail failed: ")
    assert "not valid JSON" in results[3].content
    assert all(p.state == "error" for p in reply.tool_progress)


async def test_a_disabled_server_s_tools_are_neither_offered_nor_run(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = await tool_engine(local_engine, mcp_default_servers="")
    llm_server.enqueue(
        Scripted(text="plain"),
        Scripted(tool_calls=[FakeToolCall("files__add", {"a": 1, "b": 2})]),
        Scripted(text="no tools here"),
    )
    await ask(engine)
    assert chats(llm_server)[0].tool_names() == []
    assert "tools" not in chats(llm_server)[0].json
    # A model that calls a tool it was not offered gets nothing run: no tools, no loop.
    await engine.set_tool_server(KEY, "files", False)
    reply = await ask(engine, "again")
    assert reply.tool_progress == []
    assert len(chats(llm_server)) == 2


async def test_tool_max_steps_rounds_then_the_model_answers_without_tools(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = await tool_engine(local_engine, tool_max_steps=2)
    call = FakeToolCall("files__add", {"a": 1, "b": 1})
    llm_server.enqueue(
        Scripted(tool_calls=[call]),
        Scripted(tool_calls=[call]),
        # Not offered any tool, a model that calls one anyway gets nothing run.
        Scripted(text="Done after two rounds.", tool_calls=[call]),
    )
    reply = await ask(engine)
    assert reply.text == "Done after two rounds."
    requests = chats(llm_server)
    assert [bool(r.tool_names()) for r in requests] == [True, True, False]
    assert len(reply.tool_progress) == 2
    assert len(reply.message.tool_steps) == 2
    assert final_note(reply) == "🔧 files.add \N{MULTIPLICATION SIGN}2"


async def test_stop_during_a_slow_tool_ends_at_once(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = await tool_engine(local_engine)
    llm_server.enqueue(
        Scripted(text="Waiting…", tool_calls=[FakeToolCall("files__slow", {"seconds": 60})]),
    )
    reply = await engine.submit(KEY, "wait")
    await wait_for(lambda: bool(reply.tool_progress), tries=2000)
    await asyncio.sleep(0.1)  # the call is on its way to the server
    assert await engine.stop(KEY)
    assert reply.status is Status.CANCELLED
    assert reply.text == "Waiting…"
    assert [p.line for p in reply.tool_progress] == ["🔧 files.slow(seconds=60) ✗"]
    assert len(chats(llm_server)) == 1  # nothing more was asked
    # The server is fine and serves the next reply's call.
    llm_server.enqueue(
        Scripted(tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 2})]), Scripted(text="4")
    )
    after = await ask(engine, "and 2 + 2?")
    assert after.text == "4"
    assert [p.state for p in after.tool_progress] == ["ok"]


async def test_the_history_keeps_the_tool_turns_for_follow_ups(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = await tool_engine(local_engine)
    llm_server.enqueue(
        Scripted(tool_calls=[FakeToolCall("files__add", {"a": 20, "b": 22}, id="call_1")]),
        Scripted(text="42."),
        Scripted(text="You asked me to add."),
    )
    await ask(engine, "what is 20 + 22?")
    await ask(engine, "what did you do?")
    follow_up = chats(llm_server)[2]
    messages = follow_up.json["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[1]["tool_calls"][0]["id"] == "call_1"
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"a": 20, "b": 22}
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    assert messages[3]["content"] == "42."
    # Stored (a copy through JSON, as the SQLite and Redis stores keep it) and read back.
    conversation = await engine.conversation(KEY)
    again = type(conversation).from_dict(json.loads(json.dumps(conversation.to_dict())))
    assert again.messages[1].tool_steps == conversation.messages[1].tool_steps
    assert again.messages[1].tools_line == "🔧 files.add"


async def test_tool_turns_count_in_the_history_bounds(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    """A long result counts in HISTORY_MAX_CHARS: the older turns go first."""
    engine = await tool_engine(local_engine, history_max_chars=3_000)
    llm_server.enqueue(
        Scripted(text="first answer"),
        Scripted(tool_calls=[FakeToolCall("files__echo", {"text": "x", "times": 3_000})]),
        Scripted(text="long one read"),
    )
    await ask(engine, "one")
    await ask(engine, "two")
    conversation = await engine.conversation(KEY)
    assert [m.text for m in conversation.messages] == ["two", "long one read"]
    assert conversation.messages[1].chars > 3_000


async def test_a_model_that_takes_no_tools_is_sent_none(
    make_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    env = {"ANTHROPIC_API_KEY": "k-123", "ANTHROPIC_BASE_URL": llm_server.anthropic_base_url}
    engine = await tool_engine(make_engine, env=env, llmconnect_model="anthropic/fake")
    llm_server.enqueue(Scripted(text="no tools for me"))
    reply = await ask(engine)
    assert reply.text == "no tools for me"
    assert llm_server.requests[-1].tool_names() == []


@pytest.mark.parametrize(
    ("provider", "model", "native"),
    [
        ("anthropic", "claude-fake", "user/tool_result"),
        ("gemini", "gemini-fake", "user/functionResponse"),
    ],
)
async def test_each_protocol_gets_the_results_in_its_own_format(
    make_engine: EngineMaker, llm_server: FakeLLMServer, provider: str, model: str, native: str
) -> None:
    base = {"anthropic": llm_server.anthropic_base_url, "gemini": llm_server.gemini_base_url}
    env = {f"{provider.upper()}_API_KEY": "k-123", f"{provider.upper()}_BASE_URL": base[provider]}
    engine = await tool_engine(make_engine, env=env, llmconnect_model=f"{provider}/{model}")
    llm_server.enqueue(
        Scripted(
            tool_calls=[
                FakeToolCall("files__add", {"a": 1, "b": 2}),
                FakeToolCall("files__echo", {"text": "hi"}),
            ]
        ),
        Scripted(text="3 and hi"),
    )
    reply = await ask(engine)
    assert reply.text == "3 and hi"
    results = llm_server.requests[-1].tool_results()
    assert [(r.name, r.content, r.native) for r in results] == [
        ("files__add", "3", native),
        ("files__echo", "hi", native),
    ]


async def test_the_progress_lines_stream_under_the_text_and_the_summary_stays(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = await tool_engine(local_engine)
    llm_server.enqueue(
        Scripted(text="Checking.", tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 3})]),
        Scripted(text="It is 5."),
    )
    sink = RecordingSink(clock=clock)
    reply = await engine.submit(KEY, "sum?")
    await deliver(engine, reply, sink, min_interval=0, clock=clock)
    shown = [call.text for call in sink.history]
    assert any("Checking.\n\n🔧 files.add(a=2, b=3) " in text for text in shown), shown
    assert sink.messages == ["Checking.\n\nIt is 5.\n🔧 files.add"]


def test_a_progress_line_reads_back_as_its_call_and_state() -> None:
    line = ToolProgress("files.read", "path='a b.txt'")
    assert parse_progress_line(line.line) == ("files.read(path='a b.txt')", "running")
    line.state = "ok"
    assert parse_progress_line(line.line) == ("files.read(path='a b.txt')", "ok")
    line.state = "error"
    assert parse_progress_line(line.line) == ("files.read(path='a b.txt')", "error")
    assert parse_progress_line("something else") == ("something else", "running")


# -- "confirm": true: each call waits for the asker's Approve or Deny ----------------------------


ASKER = Actor("U-ASKER")


async def confirm_engine(make: EngineMaker, clock: FakeClock, **overrides: Any) -> ChatEngine:
    return await tool_engine(
        make, clock=clock, mcp_servers=stdio_servers("files", confirm=True), **overrides
    )


async def waiting_call(engine: ChatEngine, llm: FakeLLMServer, text: str = "2 + 3?") -> Reply:
    llm.enqueue(
        Scripted(text="Let me add.", tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 3})]),
        Scripted(text="Done."),
    )
    reply = await engine.submit(KEY, text, actor=ASKER)
    await wait_for(lambda: bool(approval_controls(reply)), tries=2000)
    return reply


async def test_a_confirm_call_waits_for_the_asker_and_runs_once_approved(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = await confirm_engine(local_engine, clock)
    reply = await waiting_call(engine, llm_server)
    assert chats(llm_server)[0].tool_names() == FILES_TOOLS  # offered, unlike before
    assert [p.line for p in reply.tool_progress] == [
        "🔧 files.add(a=2, b=3) — waiting for approval"
    ]
    approve, deny = approval_controls(reply)
    assert (approve.action, approve.label, deny.action, deny.label) == (
        Action.APPROVE,
        "Approve",
        Action.DENY,
        "Deny",
    )
    assert len(chats(llm_server)) == 1  # nothing runs while it waits
    stranger = await press(engine, KEY, approve.action_id, Actor("U-OTHER"))
    assert (stranger.ok, stranger.text) == (False, ONLY_ASKER)
    # An admin may not approve someone else's call (it may deny it, like Stop).
    admin = await press(engine, KEY, approve.action_id, Actor("U-OTHER", platform_admin=True))
    assert (admin.ok, admin.text) == (False, ONLY_ASKER)
    assert reply.tool_progress[0].waiting
    pressed = await press(engine, KEY, approve.action_id, ASKER)
    assert pressed.ok
    await reply
    assert reply.text == "Let me add.\n\nDone."
    [result] = chats(llm_server)[1].tool_results()
    assert result.content == "5"
    assert [p.line for p in reply.tool_progress] == ["🔧 files.add(a=2, b=3) ✓"]
    late = await press(engine, KEY, approve.action_id, ASKER)
    assert (late.ok, late.text) == (False, NOT_WAITING)


async def test_a_denied_call_is_an_error_result_and_the_reply_goes_on(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = await confirm_engine(local_engine, clock, admin_user_ids="U-ADMIN")
    reply = await waiting_call(engine, llm_server)
    _, deny = approval_controls(reply)
    assert (await press(engine, KEY, deny.action_id, Actor("U-ADMIN"))).ok  # an admin may deny
    await reply
    assert reply.status is Status.COMPLETE
    assert reply.text == "Let me add.\n\nDone."
    [result] = chats(llm_server)[1].tool_results()
    assert result.content == "Error: files.add: the user denied this call."
    assert [p.line for p in reply.tool_progress] == ["🔧 files.add(a=2, b=3) ✗ denied"]
    assert final_note(reply) == "🔧 files.add ✗"


async def test_no_answer_within_tool_confirm_timeout_is_denied(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = await confirm_engine(local_engine, clock, tool_confirm_timeout=60)
    reply = await waiting_call(engine, llm_server)
    await wait_for(lambda: clock.next_deadline() == 60.0)
    await clock.advance(59.999)
    assert reply.tool_progress[0].waiting  # still waiting at the limit's edge
    assert len(chats(llm_server)) == 1
    await clock.advance(0.001)
    await reply
    [result] = chats(llm_server)[1].tool_results()
    assert result.content == (
        "Error: files.add: the user did not approve this call within 60 s "
        "(TOOL_CONFIRM_TIMEOUT): it was denied."
    )
    assert reply.text == "Let me add.\n\nDone."
    assert reply.tool_progress[0].state == "denied"


async def test_stop_while_a_call_waits_ends_everything(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = await confirm_engine(local_engine, clock)
    reply = await waiting_call(engine, llm_server)
    approve, _ = approval_controls(reply)
    assert await engine.stop(KEY)
    assert reply.status is Status.CANCELLED
    assert reply.text == "Let me add."
    assert len(chats(llm_server)) == 1
    assert [p.line for p in reply.tool_progress] == ["🔧 files.add(a=2, b=3) ✗"]
    assert (await press(engine, KEY, approve.action_id, ASKER)).text == NOT_WAITING


async def test_the_approval_buttons_ride_on_the_reply_s_own_edits(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    """While the call waits the message carries Stop, Approve and Deny with its progress line;
    once approved Stop alone; the final edit Regenerate and the votes."""
    clock = FakeClock()
    engine = await confirm_engine(local_engine, clock)
    sink = ControlsRecordingSink(clock=clock)
    reply = await waiting_call(engine, llm_server)
    delivery = asyncio.ensure_future(
        deliver(engine, reply, sink, min_interval=0, clock=clock, controls=True)
    )
    await wait_for(lambda: any(Action.APPROVE in c for _, c in sink.sent), tries=2000)
    text, actions = next((t, c) for t, c in sink.sent if Action.APPROVE in c)
    assert "🔧 files.add(a=2, b=3) — waiting for approval" in text
    assert actions == [Action.STOP, Action.APPROVE, Action.DENY]
    approve = next(c for c in approval_controls(reply) if c.action is Action.APPROVE)
    assert (await press(engine, KEY, approve.action_id, ASKER)).ok
    await delivery
    assert sink.sent[-1][1] == [Action.REGENERATE, Action.UP, Action.DOWN]
    assert sink.posts == 1  # the buttons cost no request of their own


async def test_without_reply_buttons_the_approval_buttons_still_show(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = await confirm_engine(local_engine, clock, reply_buttons=False)
    sink = ControlsRecordingSink(clock=clock)
    reply = await waiting_call(engine, llm_server)
    delivery = asyncio.ensure_future(deliver(engine, reply, sink, min_interval=0, clock=clock))
    await wait_for(lambda: any(Action.APPROVE in c for _, c in sink.sent), tries=2000)
    assert next(c for _, c in sink.sent if Action.APPROVE in c) == [Action.APPROVE, Action.DENY]
    _, deny = approval_controls(reply)
    assert (await press(engine, KEY, deny.action_id, ASKER)).ok
    await delivery
    assert sink.sent[-1][1] == []


class ControlsRecordingSink:
    """A sink whose messages carry buttons: each request's text and actions, in order."""

    max_len = 2000

    def __init__(self, *, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[str, list[Action]]] = []
        self.posts = 0

    async def post(self, text: str, *, controls: Sequence[Control] = ()) -> int:
        await asyncio.sleep(0)
        self.posts += 1
        self.sent.append((text, [c.action for c in controls]))
        return self.posts

    async def edit(self, ref: Any, text: str, *, controls: Sequence[Control] = ()) -> None:
        await asyncio.sleep(0)
        self.sent.append((text, [c.action for c in controls]))
