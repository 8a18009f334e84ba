"""Logging for every serving command: ``LOG_FORMAT`` (text or JSON lines), ``LOG_LEVEL``, and the
context a reply's log records carry.

Why a context variable: each reply runs in its own asyncio task (``ChatEngine.submit``), so a
:class:`~contextvars.ContextVar` set when that task starts stays with every record logged on the
reply's behalf (the engine, the store's lock, the final save) and with nothing else. The handler's
:class:`ContextFilter` copies it onto the record; the JSON formatter writes it as fields.

Privacy: a conversation is logged as :func:`conversation_hash` (12 hex digits of a salted SHA-256
of ``platform:channel``), never its raw id. Message text (the prompt, the reply) is logged only
when ``LOG_CONTENT=true`` — on the reply-end line, as ``prompt`` and ``text``.
"""

from __future__ import annotations

import contextvars
import datetime
import hashlib
import json
import logging
import secrets
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .conversations import ConversationKey
    from .engine import Reply
    from .settings import Settings

__all__ = [
    "FIELDS",
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "conversation_hash",
    "log_reply_end",
    "new_reply_id",
    "reply_context",
    "set_hash_salt",
]

#: The record attributes the JSON formatter writes (when set), in this order, after time, level,
#: logger and message. Durations are seconds.
FIELDS = (
    "frontend",
    "conversation",
    "reply_id",
    "provider",
    "model",
    "status",
    "ttft",
    "duration",
    "chars",
    "deltas",
    "input_tokens",
    "output_tokens",
    "error_kind",
    "prompt",
    "text",
)

#: The running reply's fields (front end, conversation hash, reply id, provider, model).
_CONTEXT: contextvars.ContextVar[Mapping[str, object] | None] = contextvars.ContextVar(
    "llmconnect_log_context", default=None
)

#: Salt of :func:`conversation_hash`: ``LOG_HASH_SALT``, else random per process (a channel id
#: is guessable, so an unsalted hash could be reversed by trying ids).
_salt = secrets.token_bytes(16)

#: The logger slack_bolt writes to (bots/slack names it): a library's, however named.
BOLT_LOGGER = "llmconnect.slack.bolt"

#: The handler :func:`configure_logging` installed (replaced, never stacked, on a second call).
_handler: logging.Handler | None = None


def set_hash_salt(salt: str | None) -> None:
    """Use ``salt`` for conversation hashes (the same in every process: lines of one conversation
    can be matched across processes and restarts); ``None`` or empty: a random one."""
    global _salt
    _salt = salt.encode() if salt else secrets.token_bytes(16)


def conversation_hash(key: ConversationKey) -> str:
    """A short, stable (per salt) stand-in for ``key`` in logs: 12 hex digits."""
    return hashlib.sha256(_salt + str(key).encode("utf-8", "replace")).hexdigest()[:12]


def new_reply_id() -> str:
    """A reply's id in logs: 12 random hex digits."""
    return secrets.token_hex(6)


def reply_context(key: ConversationKey, reply_id: str, model: str) -> None:
    """Tag every record logged from now on in this task (a reply's) with the reply's fields."""
    provider, _, name = model.partition("/")
    _CONTEXT.set(
        {
            "frontend": key.platform,
            "conversation": conversation_hash(key),
            "reply_id": reply_id,
            "provider": provider,
            "model": name or provider,
        }
    )


class ContextFilter(logging.Filter):
    """Copies the running reply's fields onto each record (those the call did not set itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _CONTEXT.get()
        if context:
            for name, value in context.items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


def _time(record: logging.LogRecord) -> str:
    when = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    then each of :data:`FIELDS` the record has, then ``exc`` (the traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, and ``[front end conversation reply]`` when a reply's."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        reply_id = getattr(record, "reply_id", None)
        if reply_id is None:
            return text
        where = f"{getattr(record, 'frontend', '')} {getattr(record, 'conversation', '')}"
        tag = f" [{where} {reply_id}]"
        first, newline, rest = text.partition("\n")  # after the message, before a traceback
        return first + tag + newline + rest


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Set up the root logger once for a serving command: ``LOG_LEVEL``, ``LOG_FORMAT``, the
    conversation hash salt; records go to ``stream`` (standard error). Returns the handler."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    level = logging.getLevelName(settings.log_level)
    # The libraries' DEBUG records carry payloads (slack_sdk logs each request's JSON, message
    # text included; bolt its response bodies): below INFO only our own loggers, unless
    # LOG_CONTENT allows message text in the logs.
    quiet = level if settings.log_content else max(level, logging.INFO)
    root.setLevel(quiet)
    logging.getLogger("llmconnect").setLevel(level)
    logging.getLogger(BOLT_LOGGER).setLevel(quiet)  # bolt's own records, under our name
    # httpx (and the MCP SDK's httpx2) log every request at INFO (a URL each): noise, not an
    # operator's concern; the MCP SDK's own debug lines too.
    for name in ("httpx", "httpcore", "httpx2", "httpcore2", "mcp"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    salt = settings.log_hash_salt
    set_hash_salt(salt.get_secret_value() if salt is not None else None)
    _handler = handler
    return handler


def log_reply_end(logger: logging.Logger, reply: Reply, now: float, *, content: bool) -> None:
    """The one line per reply, at its end, with its figures (``content``: with its text)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    ttft = None if reply.first_token is None else round(reply.first_token - reply.started, 3)
    usage = reply.usage
    figures: dict[str, object] = {
        "status": str(reply.status),
        "ttft": ttft,
        "duration": round(now - reply.started, 3),
        "chars": len(reply.text),
        "deltas": reply.deltas,
        "input_tokens": usage.input_tokens if usage is not None else None,
        "output_tokens": usage.output_tokens if usage is not None else None,
        "error_kind": reply.error_kind,
    }
    if content:
        figures["prompt"] = reply.prompt
        figures["text"] = reply.text
    summary = " ".join(
        f"{name}={value!r}" if name in ("prompt", "text") else f"{name}={value}"
        for name, value in figures.items()
        if value is not None
    )
    provider, _, name = reply.model.partition("/")
    figures.update(
        frontend=reply.key.platform,
        conversation=conversation_hash(reply.key),
        reply_id=reply.id,
        provider=provider,
        model=name or provider,
    )
    logger.info("reply end: %s %s", reply.model, summary, extra=figures)
