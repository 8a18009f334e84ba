"""Attacks on the core through its real entry points: text that is not valid Unicode, model ids
built to reach other URLs, a Redis that goes away mid-reply, a SQLite file that is not a
database, and a flood of queued prompts. Each gets a clean answer; nothing crashes or is lost."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core.commands import Command, execute
from core.conversations import Conversation, ConversationKey, Message, Status
from core.engine import NOT_SAVED, STORE_UNAVAILABLE, ChatEngine, Refused, StoreUnavailable
from core.settings import SettingsError, load_settings
from core.stores import close_store
from core.stores.redis_store import RedisStore, key_json
from core.stores.sqlite_store import SqliteStore
from tests.bots.test_run import empty_env
from tests.core.stores import conftest as store_fixtures
from tests.core.stores.conftest import StoreMaker

from .conftest import ChatMaker, wait_for

make_store = store_fixtures.make_store  # the store tests' fixture: each test on every backend

KEY = ConversationKey("test", "attacks")
BAD = "\ud800 x \udfff"  # lone surrogates: no UTF-8 encoding exists for them
REPAIRED = "\ufffd x \ufffd"


def encodable(conversation: Conversation) -> bytes:
    """What a web page or any UTF-8 wire would need: raises when some text is not Unicode."""
    return json.dumps(conversation.to_dict(), ensure_ascii=False).encode("utf-8")


def engine_on(store: Any, **overrides: Any) -> ChatEngine:
    settings = load_settings(llmconnect_model="echo", **{"user_rate_limit": 0, **overrides})
    return ChatEngine(settings, store, env={})


# --------------------------------------------------------------------------- Unicode


async def test_a_lone_surrogate_is_repaired_at_the_engines_entry_on_every_store(
    make_store: StoreMaker,
) -> None:
    store = await make_store()
    engine = engine_on(store)
    try:
        reply = await engine.submit(KEY, BAD)
        await reply
        assert reply.status is Status.COMPLETE
        assert reply.text == f"[echo] You said: {REPAIRED}"
        await engine.set_system(KEY, f"be {BAD}")
        with pytest.raises(Refused) as refused:
            await engine.set_model(KEY, f"echo/{BAD}")
        refused.value.user_message.encode("utf-8")  # the refusal itself is valid text
        stored = await store.get(KEY)
        assert stored is not None
        assert [m.content for m in stored.messages] == [REPAIRED, reply.text]
        assert stored.system == f"be {REPAIRED}"
        assert stored.model is None
        encodable(stored)
        assert await engine.conversation_keys("test") == [KEY]
    finally:
        await engine.aclose()


async def test_a_proper_surrogate_pair_becomes_its_character() -> None:
    engine = engine_on(None)
    try:
        reply = await engine.submit(KEY, "smile \ud83d\ude00")
        await reply
        assert reply.text == "[echo] You said: smile \U0001f600"
    finally:
        await engine.aclose()


def write_raw_row(path: Path, key: ConversationKey, data: str | bytes) -> None:
    """A row as another (older, buggy) program could have left it."""
    db = sqlite3.connect(path)
    try:
        value = data if isinstance(data, str) else sqlite3.Binary(data)
        db.execute(
            "INSERT OR REPLACE INTO conversations VALUES (?, ?, CAST(? AS TEXT), ?)",
            (key.platform, key.channel, value, time.time()),
        )
        db.commit()
    finally:
        db.close()


def raw_conversation(key: ConversationKey, content: str) -> dict[str, Any]:
    return Conversation(
        key, system=content, messages=[Message("user", content), Message("assistant", "ok")]
    ).to_dict()


async def test_bad_text_stored_in_sqlite_loads_repaired_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "conversations.db"
    SqliteStore(path)._close()  # the schema
    escaped, invalid = ConversationKey("test", "escaped"), ConversationKey("test", "bytes")
    # A lone surrogate as a JSON escape (what json.dumps writes for one).
    write_raw_row(path, escaped, json.dumps(raw_conversation(escaped, BAD)))
    # Bytes that are not UTF-8 at all (a surrogate encoded anyway, and a stray byte).
    body = json.dumps(raw_conversation(invalid, "@@"))
    write_raw_row(path, invalid, body.encode().replace(b"@@", b"\xed\xa0\x80 \xff"))

    store = SqliteStore(path)
    engine = engine_on(store)
    try:
        one = await store.get(escaped)
        two = await store.get(invalid)
        assert one is not None
        assert two is not None
        assert one.messages[0].content == one.system == REPAIRED
        assert "\ufffd" in two.messages[0].content
        encodable(one)
        encodable(two)
        reply = await engine.submit(escaped, "and now?")  # the conversation goes on
        await reply
        assert reply.status is Status.COMPLETE
    finally:
        await engine.aclose()
        await close_store(store)


async def test_bad_text_stored_in_redis_loads_repaired(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix="test:surrogates:")
    key = ConversationKey("test", "bytes")
    body = json.dumps(raw_conversation(key, "@@")).encode().replace(b"@@", b"\xed\xa0\x80 \xff")
    name = f"test:surrogates:conv:{key_json(key)}"
    await store.client.set(name, body)
    try:
        loaded = await store.get(key)
        assert loaded is not None
        assert "\ufffd" in loaded.messages[0].content
        encodable(loaded)
        await store.client.set(name, json.dumps(raw_conversation(key, BAD)))
        loaded = await store.get(key)
        assert loaded is not None
        assert loaded.messages[0].content == REPAIRED
    finally:
        await store.client.delete(name)
        await close_store(store)


# --------------------------------------------------------------------------- model ids

HOSTILE_MODELS = [
    "local/../../admin/delete?x=",
    "local/..",
    "local/a/../b",
    "local/x?y=1",
    "local/x#frag",
    "local/%2e%2e/admin",
    "local/a b",
    "local/tab\there",
    "local/new\nline",
    "local/\u0430lpha",  # Cyrillic a
]


async def test_hostile_model_ids_are_refused_through_the_model_command(
    make_chat: ChatMaker,
) -> None:
    """No allow-list and a configured provider: only the id's own shape can refuse these."""
    chat = await make_chat(llmconnect_allowed_models="")
    for name in HOSTILE_MODELS:
        answer = await chat.command("model", name)
        assert "Available:" in answer, (name, answer)
        assert "is now" not in answer, (name, answer)
    conversation = await chat.engine.get(chat.key)
    assert conversation is None or conversation.model is None
    ok = await chat.command("model", "local/meta-llama/llama-3.1-8b:free@v2+x_y.z")
    assert "is now local/meta-llama/llama-3.1-8b:free@v2+x_y.z" in ok, ok


async def test_hostile_model_ids_are_refused_by_the_engine() -> None:
    engine = ChatEngine(
        load_settings(llmconnect_model="echo"), env={"GEMINI_API_KEY": "test-key-not-real"}
    )
    try:
        for name in ["gemini/../../admin/delete?x=", *HOSTILE_MODELS]:
            with pytest.raises(Refused, match="Available: "):
                engine.validate_model(name)
        assert engine.validate_model("gemini/gemini-2.5-flash") == "gemini/gemini-2.5-flash"
    finally:
        await engine.aclose()


# --------------------------------------------------------------------------- queued prompts


async def test_queued_prompts_per_conversation_are_bounded_at_the_limit() -> None:
    engine = ChatEngine(
        load_settings(llmconnect_model="echo", max_queued_prompts=3),
        env={},
        options={"words": 2000, "delay": 0.01},
    )
    try:
        running = await engine.submit(KEY, "first")
        waiting = [await engine.submit(KEY, f"queued {n}") for n in range(3)]  # the limit
        with pytest.raises(Refused, match="3 prompts are already waiting"):
            await engine.submit(KEY, "one too many")
        other = await engine.submit(ConversationKey("test", "elsewhere"), "another channel")
        assert await engine.stop(KEY)  # the running one ends: a place frees up
        await running
        await engine.submit(KEY, "now there is room")
        with pytest.raises(Refused, match="waiting"):
            await engine.submit(KEY, "full again")
        assert not any(r.done for r in waiting)
        assert not other.done
    finally:
        await engine.aclose()


async def test_the_default_queue_limit_is_five() -> None:
    engine = ChatEngine(
        load_settings(llmconnect_model="echo"), env={}, options={"words": 2000, "delay": 0.01}
    )
    try:
        assert engine.settings.max_queued_prompts == 5
        await engine.submit(KEY, "running")
        for n in range(5):
            await engine.submit(KEY, f"queued {n}")
        with pytest.raises(Refused, match="5 prompts are already waiting"):
            await engine.submit(KEY, "sixth in the queue")
        with pytest.raises(SettingsError, match="MAX_QUEUED_PROMPTS"):
            load_settings(max_queued_prompts=-1)
    finally:
        await engine.aclose()


# --------------------------------------------------------------------------- Redis away


@pytest.fixture
def own_redis() -> Iterator[Any]:
    """A redis-server of this test's own, which the test may stop (the session's must stay)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="llmc-own-"))
    sock = workdir / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"unix://{sock}?db=0"
    client = redis.Redis.from_url(url)
    for _ in range(500):
        try:
            if client.ping():
                break
        except redis.exceptions.ConnectionError:
            time.sleep(0.01)
    client.close()

    class Own:
        def __init__(self) -> None:
            self.url = url
            self.proc = proc

        async def stop(self) -> None:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 10)

    yield Own()
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


async def test_redis_stopped_mid_reply_marks_the_reply_not_saved_and_every_operation_refuses(
    own_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = load_settings(
        store_url=own_redis.url, llmconnect_model="echo", user_rate_limit=0, store_lock_expiry=30
    )
    engine = ChatEngine(settings, env={}, options={"words": 60, "delay": 0.01})
    try:
        reply = await engine.submit(KEY, "talk a while")
        await wait_for(lambda: reply.status is Status.STREAMING and bool(reply.text))
        await own_redis.stop()
        await reply
        assert reply.status is Status.ERROR  # not a silent "complete"
        assert reply.error == NOT_SAVED
        assert len(reply.text.split()) == 60  # the answer itself is whole
        saved_errors = [r for r in caplog.records if "could not save" in r.getMessage()]
        assert len(saved_errors) == 1, [r.getMessage() for r in caplog.records]

        operations = {
            "get": engine.get(KEY),
            "conversation_keys": engine.conversation_keys("test"),
            "conversation": engine.conversation(KEY),
            "set_model": engine.set_model(KEY, "echo"),
            "set_system": engine.set_system(KEY, "terse"),
            "reset": engine.reset(KEY),
            "submit": engine.submit(KEY, "hello?"),
        }
        for name, operation in operations.items():
            with pytest.raises(StoreUnavailable) as refused:
                await operation
            assert refused.value.user_message == STORE_UNAVAILABLE, name
        for command in ("status", "reset", "model", "system", "help"):
            arg = {"model": "echo", "system": "be brief"}.get(command, "")
            result = await execute(engine, KEY, Command(command, arg))
            assert (result.text, result.ok) == (STORE_UNAVAILABLE, False), command
    finally:
        await engine.aclose()


# --------------------------------------------------------------------------- SQLite files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_sqlite_store_and_its_wal_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask would leave a new file readable by everyone
    try:
        settings = load_settings(store_url="sqlite:///private.db", llmconnect_model="echo")
        engine = ChatEngine(settings, env={})
        reply = await engine.submit(KEY, "secret")
        await reply
        files = [tmp_path / name for name in ("private.db", "private.db-wal", "private.db-shm")]
        assert all(f.exists() for f in files)
        assert [mode(f) for f in files] == [0o600] * 3
        await engine.aclose()
    finally:
        os.umask(old)


def llmconnect_run(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bots.console", "run"],
        env=empty_env(WEB_PORT="0", **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def corrupt_database(path: Path) -> None:
    """A real database file, then its second and third pages overwritten."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x TEXT)")
    db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    db.commit()
    db.close()
    with path.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 8192)  # not a b-tree page: no valid page type


@pytest.mark.parametrize("content", ["not a database", "corrupt"])
async def test_a_sqlite_file_that_is_no_database_stops_start_up_with_one_line(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "conversations.db"
    if content == "corrupt":
        corrupt_database(path)
    else:
        path.write_text("these are my notes, not a database\n" * 50)
    before = path.read_bytes()
    done = await asyncio.to_thread(llmconnect_run, tmp_path, STORE_URL=f"sqlite:///{path}")
    assert done.returncode == 2  # as for any wrong setting
    assert "Traceback" not in done.stderr + done.stdout
    named = [line for line in done.stderr.splitlines() if "STORE_URL" in line]
    assert len(named) == 1, done.stderr
    assert str(path) in named[0]
    assert path.read_bytes() == before  # the operator's file is left as it was


async def test_a_sqlite_path_in_a_missing_folder_stops_start_up_with_one_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "no-such-folder" / "conversations.db"
    done = await asyncio.to_thread(llmconnect_run, tmp_path, STORE_URL=f"sqlite:///{path}")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    named = [line for line in (done.stderr + done.stdout).splitlines() if "STORE_URL" in line]
    assert len(named) == 1, done.stderr + done.stdout
    assert str(path) in named[0]
    assert not path.parent.exists()
