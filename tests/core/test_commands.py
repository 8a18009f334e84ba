"""Tests for core.commands: the one command grammar every adapter shares, and its execution."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

import tests.fakes.mcp_server
from core.commands import COMMANDS, Command, CommandResult, execute, parse_command
from core.conversations import ConversationKey, Status
from core.engine import HELP_TEXT, ChatEngine
from core.policy import Actor

from .conftest import KEY, EngineMaker, wait_for

GROQ_ENV = {"GROQ_API_KEY": "gsk-test"}


# -- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "help me write a poem",
        "system design tips",
        "system prompts are what exactly?",
        "model of the universe",
        "model groq/x and also something else",
        "models are useful",
        "reset the router how?",
        "stop the war",
        "status of the project",
        "tools for data science",
        "tools enable everything please",
        "what is a model",
        "hello",
        "helpful hints",
        "",
        "   ",
    ],
)
def test_prompts_stay_prompts(text: str) -> None:
    assert parse_command(text) is None


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("model groq/x", Command("model", "groq/x")),
        (
            "  model   openrouter/meta-llama/llama-3.1-8b-instruct ",
            Command("model", "openrouter/meta-llama/llama-3.1-8b-instruct"),
        ),
        ("model", Command("model")),
        ("Model groq", Command("model", "groq")),
        ("models", Command("models")),
        ("system: be terse", Command("system", "be terse")),
        ("system:be terse", Command("system", "be terse")),
        (
            "System: You are a pirate. Answer briefly.",
            Command("system", "You are a pirate. Answer briefly."),
        ),
        ("system clear", Command("system", "clear")),
        ("system", Command("system")),
        ("/reset", Command("reset")),
        ("reset", Command("reset")),
        ("!stop", Command("stop")),
        ("help", Command("help")),
        ("HELP", Command("help")),
        ("status", Command("status")),
        ("tools", Command("tools")),
        ("/tools enable files", Command("tools", "enable files")),
        ("tools Disable files", Command("tools", "Disable files")),
    ],
)
def test_commands_are_recognised(text: str, command: Command) -> None:
    assert parse_command(text) == command


def test_every_command_parses_bare() -> None:
    for name in COMMANDS:
        assert parse_command(name) == Command(name)


# -- execution ------------------------------------------------------------------------------------


async def run(engine: ChatEngine, text: str, actor: Actor | None = None) -> CommandResult:
    command = parse_command(text)
    assert command is not None, text
    return await execute(engine, KEY, command, actor)


async def test_help_shows_the_commands_and_the_current_model(make_engine: EngineMaker) -> None:
    result = await run(make_engine(), "help")
    assert result.ok
    assert result.text == f"{HELP_TEXT}\nModel here: echo/echo."


async def test_models_lists_available_and_marks_the_current(make_engine: EngineMaker) -> None:
    engine = make_engine(env=GROQ_ENV)
    await engine.set_model(KEY, "groq")
    result = await run(engine, "models")
    assert result.text.splitlines() == [
        "Available models:",
        "• echo/echo",
        "→ groq/llama-3.3-70b-versatile",
    ]


async def test_model_without_argument_shows_current_and_available(
    make_engine: EngineMaker,
) -> None:
    result = await run(make_engine(llmconnect_allowed_models="echo"), "model")
    assert result.ok
    assert result.text == "Model here: echo/echo. Available: echo/echo."


async def test_model_switches_this_conversation_only(make_engine: EngineMaker) -> None:
    engine = make_engine(env=GROQ_ENV)
    result = await run(engine, "model groq/llama-3.1-8b-instant")
    assert result.ok
    assert result.ephemeral
    assert result.text == "Model for this conversation is now groq/llama-3.1-8b-instant."
    assert engine.model_of(await engine.conversation(KEY)) == "groq/llama-3.1-8b-instant"
    other = await engine.conversation(ConversationKey("test", "elsewhere"))
    assert engine.model_of(other) == "echo/echo"


async def test_model_refusal_is_a_failed_result_not_an_exception(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine()
    result = await run(engine, "model groq/llama-3.3-70b-versatile")
    assert not result.ok
    assert "GROQ_API_KEY" in result.text
    result = await run(engine, "model nosuch/thing")
    assert not result.ok
    assert "Unknown provider 'nosuch'" in result.text
    assert (await engine.conversation(KEY)).model is None


async def test_system_show_set_and_clear(make_engine: EngineMaker) -> None:
    engine = make_engine(llmconnect_system_prompt="Default prompt.")

    assert (await run(engine, "system")).text == "System prompt: Default prompt."
    assert (await run(engine, "system: Answer in French.")).text == "System prompt set."
    assert (await run(engine, "system")).text == "System prompt: Answer in French."
    assert engine.system_of(await engine.conversation(KEY)) == "Answer in French."
    assert (await run(engine, "system clear")).text == "System prompt cleared."
    assert (await run(engine, "system")).text == "System prompt: (none)"
    assert engine.system_of(await engine.conversation(KEY)) is None


async def test_reset_clears_history_and_is_visible_to_everyone(make_engine: EngineMaker) -> None:
    engine = make_engine()
    await (await engine.submit(KEY, "remember this"))
    result = await run(engine, "/reset")
    assert result == CommandResult("History cleared.", ephemeral=False)
    assert (await engine.conversation(KEY)).messages == []


async def test_stop_when_nothing_runs(make_engine: EngineMaker) -> None:
    result = await run(make_engine(), "stop")
    assert result.text == "Nothing is running here."


async def test_stop_while_streaming(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 1000})
    reply = await engine.submit(KEY, "go on and on")
    await wait_for(lambda: reply.status is Status.STREAMING)

    result = await run(engine, "stop")

    assert result.text == "Stopped."
    assert reply.status is Status.CANCELLED


async def test_status_idle_and_streaming(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 1000})
    result = await run(engine, "status")
    first = result.text.splitlines()[0]  # then the token counts (tests/core/test_usage.py)
    assert first == "Model: echo/echo. System prompt: (none). History: 0 messages. Idle."
    reply = await engine.submit(KEY, "long")
    await wait_for(lambda: reply.status is Status.STREAMING)
    result = await run(engine, "status")
    assert result.text.splitlines()[0].endswith("History: 2 messages. A reply is streaming.")
    await engine.stop(KEY)
    status = (await run(engine, "status")).text.splitlines()[0]
    assert status.endswith("History: 2 messages. Idle.")


async def test_unknown_command_name(make_engine: EngineMaker) -> None:
    result = await execute(make_engine(), KEY, Command("dance"))
    assert not result.ok
    assert "Unknown command 'dance'" in result.text


async def test_thread_command_sees_the_parents_settings(make_engine: EngineMaker) -> None:
    engine = make_engine(env=GROQ_ENV)
    await engine.set_model(KEY, "groq")
    thread = ConversationKey("test", "general/t1")
    result = await execute(engine, thread, Command("help"), parent=KEY)
    assert result.text.endswith("Model here: groq/llama-3.3-70b-versatile.")


# -- the admin rule -------------------------------------------------------------------------------


async def test_with_admins_set_only_admins_change_model_and_system(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine(env=GROQ_ENV, admin_user_ids="boss")
    user = Actor("someone")

    for text in ("model groq", "system: be rude", "system clear"):
        result = await run(engine, text, user)
        assert result == CommandResult("Only admins can change this here.", ok=False), text
        assert (await run(engine, text, None)).ok is False  # unknown sender: no
    conversation = await engine.conversation(KEY)
    assert (conversation.model, conversation.system) == (None, None)

    # Reading is open to everyone.
    assert (await run(engine, "model", user)).ok
    assert (await run(engine, "system", user)).ok
    assert (await run(engine, "models", user)).ok

    assert (await run(engine, "model groq", Actor("boss"))).ok
    assert (await run(engine, "system: be kind", Actor("anyone", platform_admin=True))).ok
    assert (conversation.model, conversation.system) == (
        "groq/llama-3.3-70b-versatile",
        "be kind",
    )


async def test_without_admins_everyone_may_change_settings(make_engine: EngineMaker) -> None:
    engine = make_engine(env=GROQ_ENV)
    assert (await run(engine, "model groq", Actor("someone"))).ok
    assert (await run(engine, "system: be brief", Actor("someone else"))).ok
    assert (await run(engine, "system clear")).ok


async def test_commands_do_not_block_on_a_running_reply(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 1000})
    reply = await engine.submit(KEY, "long")
    await wait_for(lambda: reply.status is Status.STREAMING)
    result = await asyncio.wait_for(run(engine, "help"), 5)
    assert result.ok
    assert reply.status is Status.STREAMING


async def test_access_lists_apply_to_commands(make_engine: EngineMaker) -> None:
    engine = make_engine(blocked_users="troll", blocked_channels="off")
    reply = await engine.submit(KEY, "hello")
    await reply
    troll = await execute(engine, KEY, Command("reset"), Actor("troll"))
    assert not troll.ok
    assert "not allowed" in troll.text
    assert len((await engine.conversation(KEY)).messages) == 2  # nothing was reset
    thread = ConversationKey(KEY.platform, "off/thread")
    parent = ConversationKey(KEY.platform, "off")
    refused = await execute(engine, thread, Command("help"), Actor("u"), parent=parent)
    assert (refused.ok, refused.text) == (False, "I am not enabled in this channel.")
    assert (await execute(engine, KEY, Command("reset"), Actor("friend"))).ok


# -- tools ----------------------------------------------------------------------------------------


def tool_servers() -> str:
    script = str(Path(tests.fakes.mcp_server.__file__))
    return json.dumps(
        {"files": {"command": [sys.executable, script]}, "web": {"url": "http://127.0.0.1:9/mcp"}}
    )


async def test_tools_without_servers(make_engine: EngineMaker) -> None:
    engine = make_engine()
    result = await run(engine, "tools")
    assert result.text == "No tool servers are configured (MCP_SERVERS)."
    refused = await run(engine, "tools enable files")
    assert not refused.ok
    assert refused.text == "No tool server 'files'. Servers: none configured (MCP_SERVERS)."


async def test_tools_lists_servers_and_admins_enable_and_disable_them(
    make_engine: EngineMaker,
) -> None:
    admin, member = Actor("U_ADMIN"), Actor("U_MEMBER")
    engine = make_engine(mcp_servers=tool_servers(), admin_user_ids="U_ADMIN")
    await engine.start()
    await engine.mcp.wait_ready(["files"])
    listed = await run(engine, "tools", member)
    lines = listed.text.splitlines()
    assert lines[0] == "Tool servers (✓ enabled here):"
    assert lines[1] == "• files — 6 tools"
    assert lines[2] == "   files.add, files.echo, files.slow, files.fail, files.env, files.die"
    assert lines[3].startswith("• web — ")  # nothing listens there: starting, or down
    assert lines[-1] == "Admins: tools enable NAME, tools disable NAME."

    denied = await run(engine, "tools enable files", member)
    assert (denied.ok, denied.text) == (False, "Only admins can change this here.")
    enabled = await run(engine, "tools enable files", admin)
    assert enabled.text == "Tools of files enabled here. Tool servers here: files."
    conversation = await engine.conversation(KEY)
    assert conversation.tools == ("files",)
    assert engine.tool_servers_of(conversation) == ["files"]
    assert (await run(engine, "tools")).text.splitlines()[1] == "✓ files — 6 tools"
    # Another conversation is not changed.
    other = await engine.conversation(ConversationKey("test", "other"))
    assert engine.tool_servers_of(other) == []

    disabled = await run(engine, "tools disable files", admin)
    assert disabled.text == "Tools of files disabled here. Tool servers here: none."
    assert (await engine.conversation(KEY)).tools == ()
    unknown = await run(engine, "tools enable nope", admin)
    assert (unknown.ok, unknown.text) == (False, "No tool server 'nope'. Servers: files, web.")


async def test_without_admin_ids_only_platform_admins_enable_tools(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine(mcp_servers=tool_servers())  # ADMIN_USER_IDS empty: /model is everyone's
    member, owner = Actor("U_MEMBER"), Actor("U_OWNER", platform_admin=True)
    assert (await run(engine, "model echo/echo", member)).ok
    denied = await run(engine, "tools enable files", member)
    assert (denied.ok, denied.text) == (False, "Only admins can change this here.")
    assert (await engine.conversation(KEY)).tools is None
    assert (await run(engine, "tools enable files", owner)).ok
    assert (await engine.conversation(KEY)).tools == ("files",)


async def test_tools_says_which_server_needs_the_askers_approval(
    make_engine: EngineMaker,
) -> None:
    servers = json.loads(tool_servers())
    servers["files"]["confirm"] = True
    engine = make_engine(mcp_servers=json.dumps(servers))
    await engine.start()
    await engine.mcp.wait_ready(["files"])
    lines = (await run(engine, "tools")).text.splitlines()
    assert lines[1] == "• files — 6 tools, each call approved by the asker"
    assert "approved" not in lines[3]  # web: no confirm


async def test_default_servers_apply_until_a_conversation_chooses(make_engine: EngineMaker) -> None:
    engine = make_engine(mcp_servers=tool_servers(), mcp_default_servers="web")
    conversation = await engine.conversation(KEY)
    assert conversation.tools is None
    assert engine.tool_servers_of(conversation) == ["web"]
    await run(engine, "tools enable files")
    assert engine.tool_servers_of(await engine.conversation(KEY)) == ["files", "web"]
    await run(engine, "tools disable web")
    assert engine.tool_servers_of(await engine.conversation(KEY)) == ["files"]
    # A thread starts with its channel's choice.
    thread = ConversationKey("test", "general/thread")
    await execute(engine, thread, Command("tools"), parent=KEY)
    assert engine.tool_servers_of(await engine.conversation(thread, KEY)) == ["files"]
