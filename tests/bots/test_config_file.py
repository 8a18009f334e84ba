"""The configuration file (``llmconnect.toml`` / ``LLMCONNECT_CONFIG``), read at start-up and
reloaded live: in-process through the runner and the web chat, and as a real process (SIGHUP)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from io import StringIO
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from bots.run import Runner
from bots.web import WebFrontEnd, WebSettings
from core.config_file import LIVE_KEYS, read_config
from core.conversations import ConversationKey
from core.engine import Refused
from core.policy import Actor
from core.settings import SettingsError, load_settings
from tests.fakes.llm_server import FakeLLMServer, Reply

CONFIG = "llmconnect.toml"


@pytest.fixture(autouse=True)
def no_machine_settings(clean_settings_env: None) -> None:
    """No setting from this machine; the test runs in an empty directory (tests/conftest.py)."""


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def system_of(request_json: dict[str, object]) -> str | None:
    messages = request_json["messages"]
    assert isinstance(messages, list)
    first = messages[0]
    return first["content"] if first["role"] == "system" else None


async def end_of(client: httpx.AsyncClient, chat: str) -> dict[str, str]:
    async with aconnect_sse(client, "GET", f"/chat/{chat}/bot-stream") as source:
        async for event in source.aiter_sse():
            if event.event == "end":
                return json.loads(event.data)  # type: ignore[no-any-return]
    raise AssertionError("the stream ended without an end event")


def runner_here(env: dict[str, str] | None = None) -> Runner:
    return Runner(load_settings(), [], env=env or {}, out=StringIO())


# --------------------------------------------------------------------------- start-up


def test_the_file_gives_settings_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / CONFIG,
        'llmconnect_system_prompt = "From the file."\nuser_rate_limit = 20\n'
        'llmconnect_allowed_models = ["echo/a", "echo/b"]\nweb_max_streams = 7\n',
    )
    settings = load_settings()
    assert settings.llmconnect_system_prompt == "From the file."
    assert settings.user_rate_limit == 20
    assert settings.llmconnect_allowed_models == ["echo/a", "echo/b"]
    assert load_settings(WebSettings).web_max_streams == 7  # a front end's key too
    monkeypatch.setenv("USER_RATE_LIMIT", "3")
    write(tmp_path / ".env", "LLMCONNECT_SYSTEM_PROMPT=From .env.\n")
    settings = load_settings()
    assert settings.user_rate_limit == 3
    assert settings.llmconnect_system_prompt == "From .env."


def test_llmconnect_config_names_the_file_and_it_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "conf" / "bot.toml"
    elsewhere.parent.mkdir()
    write(elsewhere, "max_input_chars = 123\n")
    monkeypatch.setenv("LLMCONNECT_CONFIG", str(elsewhere))
    assert load_settings().max_input_chars == 123
    monkeypatch.setenv("LLMCONNECT_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match=r"missing\.toml: no such file"):
        load_settings()


@pytest.mark.parametrize(
    "key",
    [
        "web_auth_token",
        "discord_token",
        "slack_signing_secret",
        "groq_api_key",
        "aimlapi_api",
        "log_hash_salt",
        "mcp_servers",
    ],
)
def test_a_secret_in_the_file_is_refused_without_showing_it(tmp_path: Path, key: str) -> None:
    write(tmp_path / CONFIG, f'{key} = "s3cr3t-value"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"{CONFIG}: {key} is a secret" in message
    assert "s3cr3t-value" not in message


def test_a_file_that_is_not_toml_stops_start_up_naming_it(tmp_path: Path) -> None:
    write(tmp_path / CONFIG, "user_rate_limit = = 3\n")
    with pytest.raises(SettingsError, match=f"{CONFIG}: not valid TOML"):
        load_settings()


def test_a_wrong_value_in_the_file_stops_start_up_naming_the_file_and_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / CONFIG, 'user_rate_limit = "many"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.problems == [
        f"USER_RATE_LIMIT: Input should be a valid integer, unable to parse string as an "
        f"integer (got 'many') (in {CONFIG})"
    ]
    monkeypatch.setenv("USER_RATE_LIMIT", "many")  # the environment's value: no file named
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert CONFIG not in str(caught.value)


# --------------------------------------------------------------------------- reload


def test_a_reload_applies_live_keys_for_the_next_prompt_at_the_new_limit(tmp_path: Path) -> None:
    write(tmp_path / CONFIG, "max_input_chars = 100\n")
    runner = runner_here()
    assert runner.poll_config() is False  # unchanged: nothing read again
    write(tmp_path / CONFIG, "max_input_chars = 10\nuser_rate_limit = 0\n")
    assert runner.poll_config() is True
    engine = runner.engine
    assert engine.settings.max_input_chars == 10
    key = ConversationKey("web", "c")  # the limit accepted, limit + 1 refused
    assert asyncio.run(engine.check(key, "x" * 10, None)) == "x" * 10
    with pytest.raises(Refused, match="the limit is 10"):
        asyncio.run(engine.check(key, "x" * 11, None))
    assert "max_input_chars, user_rate_limit" in runner.out.getvalue()  # type: ignore[attr-defined]


def test_token_caps_and_prices_reload_from_the_file(tmp_path: Path) -> None:
    """``*_daily_tokens`` are counts, not secrets (the file takes them); a reload applies a cap
    to the next prompt; ``model_prices`` is JSON in a string."""
    write(tmp_path / CONFIG, "model_prices = '{\"echo/*\": [1, 2]}'\n")
    runner = runner_here()
    assert runner.engine.settings.model_prices == {"echo/*": (1.0, 2.0)}
    key, alice = ConversationKey("web", "c"), Actor("alice")

    async def one_reply() -> None:
        reply = await runner.engine.submit(key, "hello", actor=alice)
        await reply

    asyncio.run(one_reply())
    write(tmp_path / CONFIG, "user_daily_tokens = 1\nchannel_daily_tokens = 0\n")
    assert runner.poll_config() is True
    with pytest.raises(Refused, match="You have used your 1 tokens for today"):
        asyncio.run(runner.engine.check(key, "again", alice))
    write(tmp_path / CONFIG, "channel_daily_tokens = 1\n")
    assert runner.poll_config() is True
    with pytest.raises(Refused, match="This conversation has used its 1 tokens"):
        asyncio.run(runner.engine.check(key, "again", alice))


def test_removing_a_key_restores_its_default_and_lists_rebuild(tmp_path: Path) -> None:
    write(tmp_path / CONFIG, 'blocked_users = ["U1"]\nllmconnect_model = "echo/one"\n')
    runner = runner_here()
    assert runner.engine.policy.refusal(Actor("U1"), "c") is not None
    assert runner.engine.default_model == "echo/one"
    write(tmp_path / CONFIG, "")
    assert runner.reload() is True
    assert runner.engine.policy.refusal(Actor("U1"), "c") is None
    assert runner.engine.default_model.startswith("echo/")
    assert runner.engine.default_model != "echo/one"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user_rate_limit = = 2\n", "not valid TOML"),
        ('user_rate_limit = "many"\n', "USER_RATE_LIMIT"),
        ("history_max_messages = 1\n", "HISTORY_MAX_MESSAGES"),
        ("web_max_streams = 0\n", "WEB_MAX_STREAMS"),
        ('llmconnect_model = "nosuchprovider/x"\n', "nosuchprovider"),
        ('web_auth_token = "hidden-value"\n', "web_auth_token is a secret"),
    ],
)
def test_a_wrong_file_changes_nothing_and_says_so_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, expected: str
) -> None:
    write(tmp_path / CONFIG, 'llmconnect_system_prompt = "Old."\nuser_rate_limit = 4\n')
    runner = runner_here()
    before = runner.engine.settings
    write(tmp_path / CONFIG, 'llmconnect_system_prompt = "New."\n' + text)
    with caplog.at_level(logging.WARNING, logger="llmconnect.run"):
        assert runner.reload() is False
    assert runner.engine.settings is before
    assert runner.engine.settings.llmconnect_system_prompt == "Old."
    assert runner.engine.settings.user_rate_limit == 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith(f"{CONFIG} refused, settings unchanged:")
    assert expected in lines[0]
    assert "hidden-value" not in lines[0]


def test_a_key_that_cannot_change_live_keeps_its_value_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / CONFIG, 'store_url = "memory://"\nweb_port = 8000\nmax_input_chars = 50\n')
    runner = runner_here()
    db = tmp_path / "new.db"
    write(tmp_path / CONFIG, f'store_url = "sqlite:///{db}"\nweb_port = 9\nmax_input_chars = 60\n')
    with caplog.at_level(logging.WARNING, logger="llmconnect.run"):
        assert runner.reload() is True
    assert runner.engine.settings.store_url == "memory://"
    assert runner.engine.settings.max_input_chars == 60
    assert [r.getMessage() for r in caplog.records] == [
        f"{CONFIG}: store_url, web_port cannot change while running; kept as they were until "
        "a restart"
    ]
    assert not db.exists()


def test_an_unknown_key_warns_and_the_rest_applies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / CONFIG, "")
    runner = runner_here()
    write(tmp_path / CONFIG, "user_rate_limt = 3\nuser_rate_limit = 5\n")
    with caplog.at_level(logging.WARNING, logger="llmconnect.run"):
        assert runner.reload() is True
    assert runner.engine.settings.user_rate_limit == 5
    assert [r.getMessage() for r in caplog.records] == [
        f"{CONFIG}: unknown keys, ignored: user_rate_limt"
    ]


def test_the_environment_still_wins_after_a_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMCONNECT_SYSTEM_PROMPT", "From the environment.")
    write(tmp_path / CONFIG, 'llmconnect_system_prompt = "One."\n')
    runner = runner_here()
    write(tmp_path / CONFIG, 'llmconnect_system_prompt = "Two."\n')
    assert runner.reload() is True
    assert runner.engine.settings.llmconnect_system_prompt == "From the environment."


async def test_a_change_applies_to_the_next_web_prompt_while_a_reply_streams(
    tmp_path: Path,
) -> None:
    """The running reply keeps its system prompt and completes; the next one gets the new."""
    words = " ".join(["word"] * 300)
    async with FakeLLMServer(models=["m"]) as llm:
        llm.enqueue(Reply(text=words, delay=0.01), Reply(text="short"))
        write(
            tmp_path / CONFIG, 'llmconnect_model = "local/m"\nllmconnect_system_prompt = "One."\n'
        )
        web = WebFrontEnd(load_settings(WebSettings, web_port=0, web_edit_interval=0))
        runner = Runner(load_settings(), [web], env={"LOCAL_BASE_URL": llm.openai_base_url})
        runner.out = StringIO()
        task = asyncio.create_task(runner.run(install_signal_handlers=False))
        await asyncio.wait_for(runner.started.wait(), 30)
        assert web.url is not None
        async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:
            await client.post("/chat/long/send-message", json={"text": "first"})
            async with aconnect_sse(client, "GET", "/chat/long/bot-stream") as source:
                events = source.aiter_sse()
                async for event in events:
                    if event.event == "delta" and "word" in event.data:
                        break
                write(
                    tmp_path / CONFIG,
                    'llmconnect_model = "local/m"\nllmconnect_system_prompt = "Two."\n',
                )
                assert runner.poll_config() is True
                running = runner.engine.reply_for(ConversationKey("web", "long"))
                assert running is not None
                assert not running.done
                await client.post("/chat/short/send-message", json={"text": "second"})
                second = await end_of(client, "short")
                first = [json.loads(e.data) async for e in events if e.event == "end"][-1]
        runner.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    assert first["status"] == "complete"
    assert first["content"] == words
    assert second["status"] == "complete"
    chats = [r for r in llm.requests if r.method == "POST"]  # not the model list (catalogue)
    assert [system_of(r.json) for r in chats] == ["One.", "Two."]
    # The runner asked for the model list once, at start-up (core.catalogue), in the background.
    assert [r.path for r in llm.requests if r.method == "GET"] == ["/v1/models"]


# --------------------------------------------------------------------------- a real process


async def _start_web(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.console",
        "web",
        "--port",
        "0",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def _read_until(proc: asyncio.subprocess.Process, seen: list[str], text: str) -> str:
    assert proc.stdout is not None
    while text not in "".join(seen):
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            raise AssertionError(f"exited before printing {text!r}:\n{''.join(seen)}")
        seen.append(line.decode())
    return "".join(seen)


def _env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {**{k: v for k, v in os.environ.items() if k in keep}, **extra}


async def test_sighup_reloads_the_file_of_a_running_process(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "bot.toml"
    config.parent.mkdir()
    write(config, 'llmconnect_model = "local/m"\nllmconnect_system_prompt = "Before."\n')
    async with FakeLLMServer(models=["m"]) as llm:
        llm.enqueue(Reply(text="one"), Reply(text="two"))
        env = _env(LOCAL_BASE_URL=llm.openai_base_url, LLMCONNECT_CONFIG=str(config))
        proc = await _start_web(env, tmp_path)
        seen: list[str] = []
        try:
            output = await _read_until(proc, seen, "http://")
            url = output.split("http://", 1)[1].split()[0]
            async with httpx.AsyncClient(base_url=f"http://{url}", timeout=30) as client:
                await client.post("/chat/a/send-message", json={"text": "hi"})
                assert (await end_of(client, "a"))["content"] == "one"
                write(config, 'llmconnect_model = "local/m"\nllmconnect_system_prompt = "After."\n')
                proc.send_signal(signal.SIGHUP)
                await _read_until(proc, seen, "reloaded: llmconnect_system_prompt")
                await client.post("/chat/b/send-message", json={"text": "hi"})
                assert (await end_of(client, "b"))["content"] == "two"
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0
    chats = [r for r in llm.requests if r.method == "POST"]  # not the model list (catalogue)
    assert [system_of(r.json) for r in chats] == ["Before.", "After."]


async def test_a_secret_in_the_file_stops_the_process_with_exit_2(tmp_path: Path) -> None:
    write(tmp_path / CONFIG, 'groq_api_key = "gsk_should_not_be_shown"\n')
    proc = await _start_web(_env(), tmp_path)
    assert proc.stdout is not None
    output = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
    assert await asyncio.wait_for(proc.wait(), 30) == 2
    assert f"{CONFIG}: groq_api_key is a secret" in output
    assert "gsk_should_not_be_shown" not in output
    assert "Traceback" not in output


def test_the_example_file_lists_every_live_key_with_its_default(tmp_path: Path) -> None:
    """``llmconnect.example.toml`` (README): uncommented, it is exactly the live keys, and
    loading it changes no default."""
    example = (Path(__file__).resolve().parents[2] / "llmconnect.example.toml").read_text()
    write(tmp_path / CONFIG, re.sub(r"(?m)^# ([a-z_]+ = )", r"\1", example))
    assert set(read_config()) == LIVE_KEYS
    from_file = load_settings()
    (tmp_path / CONFIG).unlink()
    assert from_file == load_settings()
