"""The web chat's settings (``WEB_*``): read without importing FastAPI or uvicorn."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, field_validator

from core.settings import CommaList, EnvSettings

__all__ = ["LOOPBACK_HOSTS", "WebSettings", "is_loopback"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``127.x``, ``localhost``, ``::1``)."""
    return host.strip("[]").lower() in LOOPBACK_HOSTS or host.startswith("127.")


class WebSettings(EnvSettings):
    """Where the web chat listens, its token, its bounds and its pace."""

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
    web_edit_interval: float = Field(
        0.05, ge=0, description="Seconds between updates pushed to the web chat."
    )

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
