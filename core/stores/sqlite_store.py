"""Conversations in an embedded SQLite file: they survive a restart; one process uses the file.

Why the standard library's ``sqlite3`` on one dedicated thread rather than ``aiosqlite``: it is
the same design (a connection owned by one worker thread, the event loop never blocks on disk)
without another dependency, and one thread serializes every statement, so no lock is needed.

Each conversation is one row holding its JSON (``Conversation.to_dict``). Bounds: rows idle
longer than ``ttl`` seconds are invisible and pruned, and at most ``max_conversations`` rows are
kept, the least recently saved pruned first (checked every ``PRUNE_EVERY`` saves, so a read
never writes).

The file holds people's conversations: it is created readable by its owner only (0600; SQLite
gives its ``-wal`` and ``-shm`` files the database file's mode). A file that is not a database,
or is damaged, stops start-up with one line naming ``STORE_URL`` (:func:`check_database`, run by
the settings' validation), never with a traceback, and is left as it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from ..conversations import Conversation, ConversationKey, load_conversation, new_conversation
from ..feedback import Counts
from ..usage import DAY_SECONDS, Tokens, UsageReport, utc_day
from . import StoreURLError

__all__ = ["PRUNE_EVERY", "SqliteStore", "check_database"]

PRUNE_EVERY = 64

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (platform, channel)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversations_updated_at ON conversations (updated_at);
CREATE TABLE IF NOT EXISTS usage (
    kind TEXT NOT NULL,
    platform TEXT NOT NULL,
    ident TEXT NOT NULL,
    day TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    PRIMARY KEY (kind, platform, ident, day, model)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feedback (
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    reply_id TEXT NOT NULL,
    user TEXT NOT NULL,
    model TEXT NOT NULL,
    vote INTEGER NOT NULL,
    PRIMARY KEY (platform, channel, reply_id, user)
) WITHOUT ROWID;
"""

_ADD_USAGE = (
    "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (kind, platform, ident, day, model) DO UPDATE SET "
    "input_tokens = input_tokens + excluded.input_tokens, "
    "output_tokens = output_tokens + excluded.output_tokens"
)


def _text(data: bytes) -> str:
    # Text that is not UTF-8 (written by another program) is read with U+FFFD, not refused.
    return data.decode("utf-8", "replace")


def check_database(path: str | Path) -> None:
    """Raise :class:`~core.stores.StoreURLError` when the file at ``path`` exists but is not
    a readable SQLite database (not one at all, or damaged). Read-only: the file is not changed.

    ``PRAGMA quick_check`` reads every page once (integrity_check's thorough index checks are
    skipped), so damage found later, mid-conversation, is rare; it runs at start-up only.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:  # absent or empty: SQLite creates it
        return
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreURLError(f"cannot open the SQLite file {path}: {exc}") from None
    try:
        problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.Error as exc:
        problems = [str(exc)]
    finally:
        db.close()
    if problems != ["ok"]:
        detail = " ".join(" ".join(problems).split())  # one line: SQLite's report has several
        raise StoreURLError(
            f"{path} is not a SQLite database or it is damaged ({detail[:160]}); move it away "
            "(a new one is then created) or point STORE_URL at another file."
        )


def _create_private(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite does (it would use 0644)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


class SqliteStore:
    """A :class:`~core.conversations.ConversationStore` in the SQLite file at ``path``."""

    def __init__(
        self, path: str | Path, *, max_conversations: int = 10_000, ttl: float = 0
    ) -> None:
        self.path = Path(path)
        self.max_conversations = max_conversations
        self.ttl = ttl
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-store")
        self._saves = 0
        # Opened here, at start-up, so that a bad path fails at once with the path in the message.
        try:
            _create_private(self.path)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                db.text_factory = _text
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA busy_timeout=5000")
                db.executescript(_SCHEMA)
            except sqlite3.Error:
                db.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            self._executor.shutdown(wait=False)
            raise OSError(f"STORE_URL: cannot open the SQLite store {self.path}: {exc}") from None
        self._db: sqlite3.Connection | None = db
        self._prune(time.time())

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _cutoff(self, now: float) -> float:
        return now - self.ttl if self.ttl > 0 else float("-inf")

    # ----------------------------------------------------------------- in the worker thread

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the SQLite store is closed")
        return self._db

    def _read(self, key: ConversationKey) -> str | None:
        row = (
            self._conn()
            .execute(
                "SELECT data FROM conversations WHERE platform = ? AND channel = ? "
                "AND updated_at >= ?",
                (key.platform, key.channel, self._cutoff(time.time())),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def _write(self, key: ConversationKey, data: str, updated_at: float, only_new: bool) -> bool:
        db = self._conn()
        if only_new:
            # A row idle past the TTL counts as absent: replace it.
            cursor = db.execute(
                "INSERT INTO conversations VALUES (?, ?, ?, ?) ON CONFLICT (platform, channel) "
                "DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at "
                "WHERE conversations.updated_at < ?",
                (key.platform, key.channel, data, updated_at, self._cutoff(updated_at)),
            )
            return cursor.rowcount > 0
        db.execute(
            "INSERT INTO conversations VALUES (?, ?, ?, ?) ON CONFLICT (platform, channel) "
            "DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            (key.platform, key.channel, data, updated_at),
        )
        return True

    def _prune(self, now: float) -> None:
        db = self._conn()
        if self.ttl > 0:
            db.execute("DELETE FROM conversations WHERE updated_at < ?", (self._cutoff(now),))
        db.execute(
            "DELETE FROM conversations WHERE (platform, channel) IN (SELECT platform, channel "
            "FROM conversations ORDER BY updated_at DESC LIMIT -1 OFFSET ?)",
            (self.max_conversations,),
        )
        self._prune_usage()

    def _prune_usage(self) -> None:
        # Daily counts two days older than the newest day counted (the days come from the
        # engine's clock), and the totals of conversations no longer kept.
        db = self._conn()
        newest = db.execute("SELECT MAX(day) FROM usage WHERE day != ''").fetchone()[0]
        if newest:
            cutoff = datetime.strptime(str(newest), "%Y-%m-%d").replace(tzinfo=UTC)
            db.execute(
                "DELETE FROM usage WHERE day != '' AND day < ?",
                (utc_day(cutoff.timestamp() - 2 * DAY_SECONDS),),
            )
        db.execute(
            "DELETE FROM usage WHERE kind = 'conv' AND day = '' AND NOT EXISTS (SELECT 1 FROM "
            "conversations c WHERE c.platform = usage.platform AND c.channel = usage.ident)"
        )
        db.execute(
            "DELETE FROM feedback WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE "
            "c.platform = feedback.platform AND c.channel = feedback.channel)"
        )

    def _add_usage(
        self, key: ConversationKey, user: str | None, day: str, model: str, tokens: Tokens
    ) -> None:
        rows = [
            ("conv", key.platform, key.channel, day),
            ("conv", key.platform, key.channel, ""),
        ]
        if user is not None:
            rows.append(("user", key.platform, user, day))
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_ADD_USAGE, [(*row, model, tokens.input, tokens.output) for row in rows])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _read_usage(self, key: ConversationKey, user: str | None, day: str) -> UsageReport:
        def counts(kind: str, ident: str, on: str) -> dict[str, Tokens]:
            rows = (
                self._conn()
                .execute(
                    "SELECT model, input_tokens, output_tokens FROM usage WHERE kind = ? AND "
                    "platform = ? AND ident = ? AND day = ?",
                    (kind, key.platform, ident, on),
                )
                .fetchall()
            )
            return {str(m): Tokens(int(i), int(o)) for m, i, o in rows}

        return UsageReport(
            day=day,
            conversation_day=counts("conv", key.channel, day),
            conversation_total=counts("conv", key.channel, ""),
            user_day=None if user is None else counts("user", user, day),
        )

    def _remove(self, key: ConversationKey) -> None:
        db = self._conn()
        db.execute(
            "DELETE FROM conversations WHERE platform = ? AND channel = ?",
            (key.platform, key.channel),
        )
        db.execute(
            "DELETE FROM feedback WHERE platform = ? AND channel = ?", (key.platform, key.channel)
        )

    def _set_vote(
        self, key: ConversationKey, reply_id: str, user: str, model: str, vote: int
    ) -> None:
        db = self._conn()
        if not vote:
            db.execute(
                "DELETE FROM feedback WHERE platform = ? AND channel = ? AND reply_id = ? "
                "AND user = ?",
                (key.platform, key.channel, reply_id, user),
            )
            return
        db.execute(
            "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
            "(platform, channel, reply_id, user) DO UPDATE SET vote = excluded.vote, "
            "model = excluded.model",
            (key.platform, key.channel, reply_id, user, model, 1 if vote > 0 else -1),
        )

    def _vote_of(self, key: ConversationKey, reply_id: str, user: str) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT vote FROM feedback WHERE platform = ? AND channel = ? AND reply_id = ? "
                "AND user = ?",
                (key.platform, key.channel, reply_id, user),
            )
            .fetchone()
        )
        return 0 if row is None else int(row[0])

    def _read_feedback(self, key: ConversationKey) -> dict[str, Counts]:
        rows = (
            self._conn()
            .execute(
                "SELECT model, SUM(vote > 0), SUM(vote < 0) FROM feedback WHERE platform = ? "
                "AND channel = ? GROUP BY model",
                (key.platform, key.channel),
            )
            .fetchall()
        )
        return {str(m): Counts(int(up), int(down)) for m, up, down in rows}

    def _count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM conversations").fetchone()[0])

    def _channels(self, platform: str) -> list[str]:
        rows = (
            self._conn()
            .execute(
                "SELECT channel FROM conversations WHERE platform = ? AND updated_at >= ? "
                "ORDER BY updated_at DESC",
                (platform, self._cutoff(time.time())),
            )
            .fetchall()
        )
        return [str(row[0]) for row in rows]

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ----------------------------------------------------------------- the store protocol

    async def get(self, key: ConversationKey) -> Conversation | None:
        data = await self._call(self._read, key)
        return None if data is None else load_conversation(data, key)

    async def get_or_create(
        self, key: ConversationKey, parent: ConversationKey | None = None
    ) -> Conversation:
        conversation = await self.get(key)
        if conversation is not None:
            return conversation
        conversation = await new_conversation(self, key, parent)
        data = json.dumps(conversation.to_dict())
        created = await self._call(self._write, key, data, conversation.updated_at, True)
        if not created:  # created meanwhile (another process on the same file)
            return await self.get(key) or conversation
        return conversation

    async def save(self, conversation: Conversation) -> None:
        conversation.updated_at = now = time.time()
        data = json.dumps(conversation.to_dict())
        await self._call(self._write, conversation.key, data, now, False)
        self._saves += 1
        if self._saves % PRUNE_EVERY == 0:
            await self._call(self._prune, now)

    async def delete(self, key: ConversationKey) -> None:
        await self._call(self._remove, key)

    async def add_usage(
        self, key: ConversationKey, user: str | None, day: str, model: str, tokens: Tokens
    ) -> None:
        """Count a reply's tokens (a :class:`~core.usage.UsageStore`), in one transaction."""
        await self._call(self._add_usage, key, user, day, model, tokens)

    async def read_usage(self, key: ConversationKey, user: str | None, day: str) -> UsageReport:
        return await self._call(self._read_usage, key, user, day)

    async def set_vote(
        self, key: ConversationKey, reply_id: str, user: str, model: str, vote: int
    ) -> None:
        """A user's vote on a reply (a :class:`~core.feedback.FeedbackStore`): one row per
        user per reply."""
        await self._call(self._set_vote, key, reply_id, user, model, vote)

    async def vote_of(self, key: ConversationKey, reply_id: str, user: str) -> int:
        return await self._call(self._vote_of, key, reply_id, user)

    async def read_feedback(self, key: ConversationKey) -> dict[str, Counts]:
        return await self._call(self._read_feedback, key)

    async def count(self) -> int:
        """How many conversations the file holds (idle ones not yet pruned included)."""
        return await self._call(self._count)

    async def list_keys(self, platform: str) -> list[ConversationKey]:
        """``platform``'s conversations (idle ones past the TTL left out), most recently saved
        first."""
        return [ConversationKey(platform, c) for c in await self._call(self._channels, platform)]

    async def prune(self) -> None:
        """Apply both bounds now (``save`` does it every ``PRUNE_EVERY`` saves)."""
        await self._call(self._prune, time.time())

    async def aclose(self) -> None:
        """Close the file; later calls fail."""
        if self._db is not None:
            await self._call(self._close)
        self._executor.shutdown(wait=True)
