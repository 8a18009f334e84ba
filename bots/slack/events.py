"""Where a Slack message belongs: its conversation, and where the answer goes.

Why a module: every Slack entry point (``app_mention``, a DM, ``/ask``) must agree on the same
rules, which are core's (a channel is a conversation; a thread is its own conversation that
starts from its channel's model and system prompt) plus one Slack fact: native streaming can only
write *into a thread*. A top-level question answered by a native stream therefore gets its
answer in the question's thread, and that thread is remembered as part of the question's
conversation (:class:`Threads`), so a follow-up there continues it instead of starting afresh.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from core.conversations import ConversationKey

__all__ = ["PLATFORM", "Place", "Threads", "message_author", "well_formed"]

PLATFORM = "slack"


@dataclass(frozen=True, slots=True)
class Place:
    """One request: who asked where, its conversation, and where the answer goes."""

    team_id: str
    channel: str
    user_id: str
    key: ConversationKey
    parent: ConversationKey | None = None
    #: The thread the answer goes to (``None``: the top level of ``channel``).
    thread_ts: str | None = None
    #: The question's own message, under which a native stream answers a top-level question.
    anchor_ts: str | None = None

    @property
    def is_dm(self) -> bool:
        return self.channel.startswith("D")


class Threads:
    """Maps Slack messages to conversation keys, remembering the threads the bot opened."""

    def __init__(self, max_threads: int = 10_000) -> None:
        self._opened: OrderedDict[tuple[str, str], ConversationKey] = OrderedDict()
        #: Threads the bot has answered in (any conversation): follow-ups there need no mention.
        self._answered: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._max = max_threads

    @staticmethod
    def channel_key(channel: str) -> ConversationKey:
        return ConversationKey(PLATFORM, channel)

    def place(
        self,
        *,
        team_id: str,
        channel: str,
        user_id: str,
        ts: str | None = None,
        thread_ts: str | None = None,
    ) -> Place:
        """The place of a message ``ts`` (in thread ``thread_ts``, if any)."""
        if thread_ts and thread_ts != ts:
            opened = self._opened.get((channel, thread_ts))
            if opened is not None:
                self._opened.move_to_end((channel, thread_ts))
                return Place(team_id, channel, user_id, opened, thread_ts=thread_ts)
            key = ConversationKey(PLATFORM, f"{channel}/{thread_ts}")
            parent = self.channel_key(channel)
            return Place(team_id, channel, user_id, key, parent, thread_ts=thread_ts)
        return Place(team_id, channel, user_id, self.channel_key(channel), anchor_ts=ts)

    def answered(self, channel: str, thread_ts: str) -> None:
        """The bot answered in the thread ``thread_ts`` of ``channel``."""
        self._answered[(channel, thread_ts)] = None
        self._answered.move_to_end((channel, thread_ts))
        while len(self._answered) > self._max:
            self._answered.popitem(last=False)

    def has_answered(self, channel: str, thread_ts: str) -> bool:
        """Whether the bot answered in that thread (opened it or answered a question there),
        as far as this process remembers (the latest ``max_threads`` threads)."""
        return (channel, thread_ts) in self._answered or (channel, thread_ts) in self._opened

    def opened(self, channel: str, thread_ts: str, key: ConversationKey) -> None:
        """The bot answered ``key`` in the thread ``thread_ts``: follow-ups there continue it."""
        self._opened[(channel, thread_ts)] = key
        self._opened.move_to_end((channel, thread_ts))
        while len(self._opened) > self._max:
            self._opened.popitem(last=False)


#: The event and envelope fields the bot reads: strings whenever Slack sends them.
_EVENT_FIELDS = ("channel", "user", "text", "ts", "thread_ts", "team", "channel_type", "subtype")
_BODY_FIELDS = ("team_id", "event_id")


def well_formed(body: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether the fields the bot reads are strings (or absent). A signed request can still hold
    anything; one that does not look like Slack's is ignored instead of failing in a listener."""
    return all(isinstance(event.get(k) or "", str) for k in _EVENT_FIELDS) and all(
        isinstance(body.get(k) or "", str) for k in _BODY_FIELDS
    )


#: Message subtypes a person's own new message may have: a message that shares files.
_USER_SUBTYPES = ("", "file_share")


def message_author(event: dict[str, Any]) -> tuple[str, bool] | None:
    """Who wrote a new message (user id, or bot id for a legacy bot message) and whether a bot
    did; ``None`` for edits, deletions, system messages and anything without an author."""
    subtype = event.get("subtype") or ""
    if subtype not in (*_USER_SUBTYPES, "bot_message"):
        return None
    author = event.get("user") or event.get("bot_id")
    if not author:
        return None
    return author, bool(event.get("bot_id")) or subtype == "bot_message"
