"""Conversations and where they live.

A conversation is keyed ``(platform, channel)``; a thread is its own conversation that starts from
its parent channel's model and system prompt. ``MemoryStore`` keeps them in memory (the
default store) with bounds: per conversation at most N messages and a character budget — the oldest whole
turns go first, the system prompt (a separate field) never — and at most M conversations, least
recently used evicted. An idle conversation is a few small objects; nothing runs for it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from .usage import MemoryUsage, Tokens, UsageReport

__all__ = [
    "Conversation",
    "ConversationKey",
    "ConversationStore",
    "MemoryStore",
    "Message",
    "Status",
    "clean_text",
    "load_conversation",
    "new_conversation",
]

log = logging.getLogger("llmconnect.store")


def clean_text(text: str) -> str:
    """``text`` as valid Unicode: a lone surrogate (``"\\ud800"`` from JSON, which UTF-8 cannot
    encode and so no page, store or platform can take) becomes U+FFFD; a surrogate pair written as
    two code points becomes its one character. Every text entering the engine goes through here.
    """
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 with surrogatepass joins well-formed pairs; decoding with "replace" turns
        # each lone half into U+FFFD.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


class ConversationKey(NamedTuple):
    platform: str
    channel: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.channel}"


class Status(StrEnum):
    PENDING = "pending"
    STREAMING = "streaming"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"


FINAL = frozenset({Status.COMPLETE, Status.ERROR, Status.CANCELLED})


@dataclass(slots=True)
class Message:
    role: str  # "user" | "assistant"
    content: str = ""
    status: Status = Status.COMPLETE
    created_at: float = field(default_factory=time.time)
    #: The user-facing error line of an errored reply.
    error: str | None = None
    #: While streaming, the deltas so far (shared with the engine's reply: no copy per delta).
    parts: list[str] | None = None
    #: An assistant reply's model, ``provider/model``: the one that answered (a fallback when
    #: the conversation's was unavailable); ``None`` in replies stored before it was recorded.
    model: str | None = None
    #: The models that were unavailable before ``model`` answered (LLMCONNECT_FALLBACK_MODELS);
    #: a tuple, so the common case (none) costs no object per message.
    unavailable: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """What the user sees now: the deltas so far while streaming, else ``content``."""
        return "".join(self.parts) if self.parts is not None else self.content

    def finish(self, status: Status, error: str | None = None) -> None:
        if self.parts is not None:
            self.content = "".join(self.parts)
            self.parts = None
        self.status = status
        self.error = error

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "role": self.role,
            "content": self.text,
            "status": str(self.status),
            "created_at": self.created_at,
            "error": self.error,
        }
        if self.model is not None:  # an assistant reply's (absent: a user turn, an old reply)
            data["model"] = self.model
        if self.unavailable:
            data["unavailable"] = list(self.unavailable)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """The inverse of :meth:`to_dict` (a stored message is never mid-stream: no ``parts``)."""
        return cls(
            role=clean_text(str(data["role"])),
            content=clean_text(str(data.get("content") or "")),
            status=Status(data.get("status", Status.COMPLETE)),
            created_at=float(data.get("created_at") or 0.0),
            error=None if data.get("error") is None else clean_text(str(data["error"])),
            model=None if data.get("model") is None else clean_text(str(data["model"])),
            unavailable=tuple(clean_text(str(m)) for m in data.get("unavailable") or ()),
        )


@dataclass(slots=True)
class Conversation:
    key: ConversationKey
    model: str | None = None  # None: the configured default model
    system: str | None = None  # None: the configured default system prompt
    messages: list[Message] = field(default_factory=list)
    parent: ConversationKey | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot, for stores that keep conversations outside this process."""
        return {
            "key": list(self.key),
            "model": self.model,
            "system": self.system,
            "messages": [m.to_dict() for m in self.messages],
            "parent": None if self.parent is None else list(self.parent),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conversation:
        """The inverse of :meth:`to_dict`; text a store holds that is not valid Unicode (saved
        by an older version) is repaired with U+FFFD (:func:`clean_text`)."""
        parent = data.get("parent")
        model, system = data.get("model"), data.get("system")
        return cls(
            key=ConversationKey(*map(clean_text, data["key"])),
            model=None if model is None else clean_text(str(model)),
            system=None if system is None else clean_text(str(system)),
            messages=[Message.from_dict(m) for m in data.get("messages", ())],
            parent=None if parent is None else ConversationKey(*map(clean_text, parent)),
            created_at=float(data.get("created_at") or 0.0),
            updated_at=float(data.get("updated_at") or 0.0),
        )

    def llm_history(self) -> list[dict[str, str]]:
        """What is sent to the LLM: completed turns, and what a user saw of a stopped reply.

        An errored or unfinished reply is never sent, and neither is the user turn it answered
        (so the next prompt does not arrive as two user turns in a row).
        """
        history: list[dict[str, str]] = []
        pending_user: dict[str, str] | None = None
        for message in self.messages:
            if message.role == "user":
                if pending_user is not None:
                    history.append(pending_user)
                pending_user = {"role": "user", "content": message.content}
                continue
            keep = message.status is Status.COMPLETE or (
                message.status is Status.CANCELLED and message.content
            )
            if keep:
                if pending_user is not None:
                    history.append(pending_user)
                history.append({"role": "assistant", "content": message.content})
            pending_user = None
        if pending_user is not None:
            history.append(pending_user)
        return history

    def trim(self, max_messages: int, max_chars: int) -> int:
        """Drop the oldest whole turns until both bounds hold; never the last turn. Returns how
        many messages were dropped."""
        dropped = 0
        messages = self.messages
        total = sum(len(m.text) for m in messages)
        while len(messages) > 2 and (len(messages) > max_messages or total > max_chars):
            # A turn is a user message and the replies that follow it.
            end = 1
            while end < len(messages) - 1 and messages[end].role != "user":
                end += 1
            if any(m.status not in FINAL for m in messages[:end]):
                break  # never drop a reply that is still streaming
            total -= sum(len(m.text) for m in messages[:end])
            del messages[:end]
            dropped += end
        return dropped


def load_conversation(raw: str | bytes, key: ConversationKey) -> Conversation | None:
    """A stored conversation from its JSON; never fails on what a store holds.

    Bytes that are not UTF-8 and lone surrogates are repaired with U+FFFD. A record that is not a
    conversation at all (damaged) is logged and read as absent: the conversation starts afresh
    rather than failing every later message of the channel.
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        return Conversation.from_dict(json.loads(raw))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("%s: the stored conversation is damaged (%s); starting it afresh", key, exc)
        return None


class ConversationStore(Protocol):
    """Where conversations live. Async so that a store may be remote (SQLite, Redis)."""

    async def get(self, key: ConversationKey) -> Conversation | None: ...

    async def get_or_create(
        self, key: ConversationKey, parent: ConversationKey | None = None
    ) -> Conversation: ...

    async def save(self, conversation: Conversation) -> None: ...

    async def delete(self, key: ConversationKey) -> None: ...

    async def list_keys(self, platform: str) -> list[ConversationKey]:
        """``platform``'s conversations (expired ones left out), most recently saved first."""
        ...


async def new_conversation(
    store: ConversationStore, key: ConversationKey, parent: ConversationKey | None
) -> Conversation:
    """A new, unsaved conversation; a thread starts with its parent channel's model and system
    prompt (read from ``store``) and a history of its own."""
    conversation = Conversation(key, parent=parent)
    if parent is not None:
        source = await store.get(parent)
        if source is not None:
            conversation.model, conversation.system = source.model, source.system
    return conversation


class MemoryStore:
    """In-memory conversations, least recently used evicted past ``max_conversations``."""

    def __init__(self, max_conversations: int = 10_000) -> None:
        self.max_conversations = max_conversations
        self._items: OrderedDict[ConversationKey, Conversation] = OrderedDict()
        self.evicted = 0
        self._usage = MemoryUsage()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    async def get(self, key: ConversationKey) -> Conversation | None:
        conversation = self._items.get(key)
        if conversation is not None:
            self._items.move_to_end(key)
        return conversation

    async def get_or_create(
        self, key: ConversationKey, parent: ConversationKey | None = None
    ) -> Conversation:
        conversation = await self.get(key)
        if conversation is None:
            conversation = await new_conversation(self, key, parent)
            await self.save(conversation)
        return conversation

    async def save(self, conversation: Conversation) -> None:
        conversation.updated_at = time.time()
        self._items[conversation.key] = conversation
        self._items.move_to_end(conversation.key)
        while len(self._items) > self.max_conversations:
            gone, _ = self._items.popitem(last=False)
            self._usage.forget([gone])
            self.evicted += 1

    async def delete(self, key: ConversationKey) -> None:
        self._items.pop(key, None)
        self._usage.forget([key])

    async def add_usage(
        self, key: ConversationKey, user: str | None, day: str, model: str, tokens: Tokens
    ) -> None:
        """Count a reply's tokens (a :class:`~core.usage.UsageStore`)."""
        self._usage.add(key, user, day, model, tokens)

    async def read_usage(self, key: ConversationKey, user: str | None, day: str) -> UsageReport:
        return self._usage.read(key, user, day)

    def keys(self) -> list[ConversationKey]:
        return list(self._items)

    async def list_keys(self, platform: str) -> list[ConversationKey]:
        mine = [c for k, c in self._items.items() if k.platform == platform]
        mine.sort(key=lambda c: c.updated_at, reverse=True)
        return [c.key for c in mine]
