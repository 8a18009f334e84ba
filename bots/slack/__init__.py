"""The Slack adapter: slack-bolt's ``AsyncApp`` over the core (``llmconnect slack``).

The names below load on first use (PEP 562): ``bots.slack.settings`` and ``bots.slack.frontend``
are importable without importing slack-bolt (``llmconnect doctor``, the front-end registry).
"""

from __future__ import annotations

from bots.lazy import lazy_attributes

__all__ = ["EVENTS_PATH", "SlackBot", "SlackConfigError", "SlackFrontEnd", "SlackSettings"]

_WHERE = {
    "EVENTS_PATH": "app",
    "SlackBot": "app",
    "SlackConfigError": "app",
    "SlackFrontEnd": "frontend",
    "SlackSettings": "settings",
}

__getattr__ = lazy_attributes(__name__, _WHERE)
