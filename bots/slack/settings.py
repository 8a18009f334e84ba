"""The Slack bot's settings (``SLACK_*``): read without importing slack-bolt or aiohttp."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from core.settings import CommaList, EnvSettings

__all__ = ["DEFAULT_SUGGESTED_PROMPTS", "MAX_SUGGESTED_PROMPTS", "SlackSettings", "SuggestedPrompt"]

#: Slack shows at most this many suggested prompts in an assistant thread.
MAX_SUGGESTED_PROMPTS = 4


class SuggestedPrompt(BaseModel):
    """One suggested prompt: the ``title`` Slack shows and the ``message`` a click sends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str = Field(min_length=1)
    message: str = Field(min_length=1)


DEFAULT_SUGGESTED_PROMPTS = (
    SuggestedPrompt(
        title="Explain something simply",
        message="Explain the idea I name next in plain words, with one example.",
    ),
    SuggestedPrompt(
        title="Summarize a text",
        message="Summarize the text I paste next in five short bullet points.",
    ),
    SuggestedPrompt(
        title="Review some code",
        message="Review the code I paste next: what does it do, and what would you change?",
    ),
)


def _prompts(value: Any) -> Any:
    """``SLACK_SUGGESTED_PROMPTS`` from the environment: JSON, a list whose items are a text
    (title and message alike) or ``{"title", "message"}``."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    if isinstance(value, list):
        return [{"title": v, "message": v} if isinstance(v, str) else v for v in value]
    return value


class SlackSettings(EnvSettings):
    """The tokens, the endpoints, the streaming mode and the pace of the Slack bot."""

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
    slack_files_url: CommaList = Field(
        default_factory=lambda: ["https://files.slack.com"],
        description="Hosts files are downloaded from (with the bot token), comma-separated "
        "(Slack's file host; a local stand-in in tests); a file anywhere else is never fetched.",
    )
    slack_streaming: Literal["auto", "native", "update"] = Field(
        "auto",
        description="Slack replies: native streaming in threads and DMs (auto), native everywhere "
        "(native), or chat.postMessage + chat.update only (update).",
    )
    slack_workspace_edit_rate: float = Field(
        50.0,
        gt=0,
        description="chat.update calls per minute one Slack workspace allows (Tier 3: about "
        "50/min), shared by all streaming replies; a final update always keeps its slot.",
    )
    slack_workspace_post_rate: float = Field(
        300.0,
        gt=0,
        description="chat.postMessage calls per minute one Slack workspace allows the bot's "
        "replies (Slack: several hundred per minute, beside the per-channel limit).",
    )
    slack_channel_post_rate: float = Field(
        1.0,
        gt=0,
        description="chat.postMessage calls per second in one channel (Slack: about 1/s).",
    )
    slack_channel_post_burst: int = Field(
        3,
        ge=1,
        le=100,
        description="Posts one channel may take at once before SLACK_CHANNEL_POST_RATE paces "
        "them (Slack allows short bursts).",
    )
    slack_stream_rate: float = Field(
        100.0,
        gt=0,
        description="Native streaming calls (chat.startStream, appendStream, stopStream) per "
        "minute one Slack workspace allows (taken as Tier 4: about 100/min), shared by all "
        "native streams; a stream's stop always keeps its slot.",
    )
    slack_status_rate: float = Field(
        50.0,
        gt=0,
        description="assistant.threads.setStatus calls per minute one Slack workspace allows "
        "(Tier 3: about 50/min): the thinking status of native streams. An update is skipped "
        "when no call is free at once; clearing a status always keeps its slot.",
    )
    slack_suggested_prompts: Annotated[list[SuggestedPrompt], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_SUGGESTED_PROMPTS),
        max_length=MAX_SUGGESTED_PROMPTS,
        description="Prompts Slack suggests when someone opens a thread with the app in its "
        'assistant pane, JSON: ["Summarize this", {"title": "Explain", "message": "Explain '
        "...\"}] (at most 4, Slack's limit; a text is title and message at once; [] for none).",
    )
    slack_http_host: str = Field(
        "0.0.0.0",
        description="Address Slack's HTTP requests (/slack/events) are served on when Slack "
        "runs over HTTP (SLACK_SIGNING_SECRET, no SLACK_APP_TOKEN).",
    )
    slack_http_port: int = Field(
        3000, ge=0, le=65535, description="Port of Slack's HTTP endpoint (0: any free port)."
    )
    slack_max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest body of a Slack HTTP request in bytes; a larger one gets 413 before "
        "anything reads it.",
    )
    slack_edit_interval: float = Field(
        1.5, gt=0, description="Seconds between edits of one Slack message while streaming."
    )
    slack_final_update_gap: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Seconds a reply's final chat.update waits after its previous update (one "
        "update of a message per second), instead of SLACK_EDIT_INTERVAL (0: finals wait the "
        "interval too).",
    )

    @field_validator("slack_suggested_prompts", mode="before")
    @classmethod
    def _suggested_prompts(cls, value: Any) -> Any:
        return _prompts(value)

    @field_validator("slack_files_url")
    @classmethod
    def _file_hosts(cls, value: list[str]) -> list[str]:
        from core.attachments import check_file_hosts

        return check_file_hosts(value)

    @property
    def configured(self) -> bool:
        """Whether ``llmconnect run`` starts the bot: the bot token, and the app-level token
        (Socket Mode) or the signing secret (HTTP)."""
        return self.slack_bot_token is not None and (
            self.slack_app_token is not None or self.slack_signing_secret is not None
        )

    @property
    def socket_mode(self) -> bool:
        """Socket Mode when the app-level token is set, else HTTP."""
        return self.slack_app_token is not None
