"""The Discord bot's settings (``DISCORD_*``, :mod:`bots.discord.settings`): defaults, shards,
the renamed variable, secrets never echoed."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from bots.discord.settings import DiscordSettings
from core.settings import SettingsError, load_settings

TOKEN = "MTIz.discord-SECRET-token-456"


def test_defaults() -> None:
    s = load_settings(DiscordSettings)
    assert s.discord_token is None
    assert not s.configured


def test_discord_shard_settings_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(DiscordSettings).discord_shard_count is None  # Discord's recommended count
    assert load_settings(DiscordSettings).discord_shard_ids == []
    assert load_settings(DiscordSettings, discord_shard_count=4).discord_shard_ids == []  # all four
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "4")
    monkeypatch.setenv("DISCORD_SHARD_IDS", "3, 1")
    settings = load_settings(DiscordSettings)
    assert (settings.discord_shard_count, settings.discord_shard_ids) == (4, [3, 1])
    monkeypatch.delenv("DISCORD_SHARD_COUNT")
    monkeypatch.delenv("DISCORD_SHARD_IDS")
    for bad, why in (
        ({"discord_shard_ids": "0"}, "needs DISCORD_SHARD_COUNT"),
        ({"discord_shard_count": 2, "discord_shard_ids": "0,2"}, "from 0 to 1"),
        ({"discord_shard_count": 2, "discord_shard_ids": "-1"}, "from 0 to 1"),
        ({"discord_shard_count": 2, "discord_shard_ids": "1,1"}, "1 is listed twice"),
        ({"discord_shard_count": 2, "discord_shard_ids": "one"}, "valid integer"),
    ):
        with pytest.raises(SettingsError, match=f"DISCORD_SHARD_IDS: .*{why}"):
            load_settings(DiscordSettings, **bad)
    with pytest.raises(SettingsError) as raised:
        load_settings(DiscordSettings, discord_shard_count=0, discord_shard_ids="0")
    assert str(raised.value).count("DISCORD_SHARD") == 1  # the count's error, not a second one


def test_the_former_discord_shard_id_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ignored, it would make every process run every shard: each answer given several times."""
    monkeypatch.setenv("DISCORD_SHARD_ID", "1")
    with pytest.raises(
        SettingsError, match="DISCORD_SHARD_ID is no longer read: use DISCORD_SHARD_IDS"
    ):
        load_settings(DiscordSettings, discord_shard_count=2)


def test_secret_values_are_never_echoed() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(DiscordSettings, discord_token=123456789, discord_shard_count="bad")
    message = str(info.value)
    assert "DISCORD_TOKEN" in message
    assert "123456789" not in message
    assert "'bad'" in message  # ordinary values still are


def test_the_token_is_a_secret_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)

    s = load_settings(DiscordSettings)

    assert isinstance(s.discord_token, SecretStr)
    assert s.discord_token.get_secret_value() == TOKEN
    assert s.configured
    for shown in (repr(s), str(s), repr(s.discord_token), str(s.discord_token)):
        assert TOKEN not in shown
    assert TOKEN not in s.model_dump_json()


def test_endpoints_and_guild_ids_are_checked() -> None:
    s = load_settings(DiscordSettings, discord_api_url="http://127.0.0.1:9/api/")
    assert s.discord_api_url == "http://127.0.0.1:9/api"
    with pytest.raises(SettingsError, match=r"DISCORD_GATEWAY_URL: .*ws:// or wss://"):
        load_settings(DiscordSettings, discord_gateway_url="http://gateway")
    with pytest.raises(SettingsError, match=r"DISCORD_GUILD_IDS: .*numeric guild ids, got abc"):
        load_settings(DiscordSettings, discord_guild_ids="123, abc")


def test_every_field_has_a_description() -> None:
    for name, field in DiscordSettings.model_fields.items():
        assert field.description, name
        assert name.startswith("discord_"), name


def test_channel_edit_window_limits() -> None:
    s = load_settings(DiscordSettings)
    assert (s.discord_channel_edits, s.discord_channel_edit_window) == (5, 5.0)
    at = load_settings(DiscordSettings, discord_channel_edits=50, discord_channel_edit_window=60)
    assert (at.discord_channel_edits, at.discord_channel_edit_window) == (50, 60.0)
    assert load_settings(DiscordSettings, discord_channel_edits=0).discord_channel_edits == 0
    for bad in ({"discord_channel_edits": 51}, {"discord_channel_edits": -1}):
        with pytest.raises(SettingsError, match="DISCORD_CHANNEL_EDITS"):
            load_settings(DiscordSettings, **bad)
    for window in (60.001, 0):
        with pytest.raises(SettingsError, match="DISCORD_CHANNEL_EDIT_WINDOW"):
            load_settings(DiscordSettings, discord_channel_edit_window=window)


def test_cdn_hosts_default_to_discords_and_take_a_comma_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(DiscordSettings).discord_cdn_url == [
        "https://cdn.discordapp.com",
        "https://media.discordapp.net",
    ]
    monkeypatch.setenv("DISCORD_CDN_URL", "http://127.0.0.1:8123/, https://cdn.example")
    assert load_settings(DiscordSettings).discord_cdn_url == [
        "http://127.0.0.1:8123",
        "https://cdn.example",
    ]
    monkeypatch.setenv("DISCORD_CDN_URL", "https://user:hunter2@cdn.example")
    with pytest.raises(SettingsError, match=r"DISCORD_CDN_URL: .*user name or password") as err:
        load_settings(DiscordSettings)
    assert "hunter2" not in str(err.value)
    monkeypatch.setenv("DISCORD_CDN_URL", "cdn.discordapp.com")
    with pytest.raises(SettingsError, match=r"DISCORD_CDN_URL: .*expected https://host"):
        load_settings(DiscordSettings)


def test_reply_chain_depth_limits() -> None:
    assert load_settings(DiscordSettings).discord_reply_chain_depth == 10
    for ok in (0, 50):
        depth = load_settings(DiscordSettings, discord_reply_chain_depth=ok)
        assert depth.discord_reply_chain_depth == ok
    for bad in (-1, 51):
        with pytest.raises(SettingsError, match="DISCORD_REPLY_CHAIN_DEPTH"):
            load_settings(DiscordSettings, discord_reply_chain_depth=bad)


def test_the_message_content_intent_is_asked_for_only_when_set() -> None:
    assert load_settings(DiscordSettings).discord_message_content is False
    assert load_settings(DiscordSettings, discord_message_content="true").discord_message_content


def test_thread_per_question_is_off_by_default_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(DiscordSettings).discord_thread_per_question is False
    monkeypatch.setenv("DISCORD_THREAD_PER_QUESTION", "true")
    assert load_settings(DiscordSettings).discord_thread_per_question is True
    monkeypatch.setenv("DISCORD_THREAD_PER_QUESTION", "maybe")
    with pytest.raises(SettingsError, match="DISCORD_THREAD_PER_QUESTION"):
        load_settings(DiscordSettings)
