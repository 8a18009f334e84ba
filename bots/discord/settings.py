"""The Discord bot's settings (``DISCORD_*``): read without importing discord.py."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

from core.settings import CommaList, EnvSettings, refuse_renamed, split_commas

__all__ = ["RENAMED", "DiscordSettings"]

#: Discord shard ids, comma-separated (``0,1``).
ShardIds = Annotated[list[int], NoDecode, BeforeValidator(split_commas)]
#: Variables that were replaced: still setting one stops start-up, naming its successor (an
#: ignored DISCORD_SHARD_ID would run every shard in every process: duplicate answers).
RENAMED = {"DISCORD_SHARD_ID": "DISCORD_SHARD_IDS"}


class DiscordSettings(EnvSettings):
    """The token, the endpoints, the shards and the pace of the Discord bot."""

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
    discord_cdn_url: CommaList = Field(
        default_factory=lambda: ["https://cdn.discordapp.com", "https://media.discordapp.net"],
        description="Hosts attachments are downloaded from, comma-separated (Discord's CDN; a "
        "local stand-in in tests); a file anywhere else is never fetched.",
    )
    discord_reply_chain_depth: int = Field(
        10,
        ge=0,
        le=50,
        description="Messages of a reply chain read as context: a message that replies to "
        "another brings its text and files, and so on up the chain, at most this many (0: none).",
    )
    discord_thread_per_question: bool = Field(
        False,
        description="Answer a channel mention in a new thread made from the question (named "
        "after it); the thread is then its own conversation.",
    )
    discord_message_content: bool = Field(
        False,
        description="Ask Discord for the privileged Message Content intent (enable it for the "
        "bot in the developer portal first): without it Discord sends no text or files of "
        "messages that do not mention the bot, so a reply chain of ordinary messages reads "
        "empty.",
    )
    discord_edit_interval: float = Field(
        1.2, gt=0, description="Seconds between edits of one Discord message while streaming."
    )
    discord_channel_edits: int = Field(
        5,
        ge=0,
        le=50,
        description="Edits one reply makes in any DISCORD_CHANNEL_EDIT_WINDOW seconds (Discord's "
        "per-channel bucket, about 5 per 5 s); a final edit goes as soon as this has room instead "
        "of waiting DISCORD_EDIT_INTERVAL (0: finals wait the interval too).",
    )
    discord_channel_edit_window: float = Field(
        5.0,
        gt=0,
        le=60,
        description="Seconds of the window DISCORD_CHANNEL_EDITS counts edits in.",
    )

    @property
    def configured(self) -> bool:
        """Whether ``llmconnect run`` starts the bot: ``DISCORD_TOKEN`` is set."""
        return self.discord_token is not None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return refuse_renamed(data, RENAMED)

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

    @field_validator("discord_cdn_url")
    @classmethod
    def _file_hosts(cls, value: list[str]) -> list[str]:
        from core.attachments import check_file_hosts

        return check_file_hosts(value)

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
