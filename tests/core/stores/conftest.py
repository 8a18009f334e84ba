"""Fixtures for the store tests: a real Redis (``redis_url``, from ``tests/conftest.py``) and
real SQLite files, never stand-ins."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from core.conversations import ConversationStore, MemoryStore
from core.stores import close_store
from core.stores.redis_store import RedisStore
from core.stores.sqlite_store import SqliteStore

BACKENDS = ["memory", "sqlite", "redis"]


StoreMaker = Callable[..., Awaitable[ConversationStore]]


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreMaker]:
    """``await make_store(**bounds)``: a store of this backend. For SQLite and Redis every call
    opens a new connection to the same data (a restart, or another process); memory has no
    such thing, so each call gives a new, empty store."""
    backend: str = request.param
    url = request.getfixturevalue("redis_url") if backend == "redis" else ""
    prefix = f"test:{uuid.uuid4().hex}:"
    opened: list[ConversationStore] = []

    async def make(**bounds: Any) -> ConversationStore:
        store: ConversationStore
        if backend == "memory":
            store = MemoryStore(bounds.get("max_conversations", 10_000))
        elif backend == "sqlite":
            store = SqliteStore(tmp_path / "conversations.db", **bounds)
        else:
            store = RedisStore(url, prefix=prefix, **bounds)
        opened.append(store)
        return store

    make.backend = backend  # type: ignore[attr-defined]
    yield make
    for store in opened:
        if isinstance(store, RedisStore):
            keys = [k async for k in store.client.scan_iter(match=f"{prefix}*")]
            if keys:
                await store.client.delete(*keys)
        await close_store(store)
