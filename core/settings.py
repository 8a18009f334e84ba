"""All configuration, read once from the environment and ``.env`` (one pydantic-settings class).

Every option has a default and a description; ``.env.example`` and the README's table list them.
A wrong value fails at start-up with a message naming the variable and what it expects.
Provider keys (``GROQ_API_KEY``, ``AIMLAPI_API``, ...) and ``<PROVIDER>_BASE_URL`` are not fields
here: ``llmconnect``'s provider table reads them, so a provider row stays the only place that names
its variables.
"""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmconnect import RetryPolicy, Timeouts

__all__ = ["Settings", "SettingsError", "load_settings"]


class SettingsError(Exception):
    """A setting has a wrong value; the message names the variable and what is expected."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    llmconnect_model: str = Field(
        "echo",
        description="Default model, written provider/model (a bare provider name picks its default).",
    )
    llmconnect_system_prompt: str = Field(
        "", description="Default system prompt for new conversations (empty: none)."
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
