"""The `llmconnect` command line, run as a real process (in an empty directory: no .env)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile

import pytest

from tests.fakes.llm_server import Fail, FakeLLMServer, Reply

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


async def run_cli_async(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Same, without blocking the event loop that serves the fake LLM server."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(env),
        cwd=WORKDIR,
    )
    out, err = await proc.communicate()
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
