"""The Slack bot's settings (``SLACK_*``, :mod:`bots.slack.settings`): defaults, when it is
configured and in which mode, secrets never echoed."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from bots.slack.settings import DEFAULT_SUGGESTED_PROMPTS, MAX_SUGGESTED_PROMPTS, SlackSettings
from core.settings import SettingsError, load_settings


def test_defaults() -> None:
    s = load_settings(SlackSettings)
    assert s.slack_bot_token is None
    assert s.slack_streaming == "auto"
    assert (s.slack_http_host, s.slack_http_port) == ("0.0.0.0", 3000)
    assert not s.configured


def test_configured_with_the_bot_token_and_a_transport() -> None:
    assert not load_settings(SlackSettings, slack_bot_token="xoxb-1").configured
    socket = load_settings(SlackSettings, slack_bot_token="xoxb-1", slack_app_token="xapp-1")
    assert socket.configured
    assert socket.socket_mode
    http = load_settings(SlackSettings, slack_bot_token="xoxb-1", slack_signing_secret="s")
    assert http.configured
    assert not http.socket_mode


def test_secret_values_are_never_echoed() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(SlackSettings, slack_signing_secret=["sig", "SECRET-VALUE"])
    assert "SLACK_SIGNING_SECRET" in str(info.value)
    assert "SECRET-VALUE" not in str(info.value)


def test_tokens_are_secret_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-SECRET-1")

    s = load_settings(SlackSettings)

    assert s.slack_bot_token is not None
    assert isinstance(s.slack_bot_token, SecretStr)
    assert s.slack_bot_token.get_secret_value() == "xoxb-SECRET-1"
    for shown in (repr(s), str(s), repr(s.slack_bot_token), str(s.slack_bot_token)):
        assert "xoxb-SECRET-1" not in shown
    assert "xoxb-SECRET-1" not in s.model_dump_json()


def test_every_field_has_a_description() -> None:
    for name, field in SlackSettings.model_fields.items():
        assert field.description, name
        assert name.startswith("slack_"), name


def test_final_update_gap_limits() -> None:
    assert load_settings(SlackSettings).slack_final_update_gap == 1.0
    assert load_settings(SlackSettings, slack_final_update_gap=60).slack_final_update_gap == 60
    assert load_settings(SlackSettings, slack_final_update_gap=0).slack_final_update_gap == 0
    for bad in (60.001, -0.1):
        with pytest.raises(SettingsError, match="SLACK_FINAL_UPDATE_GAP"):
            load_settings(SlackSettings, slack_final_update_gap=bad)


def test_status_rate_limits() -> None:
    assert load_settings(SlackSettings).slack_status_rate == 50
    assert load_settings(SlackSettings, slack_status_rate=0.1).slack_status_rate == 0.1
    for bad in (0, -1):
        with pytest.raises(SettingsError, match="SLACK_STATUS_RATE"):
            load_settings(SlackSettings, slack_status_rate=bad)


def test_the_file_host_defaults_to_slacks_and_refuses_what_is_not_a_host_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(SlackSettings).slack_files_url == ["https://files.slack.com"]
    monkeypatch.setenv("SLACK_FILES_URL", "http://127.0.0.1:9000")
    assert load_settings(SlackSettings).slack_files_url == ["http://127.0.0.1:9000"]
    monkeypatch.setenv("SLACK_FILES_URL", "ftp://files.slack.com")
    with pytest.raises(SettingsError, match=r"SLACK_FILES_URL: .*expected https://host"):
        load_settings(SlackSettings)


def test_suggested_prompts_default_parse_json_and_stop_at_slacks_four() -> None:
    assert load_settings(SlackSettings).slack_suggested_prompts == list(DEFAULT_SUGGESTED_PROMPTS)
    assert 1 <= len(DEFAULT_SUGGESTED_PROMPTS) <= MAX_SUGGESTED_PROMPTS == 4
    four = '["a", {"title": "B", "message": "bee"}, "c", "d"]'
    prompts = load_settings(SlackSettings, slack_suggested_prompts=four).slack_suggested_prompts
    assert [(p.title, p.message) for p in prompts] == [
        ("a", "a"),
        ("B", "bee"),
        ("c", "c"),
        ("d", "d"),
    ]
    assert load_settings(SlackSettings, slack_suggested_prompts="[]").slack_suggested_prompts == []
    for bad in (
        '["a", "b", "c", "d", "e"]',  # five: Slack takes four at most
        '[{"title": "", "message": "x"}]',
        '[{"title": "t"}]',
        "not json",
        '{"title": "t", "message": "m"}',
    ):
        with pytest.raises(SettingsError, match="SLACK_SUGGESTED_PROMPTS"):
            load_settings(SlackSettings, slack_suggested_prompts=bad)


def test_suggested_prompts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_SUGGESTED_PROMPTS", '["Plan my week", "Fix my regex"]')
    prompts = load_settings(SlackSettings).slack_suggested_prompts
    assert [p.message for p in prompts] == ["Plan my week", "Fix my regex"]
