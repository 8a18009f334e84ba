"""The web chat's settings (``WEB_*``, :mod:`bots.web.settings`): defaults, the token a secret."""

from __future__ import annotations

import pytest

from bots.web.settings import WebSettings, is_loopback
from core.settings import SettingsError, load_settings


def test_defaults() -> None:
    s = load_settings(WebSettings)
    assert (s.web_host, s.web_port, s.web_auth_token) == ("127.0.0.1", 8000, None)
    assert s.web_edit_interval == 0.05


def test_the_token_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(WebSettings, web_auth_token=["a", "TOKEN-VALUE"], web_port="eighty")
    message = str(info.value)
    assert "WEB_AUTH_TOKEN" in message
    assert "TOKEN-VALUE" not in message
    assert "'eighty'" in message


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.2", "example.com"):
        assert not is_loopback(host), host


def test_every_field_has_a_description() -> None:
    for name, field in WebSettings.model_fields.items():
        assert field.description, name
        assert name.startswith("web_"), name
