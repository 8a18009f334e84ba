"""Feedback on replies: a 👍 or 👎 per user per reply, kept by the conversation store.

Anyone the access lists let use the bot may rate a reply (one vote per user per reply; pressing
the other button changes it, pressing the same one again withdraws it). A vote is stored under
the reply's id with the model that answered, beside the conversation (never in its history: a
vote must not race a generation saving the conversation), so ``/status`` counts them per model:
:func:`feedback_text`. Every store of :mod:`core.stores` is a :class:`FeedbackStore`; a
conversation's votes go when the conversation is deleted or evicted, not when its history is
reset (like its token totals).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .conversations import ConversationKey

__all__ = [
    "DOWN",
    "UP",
    "Counts",
    "FeedbackStore",
    "MemoryFeedback",
    "feedback_text",
    "vote_name",
]

#: A vote: up (👍) or down (👎); 0 withdraws one.
UP = 1
DOWN = -1


@dataclass(frozen=True, slots=True)
class Counts:
    """One model's votes: how many 👍 and how many 👎."""

    up: int = 0
    down: int = 0


@runtime_checkable
class FeedbackStore(Protocol):
    """Votes kept beside the conversations (every store of ``core.stores`` is one)."""

    async def set_vote(
        self, key: ConversationKey, reply_id: str, user: str, model: str, vote: int
    ) -> None:
        """``user``'s vote on the reply ``reply_id`` of ``key`` (answered by ``model``):
        :data:`UP`, :data:`DOWN`, or 0 to withdraw it. One vote per user per reply: a new
        one replaces the last."""
        ...

    async def vote_of(self, key: ConversationKey, reply_id: str, user: str) -> int:
        """``user``'s vote on that reply (0: none)."""
        ...

    async def read_feedback(self, key: ConversationKey) -> dict[str, Counts]:
        """``key``'s votes per model (models without a vote left out)."""
        ...


def vote_name(vote: int) -> str:
    return "👍" if vote > 0 else "👎"


def feedback_text(counts: Mapping[str, Counts]) -> str:
    """The feedback line of ``/status``: ``Feedback here: m 👍 2 👎 1; n 👍 1 👎 0.``"""
    if not counts:
        return "Feedback here: none yet."
    parts = [f"{model} 👍 {c.up} 👎 {c.down}" for model, c in sorted(counts.items())]
    return f"Feedback here: {'; '.join(parts)}."


class MemoryFeedback:
    """The votes of :class:`~core.conversations.MemoryStore`: this process only."""

    def __init__(self) -> None:
        #: (platform, channel) -> (reply id, user) -> (vote, model)
        self._votes: dict[tuple[str, str], dict[tuple[str, str], tuple[int, str]]] = {}

    def set(self, key: ConversationKey, reply_id: str, user: str, model: str, vote: int) -> None:
        votes = self._votes.setdefault((key.platform, key.channel), {})
        if vote:
            votes[(reply_id, user)] = (UP if vote > 0 else DOWN, model)
        else:
            votes.pop((reply_id, user), None)

    def get(self, key: ConversationKey, reply_id: str, user: str) -> int:
        found = self._votes.get((key.platform, key.channel), {}).get((reply_id, user))
        return 0 if found is None else found[0]

    def read(self, key: ConversationKey) -> dict[str, Counts]:
        counts: dict[str, list[int]] = {}
        for vote, model in self._votes.get((key.platform, key.channel), {}).values():
            pair = counts.setdefault(model, [0, 0])
            pair[0 if vote > 0 else 1] += 1
        return {model: Counts(*pair) for model, pair in counts.items()}

    def forget(self, keys: Iterable[ConversationKey]) -> None:
        for key in keys:
            self._votes.pop((key.platform, key.channel), None)
