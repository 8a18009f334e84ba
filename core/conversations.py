"""Conversations and where they live.

A conversation is keyed ``(platform, channel)``; a thread is its own conversation that starts from
its parent channel's model and system prompt. ``MemoryStore`` keeps them in memory (the
default store) with bounds: per conversation at most N messages and a character budget — the oldest whole
turns go first, the system prompt (a separate field) never — and at most M conversations, least
recently used evicted. An idle conversation is a few small objects; nothing runs for it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias

from .feedback import Counts, MemoryFeedback
from .usage import MemoryUsage, Tokens, UsageReport

__all__ = [
    "IMAGE_CHARS",
    "Conversation",
    "ConversationKey",
    "ConversationStore",
    "HistoryPart",
    "MemoryStore",
    "Message",
    "MessageAttachment",
    "Status",
    "ToolStep",
    "clean_text",
    "load_conversation",
    "new_conversation",
    "tools_line",
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

#: What one image counts for in the history's character bound (HISTORY_MAX_CHARS), whatever its
#: size: about what a model charges for a downscaled image, in characters of text. A PDF counts
#: its size in bytes, a text file its inlined characters.
IMAGE_CHARS = 1_000

#: One part of a turn sent to the model, neutral of any client library: ``("text", text)``,
#: ``("image", data, media_type, name)`` or ``("pdf", data, name)``.
HistoryPart: TypeAlias = (
    tuple[Literal["text"], str]
    | tuple[Literal["image"], bytes, str, str]
    | tuple[Literal["pdf"], bytes, str]
)


@dataclass(frozen=True, slots=True)
class MessageAttachment:
    """A file a user message carried (:mod:`core.attachments` prepares it), as stored.

    ``data`` is an image's or a PDF's bytes in base64 (empty once an old image is dropped: it is
    then sent as ``[image: name]``), or a text file's inlined block (a fence under its name).
    """

    name: str
    kind: Literal["image", "text", "pdf"]
    media_type: str
    data: str

    def __repr__(self) -> str:  # never a megabyte of base64 in a log line
        return (
            f"MessageAttachment(name={self.name!r}, kind={self.kind!r}, "
            f"media_type={self.media_type!r}, data=<{len(self.data)} chars>)"
        )

    @property
    def chars(self) -> int:
        """What it counts for in HISTORY_MAX_CHARS (:data:`IMAGE_CHARS` for an image)."""
        if self.kind == "image":
            return IMAGE_CHARS if self.data else len(self.name) + 9
        if self.kind == "pdf":
            return len(self.data) * 3 // 4  # its size in bytes
        return len(self.data)

    def raw(self) -> bytes:
        """An image's or a PDF's bytes (empty when not decodable or dropped)."""
        try:
            return base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            return b""

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "kind": self.kind,
            "media_type": self.media_type,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MessageAttachment | None:
        """The inverse of :meth:`to_dict`; ``None`` for a record of an unknown kind."""
        kind = data.get("kind")
        if kind not in ("image", "text", "pdf"):
            return None
        return cls(
            name=clean_text(str(data.get("name") or "file")),
            kind=kind,
            media_type=clean_text(str(data.get("media_type") or "")),
            data=clean_text(str(data.get("data") or "")),
        )


@dataclass(frozen=True, slots=True)
class ToolStep:
    """One round of tool calls inside an assistant reply: the text the model wrote in that round
    (before its calls; exactly as it is in the reply's ``content``), its calls and their results
    (llmconnect's ``ToolCall.to_dict``/``ToolResult.to_dict``), and each call's shown name
    (``server.tool``)."""

    text: str
    calls: tuple[Mapping[str, Any], ...]
    results: tuple[Mapping[str, Any], ...]
    names: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "calls": [dict(c) for c in self.calls],
            "results": [dict(r) for r in self.results],
            "names": list(self.names),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolStep:
        def records(key: str) -> tuple[Mapping[str, Any], ...]:
            value = data.get(key)
            return (
                tuple(r for r in value if isinstance(r, Mapping)) if isinstance(value, list) else ()
            )

        names = data.get("names")
        return cls(
            text=clean_text(str(data.get("text") or "")),
            calls=records("calls"),
            results=records("results"),
            names=tuple(clean_text(str(n)) for n in names) if isinstance(names, list) else (),
        )

    @property
    def chars(self) -> int:
        """What it counts for in HISTORY_MAX_CHARS: its calls' arguments and its results."""
        size = 0
        for call in self.calls:
            size += len(str(call.get("name", ""))) + len(json.dumps(call.get("arguments", {})))
        for result in self.results:
            size += len(str(result.get("content", "")))
        return size

    def failed(self) -> set[str]:
        """The ids of the calls whose result is an error."""
        return {str(r.get("call_id")) for r in self.results if r.get("is_error")}


#: Between a tool's name and its number of calls in :func:`tools_line`.
TIMES = "\N{MULTIPLICATION SIGN}"


def tools_line(uses: Sequence[tuple[str, bool]]) -> str | None:
    """The one line a reply that used tools keeps: ``🔧 files.read, search.query ✗`` (each
    tool once, in order of first use, how many calls, ✗ when one failed); ``None`` for none."""
    if not uses:
        return None
    counts: dict[str, int] = {}
    failed: set[str] = set()
    for name, ok in uses:
        counts[name] = counts.get(name, 0) + 1
        if not ok:
            failed.add(name)
    shown = [
        name + (f" {TIMES}{n}" if n > 1 else "") + (" ✗" if name in failed else "")
        for name, n in counts.items()
    ]
    return "🔧 " + ", ".join(shown)


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
    #: The files a user message carried (images, text files, PDFs); a tuple, so the common case
    #: (none) costs no object per message.
    attachments: tuple[MessageAttachment, ...] = ()
    #: An assistant reply's lines about its prompt's files (why one was skipped, a cut text
    #: file), shown under it (:func:`core.delivery.final_note`).
    notes: tuple[str, ...] = ()
    #: An assistant reply's id (:attr:`core.engine.Reply.id`): what its buttons' action ids
    #: name (:mod:`core.controls`); ``None`` in replies stored before it was recorded.
    id: str | None = None
    #: An assistant reply's asker (the user id that sent the prompt; ``None`` without one, e.g.
    #: the web chat's operator): who may stop or regenerate it besides an admin.
    user: str | None = None
    #: An assistant reply's rounds of tool calls (the tool loop), kept for the history.
    tool_steps: tuple[ToolStep, ...] = ()

    @property
    def tools_line(self) -> str | None:
        """The one line under a reply that used tools (:func:`tools_line`)."""
        uses: list[tuple[str, bool]] = []
        for step in self.tool_steps:
            failed = step.failed()
            answered = {str(r.get("call_id")) for r in step.results}
            for call, name in zip(step.calls, step.names, strict=False):
                call_id = str(call.get("id"))
                uses.append((name, call_id in answered and call_id not in failed))
        return tools_line(uses)

    @property
    def final_text(self) -> str:
        """The text after the last round of tool calls (the whole text without any)."""
        done = sum(len(step.text) for step in self.tool_steps)
        return self.text[done:]

    #: An assistant reply's platform messages (their refs, in order) when it took more than one
    #: (split at the platform's length limit): what a regeneration renders into, so no part of
    #: the old answer stays visible (:func:`core.delivery.deliver`). Recorded after the reply is
    #: shown (:meth:`core.engine.ChatEngine.remember_messages`); ``()`` for one message.
    refs: tuple[str, ...] = ()

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
        if self.attachments:
            data["attachments"] = [a.to_dict() for a in self.attachments]
        if self.notes:
            data["notes"] = list(self.notes)
        if self.id is not None:
            data["id"] = self.id
        if self.user is not None:
            data["user"] = self.user
        if self.tool_steps:
            data["tool_steps"] = [step.to_dict() for step in self.tool_steps]
        if self.refs:
            data["refs"] = list(self.refs)
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
            attachments=_attachments(data.get("attachments")),
            notes=tuple(clean_text(str(n)) for n in data.get("notes") or ()),
            id=None if data.get("id") is None else clean_text(str(data["id"])),
            user=None if data.get("user") is None else clean_text(str(data["user"])),
            tool_steps=tuple(
                ToolStep.from_dict(step)
                for step in data.get("tool_steps") or ()
                if isinstance(step, Mapping)
            ),
            refs=tuple(clean_text(str(r)) for r in data.get("refs") or ()),
        )

    @property
    def chars(self) -> int:
        """What the message counts for in HISTORY_MAX_CHARS: its text and its files."""
        size = len(self.text)
        for attachment in self.attachments:
            size += attachment.chars
        for step in self.tool_steps:
            size += step.chars
        return size


def _attachments(records: object) -> tuple[MessageAttachment, ...]:
    if not isinstance(records, list):
        return ()
    found = (MessageAttachment.from_dict(r) for r in records if isinstance(r, Mapping))
    return tuple(a for a in found if a is not None)


@dataclass(slots=True)
class Conversation:
    key: ConversationKey
    model: str | None = None  # None: the configured default model
    system: str | None = None  # None: the configured default system prompt
    messages: list[Message] = field(default_factory=list)
    parent: ConversationKey | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    #: The MCP servers whose tools this conversation may use (``/tools enable|disable``);
    #: ``None``: the configured ``MCP_DEFAULT_SERVERS``.
    tools: tuple[str, ...] | None = None

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
            **({} if self.tools is None else {"tools": list(self.tools)}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conversation:
        """The inverse of :meth:`to_dict`; text a store holds that is not valid Unicode (saved
        by an older version) is repaired with U+FFFD (:func:`clean_text`)."""
        parent = data.get("parent")
        model, system = data.get("model"), data.get("system")
        tools = data.get("tools")
        return cls(
            key=ConversationKey(*map(clean_text, data["key"])),
            model=None if model is None else clean_text(str(model)),
            system=None if system is None else clean_text(str(system)),
            messages=[Message.from_dict(m) for m in data.get("messages", ())],
            parent=None if parent is None else ConversationKey(*map(clean_text, parent)),
            created_at=float(data.get("created_at") or 0.0),
            updated_at=float(data.get("updated_at") or 0.0),
            tools=tuple(clean_text(str(t)) for t in tools) if isinstance(tools, list) else None,
        )

    def llm_history(self) -> list[dict[str, str]]:
        """What is sent to the LLM: completed turns, and what a user saw of a stopped reply.

        An errored or unfinished reply is never sent, and neither is the user turn it answered
        (so the next prompt does not arrive as two user turns in a row).
        """
        return [{"role": m.role, "content": m.content} for m in self.sent_messages()]

    def sent_messages(self) -> list[Message]:
        """The messages :meth:`llm_history` sends, in order."""
        history: list[Message] = []
        pending_user: Message | None = None
        for message in self.messages:
            if message.role == "user":
                if pending_user is not None:
                    history.append(pending_user)
                pending_user = message
                continue
            keep = message.status is Status.COMPLETE or (
                message.status is Status.CANCELLED and message.content
            )
            if keep:
                if pending_user is not None:
                    history.append(pending_user)
                history.append(message)
            pending_user = None
        if pending_user is not None:
            history.append(pending_user)
        return history

    def llm_history_parts(self, max_images: int) -> list[tuple[str, list[HistoryPart]]]:
        """:meth:`llm_history` with each user turn's files: ``[(role, parts), ...]``.

        A user turn's parts are its text (when not empty), then its files in order: a text file
        as ``("text", block)``, a PDF as ``("pdf", data, name)``, an image as ``("image", data,
        media_type, name)`` in the last ``max_images`` turns that have images
        (HISTORY_MAX_IMAGES), and as ``("text", "[image: name]")`` in older ones (and when its
        bytes were dropped, :meth:`drop_old_images`). An assistant turn is ``[("text", text)]``.
        """
        sent = self.sent_messages()
        with_images = [
            i for i, m in enumerate(sent) if any(a.kind == "image" for a in m.attachments)
        ]
        keep_images = set(with_images[len(with_images) - max_images :]) if max_images > 0 else set()
        turns: list[tuple[str, list[HistoryPart]]] = []
        for i, message in enumerate(sent):
            parts: list[HistoryPart] = []
            if message.content or not message.attachments:
                parts.append(("text", message.content))
            for attachment in message.attachments:
                parts.append(_part(attachment, i in keep_images))
            turns.append((message.role, parts))
        return turns

    def drop_old_images(self, max_images: int) -> int:
        """Forget the bytes of images older than the last ``max_images`` user turns that have
        images (they are sent as ``[image: name]`` from then on), so a long conversation holds at
        most that many turns' images. Returns how many images were dropped."""
        dropped = 0
        seen = 0
        for index in range(len(self.messages) - 1, -1, -1):
            message = self.messages[index]
            if not any(a.kind == "image" and a.data for a in message.attachments):
                continue
            seen += 1
            if seen <= max_images:
                continue
            kept = []
            for a in message.attachments:
                if a.kind == "image" and a.data:
                    a = MessageAttachment(a.name, a.kind, a.media_type, "")
                    dropped += 1
                kept.append(a)
            message.attachments = tuple(kept)
        return dropped

    def trim(self, max_messages: int, max_chars: int) -> int:
        """Drop the oldest whole turns until both bounds hold; never the last turn. Returns how
        many messages were dropped."""
        dropped = 0
        messages = self.messages
        total = sum(m.chars for m in messages)
        while len(messages) > 2 and (len(messages) > max_messages or total > max_chars):
            # A turn is a user message and the replies that follow it.
            end = 1
            while end < len(messages) - 1 and messages[end].role != "user":
                end += 1
            if any(m.status not in FINAL for m in messages[:end]):
                break  # never drop a reply that is still streaming
            total -= sum(m.chars for m in messages[:end])
            del messages[:end]
            dropped += end
        return dropped


def _part(attachment: MessageAttachment, with_image: bool) -> HistoryPart:
    if attachment.kind == "text":
        return ("text", attachment.data)
    if attachment.kind == "pdf":
        data = attachment.raw()
        return ("pdf", data, attachment.name) if data else ("text", f"[pdf: {attachment.name}]")
    data = attachment.raw() if with_image else b""
    if not data:
        return ("text", f"[image: {attachment.name}]")
    return ("image", data, attachment.media_type, attachment.name)


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
    """A new, unsaved conversation; a thread starts with its parent channel's model, system
    prompt and tool servers (read from ``store``) and a history of its own."""
    conversation = Conversation(key, parent=parent)
    if parent is not None:
        source = await store.get(parent)
        if source is not None:
            conversation.model, conversation.system = source.model, source.system
            conversation.tools = source.tools
    return conversation


class MemoryStore:
    """In-memory conversations, least recently used evicted past ``max_conversations``."""

    def __init__(self, max_conversations: int = 10_000) -> None:
        self.max_conversations = max_conversations
        self._items: OrderedDict[ConversationKey, Conversation] = OrderedDict()
        self.evicted = 0
        self._usage = MemoryUsage()
        self._feedback = MemoryFeedback()

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
            self._feedback.forget([gone])
            self.evicted += 1

    async def delete(self, key: ConversationKey) -> None:
        self._items.pop(key, None)
        self._usage.forget([key])
        self._feedback.forget([key])

    async def add_usage(
        self, key: ConversationKey, user: str | None, day: str, model: str, tokens: Tokens
    ) -> None:
        """Count a reply's tokens (a :class:`~core.usage.UsageStore`)."""
        self._usage.add(key, user, day, model, tokens)

    async def read_usage(self, key: ConversationKey, user: str | None, day: str) -> UsageReport:
        return self._usage.read(key, user, day)

    async def set_vote(
        self, key: ConversationKey, reply_id: str, user: str, model: str, vote: int
    ) -> None:
        """A user's vote on a reply (a :class:`~core.feedback.FeedbackStore`)."""
        self._feedback.set(key, reply_id, user, model, vote)

    async def vote_of(self, key: ConversationKey, reply_id: str, user: str) -> int:
        return self._feedback.get(key, reply_id, user)

    async def read_feedback(self, key: ConversationKey) -> dict[str, Counts]:
        return self._feedback.read(key)

    def keys(self) -> list[ConversationKey]:
        return list(self._items)

    async def list_keys(self, platform: str) -> list[ConversationKey]:
        mine = [c for k, c in self._items.items() if k.platform == platform]
        mine.sort(key=lambda c: c.updated_at, reverse=True)
        return [c.key for c in mine]
