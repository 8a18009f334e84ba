"""Tests for core.settings: parsing from the environment and .env, and clear start-up errors.

A platform's settings and their tests live beside its front end (tests/bots/<platform>/
test_settings.py); here, that the core has none of them and that its loading serves any class.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from core.settings import EnvSettings, Settings, SettingsError, load_settings
from llmconnect import RetryPolicy, Timeouts

TOKEN = "MTIz.SECRET-token-456"


class Plugin(EnvSettings):
    """A settings class the core does not know, as a front end would write it."""

    plugin_token: SecretStr | None = None
    plugin_key_file: str = ""
    plugin_limit: int = 5


def test_defaults() -> None:
    s = load_settings()
    assert s.llmconnect_model == "echo"
    assert s.llmconnect_system_prompt == ""
    assert s.llmconnect_allowed_models == []
    assert s.admin_user_ids == []
    assert s.history_max_messages == 40
    assert s.user_rate_limit == 10


def test_comma_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCONNECT_ALLOWED_MODELS", "groq/*, openai/gpt-4o-mini,,echo ")
    monkeypatch.setenv("ADMIN_USER_IDS", "U1")
    monkeypatch.setenv("BLOCKED_CHANNELS", " C1 ,C2")
    monkeypatch.setenv("ALLOWED_ROLES", "")  # empty: ignored, the default applies

    s = load_settings()

    assert s.llmconnect_allowed_models == ["groq/*", "openai/gpt-4o-mini", "echo"]
    assert s.admin_user_ids == ["U1"]
    assert s.blocked_channels == ["C1", "C2"]
    assert s.allowed_roles == []


def test_reply_buttons_are_on_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().reply_buttons is True
    monkeypatch.setenv("REPLY_BUTTONS", "false")
    assert load_settings().reply_buttons is False
    monkeypatch.setenv("REPLY_BUTTONS", "maybe")
    with pytest.raises(SettingsError):
        load_settings()


def test_comma_lists_as_overrides() -> None:
    assert load_settings(allowed_users="a, b").allowed_users == ["a", "b"]
    assert load_settings(allowed_users=["a", "b"]).allowed_users == ["a", "b"]


def test_numbers_and_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("history_max_messages", "6")
    monkeypatch.setenv("USER_RATE_WINDOW", "2.5")
    s = load_settings()
    assert s.history_max_messages == 6
    assert s.user_rate_window == 2.5


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    # The autouse fixture runs every test in an empty tmp_path.
    (tmp_path / ".env").write_text(
        "LLMCONNECT_MODEL=groq/llama-3.1-8b-instant\nMAX_INPUT_CHARS=99\n"
    )
    s = load_settings()
    assert s.llmconnect_model == "groq/llama-3.1-8b-instant"
    assert s.max_input_chars == 99


def test_environment_beats_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("MAX_INPUT_CHARS=99\n")
    monkeypatch.setenv("MAX_INPUT_CHARS", "42")
    assert load_settings().max_input_chars == 42


def test_wrong_value_names_the_variable_and_what_it_got(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTORY_MAX_MESSAGES", "lots")

    with pytest.raises(SettingsError) as info:
        load_settings()

    message = str(info.value)
    assert "HISTORY_MAX_MESSAGES" in message
    assert "'lots'" in message
    assert "integer" in message


def test_out_of_range_value_says_what_is_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_MAX_RETRIES", "11")
    monkeypatch.setenv("LLM_IDLE_TIMEOUT", "0")

    with pytest.raises(SettingsError) as info:
        load_settings()

    lines = str(info.value).splitlines()
    assert lines[0] == "Invalid configuration:"
    assert any("LLM_MAX_RETRIES" in line and "less than or equal to 10" in line for line in lines)
    assert any("LLM_IDLE_TIMEOUT" in line and "greater than 0" in line for line in lines)


def test_secret_values_are_never_echoed() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(store_url="ftp://user:SECRET-PASSWORD@host/", history_max_messages="bad")
    message = str(info.value)
    assert "STORE_URL" in message
    assert "SECRET-PASSWORD" not in message
    assert "'bad'" in message  # ordinary values still are


def test_any_settings_class_loads_with_the_same_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A front end's class (one the core does not know) is read and checked the same way: from
    the environment, overrides first, a secret never echoed, by type or by name."""
    monkeypatch.setenv("PLUGIN_TOKEN", TOKEN)
    monkeypatch.setenv("PLUGIN_LIMIT", "7")
    s = load_settings(Plugin, history_max_messages=3)  # another class's name: ignored
    assert isinstance(s, Plugin)
    assert s.plugin_token is not None
    assert s.plugin_token.get_secret_value() == TOKEN
    assert load_settings(Plugin, plugin_limit=9).plugin_limit == 9
    assert TOKEN not in repr(s)

    with pytest.raises(SettingsError) as info:
        load_settings(
            Plugin, plugin_token=123456789, plugin_key_file=["KEY-VALUE"], plugin_limit="x"
        )
    message = str(info.value)
    assert message.splitlines()[0] == "Invalid configuration:"
    assert "PLUGIN_TOKEN" in message
    assert "123456789" not in message
    assert "PLUGIN_KEY_FILE" in message
    assert "KEY-VALUE" not in message
    assert "PLUGIN_LIMIT" in message
    assert "'x'" in message  # ordinary values still are
    assert len(info.value.problems) == 3


def test_the_core_has_no_platform_setting() -> None:
    """Adding a front end never touches core/: its settings are its own class."""
    platform = [
        name for name in Settings.model_fields if name.startswith(("discord_", "slack_", "web_"))
    ]
    assert platform == []


def test_timeouts_and_retry_policy_come_from_the_settings() -> None:
    s = load_settings(llm_connect_timeout=3, llm_idle_timeout=7, llm_max_retries=0)
    assert s.timeouts() == Timeouts(connect=3.0, idle=7.0)
    assert s.retry_policy() == RetryPolicy(max_retries=0)


def test_every_field_has_a_description() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_show_reasoning_takes_its_three_values_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().show_reasoning == "status"
    monkeypatch.setenv("SHOW_REASONING", " FULL ")
    assert load_settings().show_reasoning == "full"
    monkeypatch.setenv("SHOW_REASONING", "verbose")
    with pytest.raises(SettingsError, match="SHOW_REASONING") as info:
        load_settings()
    assert "'off'" in str(info.value)
    assert "'verbose'" in str(info.value)


def test_attachment_limits_take_their_bounds_and_refuse_beyond() -> None:
    s = load_settings()
    assert (
        s.max_attachments,
        s.max_attachment_bytes,
        s.max_image_pixels,
        s.max_text_attachment_chars,
        s.history_max_images,
        s.attachment_download_timeout,
    ) == (5, 10 * 1024 * 1024, 2048, 40_000, 2, 20.0)
    at_limits = {
        "max_attachments": (0, 50),
        "max_attachment_bytes": (1024, None),
        "max_image_pixels": (64, 16_384),
        "max_text_attachment_chars": (100, None),
        "history_max_images": (0, None),
        "attachment_download_timeout": (None, 300),
    }
    for name, (low, high) in at_limits.items():
        for value, step in ((low, -1), (high, 1)):
            if value is None:
                continue
            assert getattr(load_settings(**{name: value}), name) == value
            with pytest.raises(SettingsError, match=name.upper()):
                load_settings(**{name: value + step})
    with pytest.raises(SettingsError, match="ATTACHMENT_DOWNLOAD_TIMEOUT"):
        load_settings(attachment_download_timeout=0)


def test_tool_limits_take_their_bounds_and_refuse_beyond() -> None:
    s = load_settings()
    assert (s.tool_timeout, s.tool_max_result_chars, s.tool_max_steps) == (30.0, 20_000, 6)
    assert s.tool_confirm_timeout == 60.0
    assert (s.mcp_servers, s.mcp_default_servers, s.mcp_server_configs()) == (None, [], {})
    at_limits = {
        "tool_timeout": (None, 3600),
        "tool_max_result_chars": (100, None),
        "tool_max_steps": (1, 50),
        "tool_confirm_timeout": (None, 3600),
    }
    for name, (low, high) in at_limits.items():
        for value, step in ((low, -1), (high, 1)):
            if value is None:
                continue
            assert getattr(load_settings(**{name: value}), name) == value
            with pytest.raises(SettingsError, match=name.upper()):
                load_settings(**{name: value + step})
    with pytest.raises(SettingsError, match="TOOL_TIMEOUT"):
        load_settings(tool_timeout=0)
    with pytest.raises(SettingsError, match="TOOL_CONFIRM_TIMEOUT"):
        load_settings(tool_confirm_timeout=0)


MCP_TOKEN = "mcp-SECRET-token-31f"


def test_mcp_servers_is_a_secret_that_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    servers = (
        '{"files": {"command": ["python", "-m", "x"], "env": {"K": "v"}}, "search": '
        f'{{"url": "https://h.test/mcp", "headers": {{"Authorization": "Bearer {MCP_TOKEN}"}}}}}}'
    )
    monkeypatch.setenv("MCP_SERVERS", servers)
    monkeypatch.setenv("MCP_DEFAULT_SERVERS", "search, files")
    s = load_settings()
    assert list(s.mcp_server_configs()) == ["files", "search"]
    assert s.mcp_default_servers == ["search", "files"]
    assert MCP_TOKEN not in repr(s) + str(s)

    monkeypatch.setenv("MCP_SERVERS", servers.replace("https://", "ftp://"))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.problems == [
        "MCP_SERVERS: Value error, search: url must be http:// or https:// with a host"
    ]
    monkeypatch.setenv("MCP_SERVERS", servers[:-1])  # not JSON: the text is never shown
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "not valid JSON" in str(info.value)
    assert MCP_TOKEN not in str(info.value)

    monkeypatch.setenv("MCP_SERVERS", servers)
    monkeypatch.setenv("MCP_DEFAULT_SERVERS", "files,nope")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.problems == [
        "MCP_DEFAULT_SERVERS: Value error, nope not in MCP_SERVERS (configured: files, search) "
        "(got 'files,nope')"
    ]
