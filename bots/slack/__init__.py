"""The Slack adapter: slack-bolt's ``AsyncApp`` over the core (``llmconnect slack``).

The names below load on first use (PEP 562): ``bots.slack.settings`` and ``bots.slack.frontend``
are importable without importing slack-bolt (``llmconnect doctor``, the front-end registry).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["EVENTS_PATH", "SlackBot", "SlackConfigError", "SlackFrontEnd", "SlackSettings"]

_WHERE = {
    "EVENTS_PATH": "app",
    "SlackBot": "app",
    "SlackConfigError": "app",
    "SlackFrontEnd": "frontend",
    "SlackSettings": "settings",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
