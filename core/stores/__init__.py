"""Where conversations live, chosen by ``STORE_URL``.

- ``memory://`` (default): this process only, least recently used evicted past
  ``MAX_CONVERSATIONS``; gone on restart.
- ``sqlite:///path.db``: an embedded file; survives a restart; one process.
- ``redis://host:port/db``: shared by several bot processes; the conversation lock is shared too
  (with an expiry, renewed while a generation runs).

Backends are imported only when chosen, so ``redis`` is needed only with a ``redis://`` URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ..conversations import ConversationStore, MemoryStore
from .locks import ConversationLocks, LocalLocks, locks_for

if TYPE_CHECKING:  # settings validates STORE_URL with check_store_url: no import cycle
    from ..settings import Settings

__all__ = [
    "ConversationLocks",
    "LocalLocks",
    "StoreURLError",
    "check_store_url",
    "close_store",
    "locks_for",
    "open_store",
    "sqlite_path",
]

SCHEMES = ("memory", "sqlite", "redis", "rediss", "unix")


class StoreURLError(ValueError):
    """``STORE_URL`` names no store this program knows."""


def sqlite_path(url: str) -> str:
    """``sqlite:///data/conv.db`` -> ``data/conv.db`` (relative), ``sqlite:////var/x.db`` ->
    ``/var/x.db`` (absolute): SQLAlchemy's convention."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc or not path.startswith("/") or len(path) < 2:
        # The URL itself is not echoed: a STORE_URL may carry a password.
        raise StoreURLError("expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
    return path[1:]


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise StoreURLError("expected memory://, sqlite:///path.db or redis://host:port/db")
    if scheme == "sqlite":
        sqlite_path(url)
    return scheme


def check_store_url(url: str) -> str:
    """``url`` when its scheme is known and, for SQLite, its file (if there is one yet) is a
    database (a settings validator: fail at start-up, with one line, not later)."""
    if _scheme(url) == "sqlite":
        from .sqlite_store import check_database

        check_database(sqlite_path(url))
    return url


def open_store(settings: Settings) -> ConversationStore:
    """The store ``settings.store_url`` names, with the settings' bounds."""
    url = settings.store_url
    scheme = _scheme(url)  # the SQLite file was checked with the settings
    if scheme == "memory":
        return MemoryStore(settings.max_conversations)
    if scheme == "sqlite":
        from .sqlite_store import SqliteStore

        return SqliteStore(
            sqlite_path(url), max_conversations=settings.max_conversations, ttl=settings.store_ttl
        )
    from .redis_store import RedisStore

    return RedisStore(
        url,
        max_conversations=settings.max_conversations,
        ttl=settings.store_ttl,
        lock_expiry=settings.store_lock_expiry,
    )


async def close_store(store: object) -> None:
    """Close a store's connections, when it has any (the memory store has none)."""
    aclose = getattr(store, "aclose", None)
    if aclose is not None:
        await aclose()
