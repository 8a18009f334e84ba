"""The core's configuration (engine, store, history, policy, providers), read once from the
environment and ``.env``, and what every other settings class reuses.

Every option has a default and a description; ``.env.example`` and the README's table list them.
A wrong value fails at start-up with a message naming the variable and what it expects
(:func:`load_settings`, for this class or any other :class:`EnvSettings`).
Provider keys (``GROQ_API_KEY``, ``AIMLAPI_API``, ...) and ``<PROVIDER>_BASE_URL`` are not fields
here: ``llmconnect``'s provider table reads them, so a provider row stays the only place that names
its variables. A platform's settings (``DISCORD_*``, ``SLACK_*``, ``WEB_*``) live beside its front
end (``bots/<platform>/settings.py``): the core knows no platform.
"""

from __future__ import annotations

import json
import math
import os
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, overload

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from llmconnect import RetryPolicy, Timeouts

if typing.TYPE_CHECKING:
    from .mcp import McpServerConfig

__all__ = [
    "CommaList",
    "EnvSettings",
    "Settings",
    "SettingsError",
    "load_settings",
    "refuse_renamed",
    "split_commas",
]


def split_commas(value: object) -> object:
    """``"A,B, C"`` -> ``["A", "B", "C"]`` (empty items dropped); a list passes as it is."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


#: A comma-separated list in the environment (``A,B, C``), a list in Python.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]

_S = TypeVar("_S", bound=BaseSettings)


class SettingsError(Exception):
    """A setting has a wrong value; the message names the variable and what is expected."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("Invalid configuration:\n  " + "\n  ".join(problems))
        #: One line per problem, ``VARIABLE: what is wrong`` (several classes' can be joined).
        self.problems = problems


class EnvSettings(BaseSettings):
    """Read from the environment and ``.env``, names case-insensitive, an empty value counting as
    unset: the core's settings and every front end's share this."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment > ``.env`` > the configuration file (``llmconnect.toml`` or
        ``LLMCONNECT_CONFIG``, :mod:`core.config_file`) > defaults."""
        from .config_file import ConfigFileSource  # it imports this module

        return (
            init_settings,
            env_settings,
            dotenv_settings,
            ConfigFileSource(settings_cls),
            file_secret_settings,
        )


def refuse_renamed(data: Any, renamed: Mapping[str, str]) -> Any:
    """For a ``mode="before"`` model validator: stop when a replaced variable (a key of
    ``renamed``) is still set, naming its successor, rather than silently ignore it."""
    # ``data`` holds the overrides and .env's unknown names too (lower case); the environment is
    # read here because pydantic-settings passes on only the names it knows from there.
    given = {k.upper() for k, v in os.environ.items() if v.strip()}
    if isinstance(data, dict):
        given |= {str(k).upper() for k, v in data.items() if v not in (None, "")}
    old = sorted(name for name in renamed if name in given)
    if old:
        raise ValueError(
            "; ".join(f"{name} is no longer read: use {renamed[name]}" for name in old)
        )
    return data


class Settings(EnvSettings):
    """The engine's, the store's, the history's, the access policy's and the providers'."""

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
    llmconnect_fallback_models: CommaList = Field(
        default_factory=list,
        description="Models that answer, in order, when the conversation's model is unavailable "
        "before its first token (429, 5xx, timeout, connection, 404 unknown model), "
        "comma-separated provider/model (empty: no fallback).",
    )
    model_list_ttl: float = Field(
        3600.0,
        ge=0,
        description="Seconds a provider's model list is kept before it is asked again, in the "
        "background (0: never ask; each provider's default model only).",
    )
    model_options: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(
        default_factory=dict,
        description='Request options per model, JSON: {"openai/o3": {"reasoning_effort": '
        '"high"}, "groq/*": {"temperature": 0.3}}; the most specific pattern wins '
        "(exact > longer prefix > shorter > *), null removes an option.",
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
    history_max_images: int = Field(
        2,
        ge=0,
        description="Images are sent to the model for this many of the latest turns that have "
        "images; older ones become the text [image: name] (0: only the current message's).",
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
    max_attachments: int = Field(
        5,
        ge=0,
        le=50,
        description="Files read per message; the ones beyond it are skipped with a note (0: "
        "attachments are not read).",
    )
    max_attachment_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        description="Largest file read, in bytes (checked before and while downloading); a "
        "larger one is skipped with a note.",
    )
    max_image_pixels: int = Field(
        2048,
        ge=64,
        le=16_384,
        description="Longest side of an image sent to the model, in pixels; a larger image is "
        "scaled down keeping its aspect.",
    )
    max_text_attachment_chars: int = Field(
        40_000,
        ge=100,
        description="Most characters of a text file inlined into the prompt; the rest is cut "
        "with a note.",
    )
    attachment_download_timeout: float = Field(
        20.0,
        gt=0,
        le=300,
        description="Seconds one attachment's download may take (redirects included); then it "
        "is skipped with a note.",
    )
    admin_user_ids: CommaList = Field(
        default_factory=list,
        description="User ids allowed to change model/system prompt (empty: everyone may) and to "
        "stop or regenerate anyone's reply with its buttons (empty: only the asker may).",
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
    follow_up_in_threads: bool = Field(
        True,
        description="In a thread where the bot has answered, people's further messages are "
        "prompts without a mention.",
    )
    auto_reply_channels: CommaList = Field(
        default_factory=list,
        description="Channel ids where every message is a prompt, no mention needed (empty: none).",
    )
    allow_bots: bool = Field(
        False,
        description="Answer other bots' messages (never the bot's own).",
    )
    user_rate_limit: int = Field(
        10, ge=0, description="Prompts one user may send per window (0: unlimited)."
    )
    user_rate_window: float = Field(
        60.0, gt=0, description="Length in seconds of the per-user rate-limit window."
    )
    user_daily_tokens: int = Field(
        0,
        ge=0,
        description="Tokens (input + output) one user may use per UTC day, across conversations; "
        "at the cap a prompt is refused until 00:00 UTC (0: unlimited).",
    )
    channel_daily_tokens: int = Field(
        0,
        ge=0,
        description="Tokens (input + output) one conversation may use per UTC day; at the cap a "
        "prompt is refused until 00:00 UTC (0: unlimited).",
    )
    model_prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description='Dollars per million input and output tokens, JSON: {"openai/gpt-4o-mini": '
        '[0.15, 0.60], "groq/*": [0.59, 0.79]} (exact name first, else the longest prefix '
        "ending in *); wins over the built-in approximate prices; /status shows the cost.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="How log lines are written to standard error: text, or json (one object "
        "per line with time, level, logger and a reply's fields).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Least severe log level written (INFO: one line per reply)."
    )
    log_content: bool = Field(
        False,
        description="Also log the prompt and the reply's text on the reply's end line (off: "
        "message text is never logged).",
    )
    log_hash_salt: SecretStr | None = Field(
        None,
        description="Salt of the conversation hash in logs (set it to match one conversation's "
        "lines across processes and restarts; empty: random per process).",
    )
    llmconnect_config: str = Field(
        "",
        description="The configuration file (TOML, keys the variables' names in lower case; "
        "empty: llmconnect.toml in the working directory, if there is one).",
    )
    config_poll_interval: float = Field(
        2.0,
        gt=0,
        description="Seconds between checks of the configuration file for a change (SIGHUP "
        "reloads at once).",
    )

    mcp_servers: SecretStr | None = Field(
        None,
        description='MCP servers whose tools the model may call, JSON: {"files": {"command": '
        '["python", "-m", "server", "/srv/docs"], "env": {"K": "v"}}, "search": {"url": '
        '"https://host/mcp", "headers": {"Authorization": "Bearer ..."}}} (stdio or streamable '
        "HTTP); a secret: environment or .env only, never logged (empty: no tools).",
    )
    mcp_default_servers: CommaList = Field(
        default_factory=list,
        description="MCP servers a conversation may use until an admin changes it with /tools "
        "enable|disable, comma-separated names (empty: none; tools are opt-in).",
    )
    tool_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds one tool call may take; then it is cancelled and the model is told "
        "it timed out.",
    )
    tool_max_result_chars: int = Field(
        20_000,
        ge=100,
        description="Most characters of one tool result the model gets; the rest is cut with a "
        "note.",
    )
    tool_confirm_timeout: float = Field(
        60.0,
        gt=0,
        le=3600,
        description='Seconds a call to a "confirm": true MCP server waits for the asker\'s '
        "Approve or Deny button; no answer by then means denied.",
    )
    tool_max_steps: int = Field(
        6,
        ge=1,
        le=50,
        description="Most rounds of tool calls in one reply; then the model must answer in text.",
    )

    show_reasoning: Literal["off", "status", "full"] = Field(
        "status",
        description="What a reasoning model's thinking shows: off (nothing), status (a "
        "'💭 thinking… (12 s)' line until the answer starts), full (the thinking itself: a "
        "quoted block above the answer on Discord and Slack, a collapsed section on the web).",
    )

    reply_buttons: bool = Field(
        True,
        description="Buttons on a reply (Discord, the web; Slack's actions block builds on the "
        "same core): Stop while it streams, then Regenerate and 👍/👎 on the latest reply.",
    )

    @field_validator("mcp_servers")
    @classmethod
    def _mcp_servers(cls, value: SecretStr | None) -> SecretStr | None:
        from .mcp import parse_mcp_servers

        if value is not None:
            parse_mcp_servers(value.get_secret_value())  # a clear error now, never the value
        return value

    @field_validator("mcp_default_servers")
    @classmethod
    def _mcp_default_servers(cls, value: list[str], info: ValidationInfo) -> list[str]:
        from .mcp import parse_mcp_servers

        secret = info.data.get("mcp_servers")
        if not value or "mcp_servers" not in info.data:  # absent: MCP_SERVERS itself is wrong
            return value
        known = parse_mcp_servers(secret.get_secret_value()) if secret is not None else {}
        unknown = [name for name in value if name not in known]
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} not in MCP_SERVERS (configured: {', '.join(known) or 'none'})"
            )
        return value

    def mcp_server_configs(self) -> dict[str, McpServerConfig]:
        """``MCP_SERVERS`` as checked configurations (``{}`` when unset)."""
        from .mcp import parse_mcp_servers

        if self.mcp_servers is None:
            return {}
        return parse_mcp_servers(self.mcp_servers.get_secret_value())

    @field_validator("show_reasoning", mode="before")
    @classmethod
    def _show_reasoning(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("model_prices", mode="before")
    @classmethod
    def _model_prices_json(cls, value: object) -> object:
        # JSON in the environment (pydantic-settings decodes it) and in the file, as a string.
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
        return value

    @field_validator("model_prices")
    @classmethod
    def _model_prices(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, price in value.items():
            if not name.strip():
                raise ValueError("a model name is empty")
            if not all(math.isfinite(p) and p >= 0 for p in price):
                raise ValueError(f"{name}: prices are dollars per million tokens, 0 or more")
        return {name.strip(): price for name, price in value.items()}

    @field_validator("llmconnect_fallback_models")
    @classmethod
    def _fallback_models(cls, value: list[str]) -> list[str]:
        from llmconnect import LLMError, validate_model_id

        for entry in value:
            try:
                validate_model_id(entry)
            except LLMError:
                raise ValueError(
                    f"{entry!r} is not a provider/model name (letters, digits and ._-:/@+)"
                ) from None
        return value

    @field_validator("model_options", mode="before")
    @classmethod
    def _model_options(cls, value: object) -> object:
        from .model_options import parse_model_options

        return parse_model_options(value)

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        from .stores import check_store_url  # imported here: core.stores needs no settings

        return check_store_url(value.strip())

    def timeouts(self) -> Timeouts:
        return Timeouts(
            connect=self.llm_connect_timeout,
            idle=self.llm_idle_timeout,
            max_duration=self.llm_max_duration,
        )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.llm_max_retries)


@overload
def load_settings(cls: None = None, **overrides: object) -> Settings: ...
@overload
def load_settings(cls: type[_S], **overrides: object) -> _S: ...
def load_settings(cls: type[BaseSettings] | None = None, **overrides: object) -> BaseSettings:
    """Read ``cls`` (default: the core's :class:`Settings`; any pydantic-settings class works,
    e.g. a front end's); a wrong value raises :class:`SettingsError` naming the variable.
    ``overrides`` win over the environment; names ``cls`` does not have are ignored."""
    cls = Settings if cls is None else cls
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(_problems(cls, exc)) from None


def _problems(cls: type[BaseSettings], exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        if not err["loc"]:  # about the whole configuration: its input is every value
            lines.append(str(err["msg"]))
            continue
        name = str(err["loc"][0])
        var = name.upper()
        # Never echo the value of a secret back (it would land in a log).
        # Whole words: DISCORD_TOKEN is a secret, USER_DAILY_TOKENS (a count) is not.
        words = set(var.split("_"))
        secret = (
            _secret_field(cls, name)
            or not words.isdisjoint({"TOKEN", "KEY", "SECRET", "PASSWORD"})
            or "STORE_URL" in var
            # a URL holding a user name or password (DISCORD_CDN_URL=https://u:p@host)
            or (var.endswith("_URL") and "@" in str(err.get("input")))
        )
        got = "" if secret else f" (got {err.get('input')!r})"
        lines.append(f"{var}: {err['msg']}{got}{_in_config_file(name)}")
    return lines


def _in_config_file(name: str) -> str:
    """`` (in llmconnect.toml)`` when the wrong value came from the configuration file (it has
    the key, the environment does not), so the operator knows which to fix."""
    from .config_file import config_path, read_config  # it imports this module

    path, _ = config_path()
    try:
        in_file = name in read_config(path, required=False)
    except SettingsError:
        return ""
    return f" (in {path})" if in_file and not os.environ.get(name.upper(), "").strip() else ""


def _secret_field(cls: type[BaseSettings], name: str) -> bool:
    field = cls.model_fields.get(name)
    if field is None:
        return False
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)
