"""Who may run a generation for a conversation right now.

The engine keeps its own per-conversation ``asyncio.Lock`` (in-process FIFO order); a
:class:`ConversationLocks` adds the cross-process part. In one process (memory, SQLite) there is
nothing more to hold, so :class:`LocalLocks` hands out a no-op; the Redis store hands out a lock
with an expiry that is renewed while the generation runs (see ``core.stores.redis_store``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from ..conversations import ConversationKey

__all__ = ["ConversationLocks", "LocalLocks", "locks_for"]


@runtime_checkable
class ConversationLocks(Protocol):
    """Hands out the lock a generation holds while it runs."""

    #: True when the lock is held across processes: a conversation may then change in the store
    #: between two generations of this process, so it is re-read after the lock is taken.
    shared: bool

    def lock(self, key: ConversationKey) -> AbstractAsyncContextManager[None]: ...


class LocalLocks:
    """One process: the engine's per-conversation ``asyncio.Lock`` already serializes."""

    shared = False

    def lock(self, key: ConversationKey) -> AbstractAsyncContextManager[None]:
        return _nothing()


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


def locks_for(store: object) -> ConversationLocks:
    """The store's own locks when it is shared between processes (Redis), else local ones."""
    return store if isinstance(store, ConversationLocks) else LocalLocks()
