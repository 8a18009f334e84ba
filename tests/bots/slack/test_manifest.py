"""The app manifest a team creates the app from matches what the code registers and needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bots.slack.commands import SLASH_COMMANDS
from bots.slack.settings import DEFAULT_SUGGESTED_PROMPTS, MAX_SUGGESTED_PROMPTS

MANIFEST = Path(__file__).resolve().parents[3] / "bots" / "slack" / "manifest.yaml"


def manifest() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text())


def test_declares_every_slash_command_the_bot_handles() -> None:
    declared = {c["command"]: c for c in manifest()["features"]["slash_commands"]}
    assert set(declared) == set(SLASH_COMMANDS)
    for name, (description, hint) in SLASH_COMMANDS.items():
        assert declared[name]["description"] == description[:100]
        assert declared[name].get("usage_hint", "") == hint


def test_has_the_scopes_and_events_the_bot_uses_and_socket_mode_on() -> None:
    data = manifest()
    assert data["display_information"]["name"] == "LLMConnect"
    scopes = set(data["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "commands", "im:history", "users:read"} <= scopes
    assert "files:read" in scopes  # files shared with a mention or a DM (bots/slack/files.py)
    # Follow-ups without a mention, AUTO_REPLY_CHANNELS: channel messages and their history.
    assert {"channels:history", "groups:history"} <= scopes
    assert set(data["settings"]["event_subscriptions"]["bot_events"]) == {
        "app_mention",
        "assistant_thread_started",
        "assistant_thread_context_changed",
        "message.channels",
        "message.groups",
        "message.im",
    }
    assert data["settings"]["socket_mode_enabled"] is True
    assert data["features"]["bot_user"]["display_name"]


def test_the_assistant_pane_is_declared_with_the_default_suggested_prompts() -> None:
    data = manifest()
    assert "assistant:write" in set(data["oauth_config"]["scopes"]["bot"])
    view = data["features"]["assistant_view"]
    assert view["assistant_description"]
    assert view["suggested_prompts"] == [p.model_dump() for p in DEFAULT_SUGGESTED_PROMPTS]
    assert len(view["suggested_prompts"]) <= MAX_SUGGESTED_PROMPTS


def test_interactivity_is_on_for_the_reply_buttons() -> None:
    interactivity = manifest()["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    # Socket Mode delivers clicks itself; HTTP mode needs the events URL as request_url
    # (the header says so): bolt takes clicks at the same path as events.
    assert "request_url" not in interactivity
    header = MANIFEST.read_text().split("display_information:")[0]
    assert "under settings.interactivity" in header
