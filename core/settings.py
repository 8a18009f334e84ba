"""All configuration, read once from the environment and ``.env`` (one pydantic-settings class).

Every option has a default and a description; ``.env.example`` and the README's table list them.
A wrong value fails at start-up with a message naming the variable and what it expects.
Provider keys (``GROQ_API_KEY``, ``AIMLAPI_API``, ...) and ``<PROVIDER>_BASE_URL`` are not fields
here: ``llmconnect``'s provider table reads them, so a provider row stays the only place that names
its variables.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from llmconnect import RetryPolicy, Timeouts

__all__ = ["Settings", "SettingsError", "load_settings"]

#: A comma-separated list in the environment (``A,B, C``), a list in Python.
CommaList = Annotated[list[str], NoDecode]


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
        60.0, gt=0, description="Seconds a stream may stay silent before it counts as timed out."
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
        10_000, ge=1, description="Most conversations kept in memory (least recently used evicted)."
    )
    max_input_chars: int = Field(
        8_000, ge=1, description="Longest prompt accepted; longer ones are refused with the limit."
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
    slack_bot_token: SecretStr | None = Field(None, description="Slack bot token (xoxb-...).")
    slack_app_token: SecretStr | None = Field(
        None, description="Slack app-level token (xapp-...) for Socket Mode."
    )
    slack_signing_secret: SecretStr | None = Field(
        None, description="Slack signing secret, to verify HTTP requests."
    )

    @field_validator(
        "llmconnect_allowed_models",
        "admin_user_ids",
        "allowed_users",
        "blocked_users",
        "allowed_channels",
        "blocked_channels",
        "allowed_roles",
        "blocked_roles",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    def timeouts(self) -> Timeouts:
        return Timeouts(connect=self.llm_connect_timeout, idle=self.llm_idle_timeout)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.llm_max_retries)


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a wrong value raises :class:`SettingsError` naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            var = str(err["loc"][0]).upper() if err["loc"] else "?"
            # Never echo the value of a secret back (it would land in a log).
            secret = any(w in var for w in ("TOKEN", "KEY", "SECRET", "PASSWORD"))
            got = "" if secret else f" (got {err.get('input')!r})"
            lines.append(f"{var}: {err['msg']}{got}")
        raise SettingsError("Invalid configuration:\n  " + "\n  ".join(lines)) from None
