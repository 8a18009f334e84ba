"""Who may use the bot, how often, and who may change a conversation's settings."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .clock import Clock, MonotonicClock
from .settings import Settings

__all__ = ["AccessPolicy", "Actor", "SlidingLog", "UserRateLimiter", "is_prompt"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who sent a request, as the adapter knows it."""

    user_id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    #: The platform's own notion of admin (Discord Manage Server, Slack workspace admin).
    platform_admin: bool = False


class AccessPolicy:
    """Allow/block lists for users, roles and channels, and the admin rule."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def refusal(self, actor: Actor | None, channel: str, parent: str | None = None) -> str | None:
        """A short reason when ``actor`` may not use the bot in ``channel``; else ``None``.

        ``parent`` is the channel a thread belongs to: a thread is served when it or its parent
        channel is allowed, and refused when either is blocked (channel lists name channels, and
        a thread id is rarely known in advance).
        """
        s = self.settings
        channels = {channel} if parent is None else {channel, parent}
        if not channels.isdisjoint(s.blocked_channels) or (
            s.allowed_channels and channels.isdisjoint(s.allowed_channels)
        ):
            return "I am not enabled in this channel."
        if actor is None:
            return None
        if actor.user_id in s.blocked_users or (
            s.blocked_roles and actor.roles & set(s.blocked_roles)
        ):
            return "Sorry, you are not allowed to use this bot."
        if s.allowed_users and actor.user_id not in s.allowed_users:
            if not (s.allowed_roles and actor.roles & set(s.allowed_roles)):
                return "Sorry, you are not allowed to use this bot."
        elif s.allowed_roles and not s.allowed_users and not actor.roles & set(s.allowed_roles):
            return "Sorry, you are not allowed to use this bot."
        return None

    def is_admin(self, actor: Actor | None) -> bool:
        """Admins change model and system prompt. With no admin ids configured, everyone may."""
        if not self.settings.admin_user_ids:
            return True
        return actor is not None and (
            actor.platform_admin or actor.user_id in self.settings.admin_user_ids
        )

    def may_control(self, actor: Actor | None, asker: str | None) -> bool:
        """Whether ``actor`` may stop or regenerate a reply ``asker`` asked for (its buttons).

        The asker may; so may an admin, and here only an explicit one (``ADMIN_USER_IDS`` or the
        platform's own admin): unlike :meth:`is_admin`, an empty ``ADMIN_USER_IDS`` does not make
        everyone one, or anyone could stop anyone's answer. No actor (the web chat: whoever
        reaches the page is its operator) may; a reply without a recorded asker only admins.
        """
        if actor is not None and asker is not None and actor.user_id == asker:
            return True
        return self.is_explicit_admin(actor)

    def is_explicit_admin(self, actor: Actor | None) -> bool:
        """An admin by ``ADMIN_USER_IDS`` or the platform's own admin role; no actor (the web
        chat's operator) is one. Unlike :meth:`is_admin`, an empty ``ADMIN_USER_IDS`` makes
        nobody else one: for what must not fall to anyone by default (stopping someone else's
        reply, enabling tool servers)."""
        if actor is None:
            return True
        return actor.platform_admin or actor.user_id in self.settings.admin_user_ids


class SlidingLog:
    """At most ``limit`` events per key in any ``window`` seconds: a log of event times per key.

    :meth:`wait` says how long a key must wait, :meth:`record` logs an event. Memory stays
    bounded: past 10,000 keys, those whose whole log has expired are forgotten.
    """

    def __init__(self, limit: int, window: float, clock: Clock | None = None) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock or MonotonicClock()
        self._log: dict[str, deque[float]] = {}

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may have another event (0: now)."""
        log = self._log.get(key)
        if not log:
            return 0.0
        now = self.clock.now()
        while log and now - log[0] >= self.window:
            log.popleft()
        return self.window - (now - log[0]) if len(log) >= self.limit else 0.0

    def record(self, key: str) -> None:
        now = self.clock.now()
        self._log.setdefault(key, deque(maxlen=self.limit)).append(now)
        if len(self._log) > 10_000:
            for stale in [
                k for k, log in self._log.items() if not log or now - log[-1] >= self.window
            ]:
                del self._log[stale]


class UserRateLimiter(SlidingLog):
    """At most ``limit`` prompts per user in any ``window`` seconds (0: no limit)."""

    def retry_after(self, user_id: str) -> float:
        """0 and the prompt is counted when allowed; else seconds until the next is allowed."""
        if self.limit <= 0:
            return 0.0
        wait = self.wait(user_id)
        if wait <= 0:
            self.record(user_id)
        return wait


def is_prompt(
    settings: Settings,
    *,
    mention: bool,
    direct: bool,
    followed_thread: bool,
    channel: str,
    parent: str | None = None,
    author_is_bot: bool = False,
    author_is_self: bool = False,
) -> bool:
    """Whether a message is a prompt for the bot: the one rule every front end asks.

    Never the bot's own message, nor another bot's unless ``ALLOW_BOTS``. A mention or a direct
    message always is; so is a message in a thread where the bot has answered
    (``followed_thread``) while ``FOLLOW_UP_IN_THREADS``, and any message in an
    ``AUTO_REPLY_CHANNELS`` channel (or a thread of one: ``parent``).
    """
    if author_is_self or (author_is_bot and not settings.allow_bots):
        return False
    if mention or direct:
        return True
    if followed_thread and settings.follow_up_in_threads:
        return True
    auto = settings.auto_reply_channels
    return bool(auto) and (channel in auto or (parent is not None and parent in auto))
