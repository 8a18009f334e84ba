"""The Slack adapter: slack-bolt's ``AsyncApp`` over the core (``llmconnect slack``)."""

from .app import EVENTS_PATH, SlackBot, SlackConfigError, run

__all__ = ["EVENTS_PATH", "SlackBot", "SlackConfigError", "run"]
