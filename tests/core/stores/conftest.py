"""Fixtures for the store tests: a real Redis and real SQLite files, never stand-ins.

Redis comes from ``TEST_REDIS_URL`` when set, else a ``redis-server`` this session starts on a
private Unix socket (Debian: ``apt-get install redis-server``). Without either the Redis cases
skip, saying so; with ``LLMCONNECT_REQUIRE_REDIS=1`` (CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core.conversations import ConversationStore, MemoryStore
from core.stores import close_store
from core.stores.redis_store import RedisStore
from core.stores.sqlite_store import SqliteStore

BACKENDS = ["memory", "sqlite", "redis"]


def _no_redis(reason: str) -> None:
    if os.environ.get("LLMCONNECT_REQUIRE_REDIS"):
        pytest.fail(f"{reason} (LLMCONNECT_REQUIRE_REDIS is set)")
    pytest.skip(reason)


def _wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    client = redis.Redis.from_url(url)
    try:
        for _ in range(500):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {proc.returncode}")
            try:
                if client.ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.01)
        raise RuntimeError(f"Redis at {url} never answered PING")
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis every test may use (each test keeps to its own keys)."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        _wait_ready(url)
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        _no_redis(
            "no Redis for the store tests: set TEST_REDIS_URL or install redis-server "
            "(apt-get install redis-server)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="llmc-redis-"))  # short: a socket path has a limit
    sock = workdir / "redis.sock"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"unix://{sock}?db=0"
    try:
        _wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


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
