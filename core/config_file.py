"""The configuration file: ``llmconnect.toml`` in the working directory, or ``LLMCONNECT_CONFIG``.

Its keys are the variables' names in lower case (``user_rate_limit = 20``); every settings class
(:class:`core.settings.EnvSettings`) reads it after the environment and ``.env``, so those win:
environment > ``.env`` > file > default. Secrets (tokens, keys, the signing secret, provider keys)
are refused in the file: a file is more often copied, shared and committed than an environment.
What may change while the process runs, and how a change is applied, is :data:`LIVE_KEYS` and
:class:`bots.run.Runner`'s ``reload``.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, InitSettingsSource

from llmconnect import PROVIDERS

from .settings import EnvSettings, SettingsError, _secret_field

__all__ = [
    "DEFAULT_CONFIG",
    "LIVE_KEYS",
    "ConfigFileSource",
    "config_path",
    "file_signature",
    "is_secret_key",
    "read_config",
    "unknown_keys",
]

#: Read from the working directory when ``LLMCONNECT_CONFIG`` is not set (absent: no file).
DEFAULT_CONFIG = "llmconnect.toml"

#: The core's settings a running process takes from a changed file for the next prompt; a change
#: to any other key (store, ports, hosts, tokens, shard settings) needs a restart.
LIVE_KEYS = frozenset(
    {
        "llmconnect_model",
        "llmconnect_system_prompt",
        "llmconnect_allowed_models",
        "llmconnect_fallback_models",
        "model_options",
        "model_list_ttl",
        "llm_connect_timeout",
        "llm_idle_timeout",
        "llm_max_duration",
        "llm_max_event_bytes",
        "llm_max_retries",
        "history_max_messages",
        "history_max_chars",
        "history_max_images",
        "max_attachments",
        "max_attachment_bytes",
        "max_image_pixels",
        "max_text_attachment_chars",
        "attachment_download_timeout",
        "max_input_chars",
        "max_queued_prompts",
        "admin_user_ids",
        "user_daily_tokens",
        "channel_daily_tokens",
        "model_prices",
        "allowed_users",
        "blocked_users",
        "allowed_channels",
        "blocked_channels",
        "allowed_roles",
        "blocked_roles",
        "follow_up_in_threads",
        "auto_reply_channels",
        "allow_bots",
        "user_rate_limit",
        "user_rate_window",
        "config_poll_interval",
        "mcp_default_servers",
        "tool_timeout",
        "tool_max_result_chars",
        "tool_max_steps",
        "tool_confirm_timeout",
    }
)

_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "SALT")


def config_path(env: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """The file to read, and whether it was named explicitly (``LLMCONNECT_CONFIG``: it must
    then exist)."""
    env = os.environ if env is None else env
    named = env.get("LLMCONNECT_CONFIG", "").strip()
    return (Path(named), True) if named else (Path(DEFAULT_CONFIG), False)


def is_secret_key(name: str) -> bool:
    """Whether ``name`` is a secret, which only the environment or ``.env`` may give: a
    provider key, a ``SecretStr`` field of any settings class, or a name that says so."""
    var = name.upper()
    if any(var in spec.key_vars for spec in PROVIDERS.values()):
        return True
    if any(_secret_field(cls, name.lower()) for cls in _settings_classes(EnvSettings)):
        return True
    # Whole words of the name: DISCORD_TOKEN is a secret, USER_DAILY_TOKENS (a count) is not.
    return not set(var.replace("-", "_").split("_")).isdisjoint(_SECRET_WORDS)


def _settings_classes(cls: type[BaseSettings]) -> list[type[BaseSettings]]:
    """``cls`` and every subclass imported so far (each front end's settings among them)."""
    found = [cls]
    for sub in cls.__subclasses__():
        found += _settings_classes(sub)
    return found


def read_config(path: Path | None = None, *, required: bool | None = None) -> dict[str, Any]:
    """The file's keys (lower case); ``{}`` when there is no file (and none was named).

    :class:`SettingsError`, one line naming the file (and the key), for a file that is not TOML,
    not readable, named but missing, or that holds a secret or a table.
    """
    if path is None:
        path, named = config_path()
        required = named if required is None else required
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise SettingsError([f"{path}: no such file (LLMCONNECT_CONFIG)"]) from None
        return {}
    except OSError as exc:
        raise SettingsError([f"{path}: cannot be read ({exc.strerror})"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError([f"{path}: not valid TOML: {exc}"]) from None
    problems = []
    for key, value in data.items():
        if is_secret_key(key):
            # The value is never shown: it is a secret.
            problems.append(
                f"{path}: {key} is a secret; set {key.upper()} in the environment or .env, "
                "not in the file"
            )
        elif isinstance(value, dict):
            problems.append(f"{path}: {key} is a table; settings are top-level keys")
    if problems:
        raise SettingsError(problems)
    return {key.lower(): value for key, value in data.items()}


def file_signature(path: Path) -> tuple[int, int, str] | None:
    """(mtime, size, SHA-256) of the file, ``None`` when absent: what the poll compares (the
    hash catches an edit that keeps size and a coarse mtime)."""
    try:
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, digest


class ConfigFileSource(InitSettingsSource):
    """The file as a pydantic-settings source: its keys that ``settings_cls`` has (others are
    another class's, or unknown: :func:`unknown_keys`)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        data = read_config()
        known = {k: v for k, v in data.items() if k in settings_cls.model_fields}
        super().__init__(settings_cls, known)


def unknown_keys(data: Mapping[str, Any], classes: list[type[BaseSettings]]) -> list[str]:
    """The file's keys no settings class has (a typo, or a setting of an older version)."""
    known = {name for cls in classes for name in cls.model_fields}
    return sorted(key for key in data if key not in known)
