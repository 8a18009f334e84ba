"""The `llmconnect` command line, run as a real process (in an empty directory: no .env)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile

import pytest

from tests.fakes.llm_server import Fail, FakeLLMServer, FakeToolCall, Reply
from tests.fakes.mcp_server import stdio_servers

CLI = [sys.executable, "-m", "bots.console"]
WORKDIR = tempfile.gettempdir()


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any provider or llmconnect setting."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_BASE_URL", "_API")) and not k.startswith("LLM")
    }
    return {**keep, **(extra or {})}


def run_cli(*args: str, stdin: str = "", env: dict[str, str] | None = None):
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(env),
        cwd=WORKDIR,
        timeout=60,
        check=False,
    )


async def run_cli_async(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> tuple[int, str, str]:
    """Same, without blocking the event loop that serves the fake LLM server."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(env),
        cwd=WORKDIR,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(None if stdin is None else stdin.encode()), 60
    )
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def server():
    async with FakeLLMServer(models=["alpha", "beta"]) as srv:
        yield srv


def test_chat_echo_streams_each_line_and_switches_model():
    result = run_cli("chat", "--model", "echo", stdin="hello world\n/model echo\nsecond\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[echo] You said: hello world", "[echo] You said: second"]
    assert "model: echo/echo" in result.stderr


def test_chat_defaults_to_echo_without_configuration():
    result = run_cli("chat", "hi there")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[echo] You said: hi there\n"


def test_missing_key_names_the_variable():
    result = run_cli("chat", "-m", "groq/llama-3.3-70b-versatile", "hi")
    assert result.returncode == 2
    assert "GROQ_API_KEY" in result.stderr


def test_invalid_setting_names_the_variable():
    result = run_cli("chat", "hi", env={"LLM_MAX_RETRIES": "many"})
    assert result.returncode == 2
    assert "LLM_MAX_RETRIES" in result.stderr


async def test_chat_against_an_openai_compatible_server(server):
    server.enqueue(Reply(text="Streaming works fine."))
    env = {"LOCAL_BASE_URL": server.openai_base_url}
    code, out, err = await run_cli_async(
        "chat", "-m", "local/alpha", "-s", "Be brief.", "hi", env=env
    )
    assert code == 0, err
    assert out == "Streaming works fine.\n"
    body = server.requests[-1].json
    assert body["model"] == "alpha"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_provider_error_is_one_short_line(server):
    server.enqueue(Fail(401))
    env = {"LOCAL_BASE_URL": server.openai_base_url}
    code, _, err = await run_cli_async("chat", "-m", "local/alpha", "hi", env=env)
    assert code == 1  # a script can tell the reply failed
    assert "The provider rejected the API key" in err
    assert "Traceback" not in err


async def test_a_reply_cut_mid_way_exits_1_after_printing_its_text(server):
    server.enqueue(Reply(text="one two three", drop_after=2))
    env = {"LOCAL_BASE_URL": server.openai_base_url}
    code, out, err = await run_cli_async("chat", "-m", "local/alpha", "hi", env=env)
    assert code == 1
    assert out == "one two \n"
    assert "⚠️" in err


def test_chat_help_tells_the_exit_status():
    result = run_cli("chat", "--help")
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    assert "status 1" in help_text


async def test_models_lists_providers_and_asks_configured_ones(server):
    env = {"LOCAL_BASE_URL": server.openai_base_url}
    code, out, err = await run_cli_async("models", "-p", "local", env=env)
    assert code == 0, err
    assert "local/alpha" in out
    assert "local/beta" in out
    assert server.requests[-1].path == "/v1/models"


def test_models_offline_lists_every_provider():
    result = run_cli("models", "--offline", env={"GROQ_API_KEY": "gsk-x"})
    assert result.returncode == 0
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:] if line}
    assert rows["groq"] == "yes"
    assert rows["anthropic"] == "no"
    assert rows["echo"] == "yes"
    assert "gsk-x" not in result.stdout


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
async def test_models_asks_anthropic_and_gemini_for_their_lists(server, provider):
    base = server.anthropic_base_url if provider == "anthropic" else server.gemini_base_url
    env = {f"{provider.upper()}_BASE_URL": base, f"{provider.upper()}_API_KEY": "k-123456"}
    code, out, err = await run_cli_async("models", "-p", provider, env=env)
    assert code == 0, err
    assert f"{provider}/alpha" in out
    assert f"{provider}/beta" in out
    assert "k-123456" not in out + err


# --------------------------------------------------------------------------- chat --tools


def chats(server: FakeLLMServer) -> list:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def tools_env(server: FakeLLMServer, mcp_servers: str) -> dict[str, str]:
    return {
        "LOCAL_BASE_URL": server.openai_base_url,
        "LLMCONNECT_MODEL": "local/alpha",
        "MCP_SERVERS": mcp_servers,
    }


async def test_chat_tools_runs_a_call_shows_its_progress_and_streams_the_answer(server):
    server.enqueue(
        Reply(text="Let me add.", tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 3})]),
        Reply(text="It is 5."),
    )
    env = tools_env(server, stdio_servers("files"))
    code, out, err = await run_cli_async("chat", "--tools", "what is 2 + 3?", env=env)

    assert code == 0, err
    assert out == "Let me add.\nIt is 5.\n"  # the answer alone on standard output
    lines = err.splitlines()
    assert "🔧 files: 6 tools: add, echo, slow, fail, env, die" in lines
    running = lines.index("🔧 files.add(a=2, b=3) …")
    assert lines[running + 1] == "🔧 files.add(a=2, b=3) ✓"
    assert lines[-1] == "🔧 files.add"  # the one-line summary
    first, second = chats(server)
    assert "files__add" in first.tool_names()
    [result] = second.tool_results()
    assert (result.name, result.content) == ("files__add", "5")


async def test_chat_tools_a_failing_call_is_an_error_result_and_the_reply_goes_on(server):
    server.enqueue(
        Reply(tool_calls=[FakeToolCall("files__fail", {"message": "disk on fire"})]),
        Reply(text="It failed, sorry."),
    )
    env = tools_env(server, stdio_servers("files"))
    code, out, err = await run_cli_async("chat", "--tools", "read it", env=env)

    assert code == 0, err
    assert out == "It failed, sorry.\n"
    assert "🔧 files.fail(message='disk on fire') ✗" in err.splitlines()
    [result] = chats(server)[1].tool_results()
    assert result.content.startswith("Error: files.fail failed")


async def test_chat_mcp_servers_offers_only_the_named_ones(server):
    server.enqueue(Reply(text="Nothing to do."))
    env = tools_env(server, stdio_servers("files", "other"))
    code, out, err = await run_cli_async("chat", "--mcp-servers", "other", "hi", env=env)

    assert code == 0, err
    assert out == "Nothing to do.\n"
    names = chats(server)[0].tool_names()
    assert "other__add" in names
    assert not [n for n in names if n.startswith("files__")]
    assert "🔧 files:" not in err


async def test_chat_without_tools_offers_none_even_with_servers_configured(server):
    server.enqueue(Reply(text="Plain."))
    env = tools_env(server, stdio_servers("files"))
    code, out, err = await run_cli_async("chat", "hi", env=env)

    assert code == 0, err
    assert out == "Plain.\n"
    assert chats(server)[0].tool_names() == []


async def test_chat_tools_asks_before_each_call_to_a_confirm_server(server):
    server.enqueue(
        Reply(tool_calls=[FakeToolCall("files__add", {"a": 1, "b": 1})]),
        Reply(text="Two."),
        Reply(tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 2})]),
        Reply(text="Not allowed."),
    )
    env = tools_env(server, stdio_servers("files", confirm=True))
    code, out, err = await run_cli_async(
        "chat", "--tools", env=env, stdin="one plus one?\ny\ntwo plus two?\nn\n"
    )

    assert code == 0, err
    assert out == "Two.\nNot allowed.\n"
    assert "🔧 files: 6 tools: add, echo, slow, fail, env, die — asks before each call" in err
    assert "Allow files.add(a=1, b=1)? [y/N] allowed: files.add" in err
    assert "Allow files.add(a=2, b=2)? [y/N] denied: files.add" in err
    assert "🔧 files.add(a=1, b=1) ✓" in err
    assert "🔧 files.add(a=2, b=2) ✗" in err
    allowed, denied = chats(server)[1].tool_results(), chats(server)[3].tool_results()
    assert allowed[0].content == "2"
    assert denied[-1].content.endswith("The user denied the call to files.add.")


async def test_chat_tools_with_no_answer_on_stdin_denies_a_confirm_call(server):
    server.enqueue(
        Reply(tool_calls=[FakeToolCall("files__add", {"a": 1, "b": 1})]),
        Reply(text="Denied, then."),
    )
    env = tools_env(server, stdio_servers("files", confirm=True))
    code, out, _ = await run_cli_async("chat", "--tools", "one plus one?", env=env)

    assert code == 0
    assert out == "Denied, then.\n"
    [result] = chats(server)[1].tool_results()
    assert result.content.endswith("The user denied the call to files.add.")


def test_chat_tools_refuses_unknown_servers_and_a_missing_configuration():
    none = run_cli("chat", "--tools", "hi")
    assert none.returncode == 2
    assert "no MCP servers are configured (MCP_SERVERS)" in none.stderr
    unknown = run_cli(
        "chat", "--mcp-servers", "files,nope", "hi", env={"MCP_SERVERS": stdio_servers("files")}
    )
    assert unknown.returncode == 2
    assert "'nope': the configured servers are files" in unknown.stderr


async def test_ctrl_c_during_a_slow_call_stops_the_reply_and_the_chat_goes_on(server):
    server.enqueue(
        Reply(text="Waiting.", tool_calls=[FakeToolCall("files__slow", {"seconds": 600})]),
        Reply(text="Back again."),
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "chat",
        "--tools",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(tools_env(server, stdio_servers("files"))),
        cwd=WORKDIR,
    )
    assert proc.stdin is not None
    assert proc.stderr is not None
    proc.stdin.write(b"take your time\n")
    await proc.stdin.drain()
    seen = b""
    while "🔧 files.slow(seconds=600) …".encode() not in seen:
        chunk = await asyncio.wait_for(proc.stderr.read(4096), 60)
        assert chunk, seen.decode()
        seen += chunk
    proc.send_signal(signal.SIGINT)
    proc.stdin.write(b"and now?\n/quit\n")
    await proc.stdin.drain()
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    err_text = seen.decode() + err.decode()

    assert proc.returncode == 0, err_text
    assert out.decode() == "Waiting.\n\nBack again.\n"  # a line ends the stopped reply
    assert "[stopped]" in err_text
    assert "🔧 files.slow(seconds=600) ✗" in err_text
    _, second = chats(server)
    # The stopped turn went into the history with the call not run; the next prompt followed.
    assert second.json["messages"][-1] == {"role": "user", "content": "and now?"}
