"""``llmconnect doctor``: configured, missing, malformed, and (``--online``) answering or not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest

from bots.doctor import check_key, doctor
from bots.registry import settings_classes
from tests.fakes.discord_server import FakeDiscordServer
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.mcp_server import stdio_servers
from tests.fakes.slack_api import FakeSlackAPI

DISCORD_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting, provider key or base URL from the machine; an empty working directory."""
    names = {name for cls in settings_classes() for name in cls.model_fields}
    for var in list(os.environ):
        if var.lower() in names or var.endswith(("_API_KEY", "_BASE_URL", "_API")):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


async def run_doctor(*, online: bool = False) -> tuple[int, str]:
    out = StringIO()
    code = await doctor(online=online, out=out)
    return code, out.getvalue()


def line_of(report: str, subject: str) -> list[str]:
    return [line for line in report.splitlines() if f" {subject} " in f"{line} "]


async def test_nothing_configured_is_fine_and_says_what_is_missing() -> None:
    code, report = await run_doctor()
    assert code == 0
    assert "No problems found." in report
    assert "echo/echo" in report
    assert "not configured (set DISCORD_TOKEN)" in report
    assert "SLACK_BOT_TOKEN" in report
    assert "not configured (set GROQ_API_KEY)" in report
    assert "http://127.0.0.1:8000" in report
    assert "none here" in report  # no .env


async def test_malformed_tokens_are_named_without_their_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = {
        "DISCORD_TOKEN": f"Bot {DISCORD_TOKEN}",
        "SLACK_BOT_TOKEN": "xoxp-1234-5678-user-token",
        "SLACK_APP_TOKEN": "xoxb-swapped-with-the-bot-token",
        "SLACK_SIGNING_SECRET": "not-a-hex-secret",
        "OPENAI_API_KEY": '"sk-quoted-in-env-file"',
        "GROQ_API_KEY": "sk-this-is-not-a-groq-key",
        "ANTHROPIC_API_KEY": "your-key-here",
        "WEB_AUTH_TOKEN": "tiny-t0ken",
    }
    for var, value in secrets.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("WEB_HOST", "0.0.0.0")
    code, report = await run_doctor()
    assert code == 1
    for value in secrets.values():
        assert value not in report
        assert value.strip('"') not in report
    assert "remove the 'Bot ' prefix" in report
    assert "user token (xoxp-)" in report
    assert "SLACK_APP_TOKEN does not look right: app-level tokens start with xapp-" in report
    assert "SLACK_SIGNING_SECRET is not 32 hexadecimal characters" in report
    assert "OPENAI_API_KEY is wrapped in quotes" in report
    assert "GROQ_API_KEY does not look right: Groq keys start with gsk_" in report
    assert "ANTHROPIC_API_KEY is still a placeholder" in report
    assert "WEB_AUTH_TOKEN is short" in report


async def test_a_web_chat_open_to_the_network_without_a_token_is_a_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEB_HOST", "0.0.0.0")
    code, report = await run_doctor()
    assert code == 1
    assert "WEB_HOST=0.0.0.0 is reachable from other machines: set WEB_AUTH_TOKEN" in report


async def test_well_formed_tokens_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", DISCORD_TOKEN)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1111-2222-abcdefghijkl")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("GROQ_API_KEY", "gsk_abcdefghijklmnopqrstuvwxyz")
    monkeypatch.setenv("LLMCONNECT_MODEL", "groq")
    monkeypatch.setenv("WEB_AUTH_TOKEN", "a-long-enough-web-token")
    code, report = await run_doctor()
    assert code == 0, report
    assert "groq/llama-3.3-70b-versatile" in report
    assert "HTTP (events at /slack/events), tokens look right" in report
    assert "DISCORD_TOKEN is set" in report
    assert "WEB_AUTH_TOKEN required" in report


async def test_a_default_model_without_its_key_is_a_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMCONNECT_MODEL", "anthropic")
    monkeypatch.setenv("LLMCONNECT_ALLOWED_MODELS", "echo,nosuch/model")
    code, report = await run_doctor()
    assert code == 1
    assert "anthropic/claude-sonnet-4-5, but ANTHROPIC_API_KEY is not set" in report
    assert "nosuch/model: unknown provider (or set NOSUCH_BASE_URL)" in report
    assert "used by the configuration; set ANTHROPIC_API_KEY" in report


async def test_invalid_settings_are_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_PORT", "eighty")
    monkeypatch.setenv("SLACK_STREAMING", "sometimes")
    code, report = await run_doctor()
    assert code == 1
    assert line_of(report, "WEB_PORT")
    assert line_of(report, "SLACK_STREAMING")


def test_check_key_never_quotes_the_value() -> None:
    assert check_key("gsk_fine", prefix="gsk_") is None
    for bad in (" gsk_x", "gsk_x\n", "'gsk_x'", "gsk x", "xxxx", "<your key>", "sk-x"):
        why = check_key(bad, prefix="gsk_", hint="Groq keys start with gsk_")
        assert why is not None, bad
        assert bad.strip() not in why


async def test_online_asks_each_provider_and_platform_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    closed.close()
    async with (
        FakeLLMServer(models=["fake", "other"]) as llm,
        FakeSlackAPI() as slack,
        FakeDiscordServer(token=DISCORD_TOKEN) as discord,
    ):
        monkeypatch.setenv("LOCAL_BASE_URL", llm.openai_base_url)
        monkeypatch.setenv("LLMCONNECT_MODEL", "local/fake")
        monkeypatch.setenv("GROQ_API_KEY", "gsk_abcdefghijklmnop")
        monkeypatch.setenv("GROQ_BASE_URL", dead)
        monkeypatch.setenv("SLACK_BOT_TOKEN", slack.bot_token)
        monkeypatch.setenv("SLACK_APP_TOKEN", slack.app_token)
        monkeypatch.setenv("SLACK_API_URL", slack.api_url)
        monkeypatch.setenv("DISCORD_TOKEN", DISCORD_TOKEN)
        monkeypatch.setenv("DISCORD_API_URL", f"http://127.0.0.1:{discord.port}/api/v10")
        monkeypatch.setenv("LLM_MAX_RETRIES", "0")
        code, report = await run_doctor(online=True)
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-revoked-token")
        _, revoked = await run_doctor(online=True)
    online = report.split("\nOnline\n", 1)[1]
    assert "local" in online
    assert "answers (2 models)" in online
    assert [line for line in line_of(online, "groq") if "✗" in line]
    assert "token accepted (team Fake Team)" in online
    assert "token accepted (bot LLMConnect)" in online
    assert code == 1  # groq does not answer
    assert "auth.test: invalid_auth" in revoked
    assert DISCORD_TOKEN not in report
    assert slack.bot_token not in report


async def test_online_names_a_default_model_the_provider_does_not_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeLLMServer(models=["fake"]) as llm:
        monkeypatch.setenv("LOCAL_BASE_URL", llm.openai_base_url)
        monkeypatch.setenv("LLMCONNECT_MODEL", "local/typo")
        code, report = await run_doctor(online=True)
    assert code == 1
    assert "does not list typo" in report


async def test_online_says_which_providers_model_list_failed_and_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    closed.close()
    key = "gsk_abcdefghijklmnopqrstuv"
    async with FakeLLMServer(models=["fake", "other", "third"]) as llm:
        monkeypatch.setenv("LOCAL_BASE_URL", llm.openai_base_url)
        monkeypatch.setenv("LLMCONNECT_MODEL", "local/fake")
        monkeypatch.setenv("GROQ_API_KEY", key)
        monkeypatch.setenv("GROQ_BASE_URL", dead)
        monkeypatch.setenv("LLM_MAX_RETRIES", "0")
        code, report = await run_doctor(online=True)
    lists = report.split("\nModel lists\n", 1)[1]
    [local] = line_of(lists, "local")
    assert "✓" in local
    assert "3 models listed" in local
    [groq] = line_of(lists, "groq")
    assert "✗" in groq
    assert "the list failed: The provider is unavailable right now. (groq)" in groq
    assert "offer groq/llama-3.3-70b-versatile only" in groq
    assert code == 1
    assert key not in report
    assert dead not in report
    assert len([r for r in llm.requests if r.path == "/v1/models"]) == 1  # asked once


async def test_offline_echo_only_asks_no_list(monkeypatch: pytest.MonkeyPatch) -> None:
    code, report = await run_doctor(online=True)
    assert code == 0
    assert "Model lists" not in report
    assert "none to ask (only the offline echo)" in report


def test_the_cli_runs_doctor(tmp_path: Path) -> None:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    result = subprocess.run(
        [sys.executable, "-m", "bots.console", "doctor"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LLMConnect doctor" in result.stdout
    assert "No problems found." in result.stdout


async def test_tools_are_listed_and_online_each_mcp_server_is_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, off = await run_doctor()
    assert "no MCP server (the model calls no tools)" in off
    servers = json.loads(stdio_servers("files"))
    servers["gone"] = {"command": ["/nonexistent/server"], "env": {"K": "env-SECRET-77"}}
    servers["web"] = {"url": "https://u:pw-SECRET-1@h.test/mcp", "confirm": True}
    monkeypatch.setenv("MCP_SERVERS", json.dumps(servers))
    monkeypatch.setenv("MCP_DEFAULT_SERVERS", "files")
    code, report = await run_doctor(online=True)
    assert code == 1
    tools = report.split("\nTools\n", 1)[1].split("\n\n", 1)[0]
    assert [line for line in line_of(tools, "files") if "✓" in line and "on by default" in line]
    assert [line for line in line_of(tools, "gone") if "off until /tools enable" in line]
    assert [
        line for line in line_of(tools, "web") if "✓" in line and "approved by the asker" in line
    ]
    online = report.split("\nOnline\n", 1)[1]
    assert [line for line in line_of(online, "mcp files") if "✓ " in line and "6 tools" in line]
    assert [
        line for line in line_of(online, "mcp gone") if "✗" in line and "does not start" in line
    ]
    assert "env-SECRET-77" not in report
    assert "pw-SECRET-1" not in report
