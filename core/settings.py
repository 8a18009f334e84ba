"""All configuration, read once from the environment and ``.env`` (one pydantic-settings class).

Every option has a default and a description; ``.env.example`` and the README's table list them.
A wrong value fails at start-up with a message naming the variable and what it expects.
Provider keys (``GROQ_API_KEY``, ``AIMLAPI_API``, ...) and ``<PROVIDER>_BASE_URL`` are not fields
here: ``llmconnect``'s provider table reads them, so a provider row stays the only place that names
its variables.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from llmconnect import RetryPolicy, Timeouts

__all__ = ["Settings", "SettingsError", "load_settings"]

#: A comma-separated list in the environment (``A,B, C``), a list in Python.
CommaList = Annotated[list[str], NoDecode]
#: Discord shard ids, comma-separated (``0,1``).
ShardIds = Annotated[list[int], NoDecode]
#: Variables that were replaced: still setting one stops start-up, naming its successor (an
#: ignored DISCORD_SHARD_ID would run every shard in every process: duplicate answers).
RENAMED = {"DISCORD_SHARD_ID": "DISCORD_SHARD_IDS"}


class SettingsError(Exception):
    """A setting has a wrong value; the message names the variable and what is expected."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
    )

    llmconnect_model: str = Field(
        "echo",
        description="Default model, written provider/model (a bare provider name picks its default).",
    )
    llmconnect_system_prompt: str = Field(
        "", description="Default system prompt for new conversations (empty: none)."
    )
    llmconnect_allowed_models: CommaList = Field(
        default_factory=list,
        description="Models users may switch to, comma-separated (empty: every configured one).",
    )
    llm_connect_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for a provider connection."
    )
    llm_idle_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a reply may go without a content event (keep-alive comments and "
        "partial lines do not count) before it counts as timed out.",
    )
    llm_max_duration: float = Field(
        600.0,
        gt=0,
        description="Seconds a whole reply may take (retries included); then it ends with a note "
        "and keeps the text so far.",
    )
    llm_max_event_bytes: int = Field(
        1 << 20,
        ge=1024,
        description="Largest server-sent event (or whole JSON reply) accepted from a provider, in "
        "bytes; a larger one fails the reply.",
    )
    llm_max_retries: int = Field(
        2, ge=0, le=10, description="Retries before the first token (429, 5xx, connection errors)."
    )
    history_max_messages: int = Field(
        40, ge=2, description="Most messages kept per conversation (oldest whole turns go first)."
    )
    history_max_chars: int = Field(
        24_000, ge=100, description="Most characters of history kept per conversation."
    )
    max_conversations: int = Field(
        10_000,
        ge=1,
        description="Most conversations kept (memory: least recently used evicted; SQLite and "
        "Redis: least recently saved).",
    )
    store_url: str = Field(
        "memory://",
        description="Where conversations live: memory:// (this process), sqlite:///path.db "
        "(survives a restart), redis://host:port/db (shared by several processes).",
    )
    store_ttl: float = Field(
        30 * 24 * 3600.0,
        ge=0,
        description="Seconds an idle conversation is kept in SQLite or Redis (0: until evicted "
        "by MAX_CONVERSATIONS).",
    )
    store_lock_expiry: float = Field(
        30.0,
        gt=0,
        description="Seconds a Redis conversation lock outlives a crashed worker (renewed every "
        "third of it while a reply streams).",
    )
    max_input_chars: int = Field(
        8_000, ge=1, description="Longest prompt accepted; longer ones are refused with the limit."
    )
    max_queued_prompts: int = Field(
        5,
        ge=0,
        description="Prompts that may wait per conversation behind the one being answered (per "
        "process); the next is refused until one ends (0: no waiting, one at a time).",
    )
    discord_edit_interval: float = Field(
        1.2, gt=0, description="Seconds between edits of one Discord message while streaming."
    )
    slack_edit_interval: float = Field(
        1.5, gt=0, description="Seconds between edits of one Slack message while streaming."
    )
    web_edit_interval: float = Field(
        0.05, ge=0, description="Seconds between updates pushed to the web chat."
    )
    admin_user_ids: CommaList = Field(
        default_factory=list,
        description="User ids allowed to change model/system prompt (empty: everyone may).",
    )
    allowed_users: CommaList = Field(
        default_factory=list, description="Only these user ids may use the bot (empty: all)."
    )
    blocked_users: CommaList = Field(
        default_factory=list, description="These user ids are refused."
    )
    allowed_channels: CommaList = Field(
        default_factory=list, description="Only these channel ids are served (empty: all)."
    )
    blocked_channels: CommaList = Field(
        default_factory=list, description="These channel ids are ignored."
    )
    allowed_roles: CommaList = Field(
        default_factory=list, description="Only members with one of these role ids (empty: all)."
    )
    blocked_roles: CommaList = Field(
        default_factory=list, description="Members with any of these role ids are refused."
    )
    user_rate_limit: int = Field(
        10, ge=0, description="Prompts one user may send per window (0: unlimited)."
    )
    user_rate_window: float = Field(
        60.0, gt=0, description="Length in seconds of the per-user rate-limit window."
    )
    discord_token: SecretStr | None = Field(None, description="Discord bot token.")
    discord_api_url: str = Field(
        "https://discord.com/api/v10",
        description="Discord REST base URL (a REST proxy, or a local stand-in in tests).",
    )
    discord_gateway_url: str = Field(
        "wss://gateway.discord.gg/",
        description="Discord gateway URL (a gateway proxy, or a local stand-in in tests).",
    )
    discord_guild_ids: CommaList = Field(
        default_factory=list,
        description="Guild ids to sync slash commands to, instantly (empty: sync globally).",
    )
    discord_requests_per_second: float = Field(
        45.0,
        ge=1,
        le=50,
        description="Bot-wide REST requests/s the streamed replies share (Discord allows 50).",
    )
    discord_shard_count: int | None = Field(
        None,
        ge=1,
        description="Total number of Discord shards (empty: Discord's recommended count, all "
        "run in this process).",
    )
    discord_shard_ids: ShardIds = Field(
        default_factory=list,
        description="The shards this process runs, comma-separated, each 0 .. "
        "DISCORD_SHARD_COUNT-1 (empty: all of them).",
    )
    slack_bot_token: SecretStr | None = Field(None, description="Slack bot token (xoxb-...).")
    slack_app_token: SecretStr | None = Field(
        None, description="Slack app-level token (xapp-...) for Socket Mode."
    )
    slack_signing_secret: SecretStr | None = Field(
        None, description="Slack signing secret, to verify HTTP requests."
    )
    slack_api_url: str = Field(
        "https://slack.com/api/",
        description="Slack Web API base URL (an enterprise proxy, or a local stand-in in tests).",
    )
    slack_streaming: Literal["auto", "native", "update"] = Field(
        "auto",
        description="Slack replies: native streaming in threads and DMs (auto), native everywhere "
        "(native), or chat.postMessage + chat.update only (update).",
    )
    slack_workspace_edit_rate: float = Field(
        50.0,
        gt=0,
        description="Message posts and edits per minute one Slack workspace allows, shared by "
        "all streaming replies (chat.update is Tier 3: about 50/min).",
    )
    slack_http_host: str = Field(
        "0.0.0.0",
        description="Address Slack's HTTP requests (/slack/events) are served on when Slack "
        "runs over HTTP (SLACK_SIGNING_SECRET, no SLACK_APP_TOKEN).",
    )
    slack_http_port: int = Field(
        3000, ge=0, le=65535, description="Port of Slack's HTTP endpoint (0: any free port)."
    )
    web_host: str = Field(
        "127.0.0.1",
        description="Address the web chat listens on (127.0.0.1: this machine only).",
    )
    web_port: int = Field(
        8000, ge=0, le=65535, description="Port of the web chat (0: any free port)."
    )
    web_auth_token: SecretStr | None = Field(
        None,
        description="Token every web chat request must carry (empty: none; set it before "
        "listening beyond 127.0.0.1).",
    )
    web_trusted_proxies: CommaList = Field(
        default_factory=list,
        description="Reverse proxies whose X-Forwarded-For/-Proto the web chat believes, "
        "comma-separated addresses or networks (empty: none; the connecting address is the "
        "client).",
    )
    web_max_body_bytes: int = Field(
        1024 * 1024, ge=1, description="Largest web request body in bytes; a larger one gets 413."
    )
    web_max_streams: int = Field(
        100,
        ge=1,
        description="Reply streams one client address may keep open in the web chat; the next "
        "gets 429.",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # ``data`` holds the overrides and .env's unknown names too (lower case); the environment
        # is read here because pydantic-settings passes on only the names it knows from there.
        given = {k.upper() for k, v in os.environ.items() if v.strip()}
        if isinstance(data, dict):
            given |= {str(k).upper() for k, v in data.items() if v not in (None, "")}
        old = sorted(name for name in RENAMED if name in given)
        if old:
            raise ValueError(
                "; ".join(f"{name} is no longer read: use {RENAMED[name]}" for name in old)
            )
        return data

    @field_validator(
        "llmconnect_allowed_models",
        "admin_user_ids",
        "allowed_users",
        "blocked_users",
        "allowed_channels",
        "blocked_channels",
        "allowed_roles",
        "blocked_roles",
        "discord_guild_ids",
        "discord_shard_ids",
        "web_trusted_proxies",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("discord_guild_ids")
    @classmethod
    def _snowflakes(cls, value: list[str]) -> list[str]:
        bad = [item for item in value if not item.isdigit()]
        if bad:
            raise ValueError(f"expected numeric guild ids, got {', '.join(bad)}")
        return value

    @field_validator("discord_api_url", "discord_gateway_url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        schemes = (
            ("http://", "https://") if info.field_name == "discord_api_url" else ("ws://", "wss://")
        )
        if not value.startswith(schemes):
            raise ValueError(f"expected a URL starting with {' or '.join(schemes)}")
        return value.rstrip("/") if info.field_name == "discord_api_url" else value

    @field_validator("web_trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        bad = []
        for item in value:
            try:
                ipaddress.ip_network(item)  # strict, as uvicorn reads it
            except ValueError:
                bad.append(item)
        if bad:
            raise ValueError(f"expected IP addresses or networks, got {', '.join(bad)}")
        return value

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        from .stores import check_store_url  # imported here: core.stores needs no settings

        return check_store_url(value.strip())

    @field_validator("discord_shard_ids")
    @classmethod
    def _shards(cls, value: list[int], info: ValidationInfo) -> list[int]:
        if not value or "discord_shard_count" not in info.data:
            return value  # nothing to check, or DISCORD_SHARD_COUNT itself is wrong (said so)
        count = info.data["discord_shard_count"]
        if count is None:
            raise ValueError("needs DISCORD_SHARD_COUNT, the total number of shards")
        if any(not 0 <= i < count for i in value):
            raise ValueError(
                f"expected shard ids from 0 to {count - 1} (DISCORD_SHARD_COUNT={count})"
            )
        twice = sorted({str(i) for i in value if value.count(i) > 1})
        if twice:
            raise ValueError(f"expected each shard id once, {', '.join(twice)} is listed twice")
        return value

    def timeouts(self) -> Timeouts:
        return Timeouts(
            connect=self.llm_connect_timeout,
            idle=self.llm_idle_timeout,
            max_duration=self.llm_max_duration,
        )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.llm_max_retries)


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a wrong value raises :class:`SettingsError` naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if not err["loc"]:  # about the whole configuration: its input is every value
                lines.append(str(err["msg"]))
                continue
            var = str(err["loc"][0]).upper()
            # Never echo the value of a secret back (it would land in a log).
            secret = any(w in var for w in ("TOKEN", "KEY", "SECRET", "PASSWORD", "STORE_URL"))
            got = "" if secret else f" (got {err.get('input')!r})"
            lines.append(f"{var}: {err['msg']}{got}")
        raise SettingsError("Invalid configuration:\n  " + "\n  ".join(lines)) from None
