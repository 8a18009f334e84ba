"""``STORE_URL`` end to end: the factory, and the engine over each store."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.clock import FakeClock
from core.controls import Action, action_id, press
from core.conversations import Conversation, ConversationKey, MemoryStore, Message, Status
from core.engine import INTERRUPTED, ONLY_ASKER, ChatEngine, Refused
from core.feedback import Counts
from core.policy import Actor
from core.settings import SettingsError, load_settings
from core.stores import LocalLocks, open_store
from core.stores.redis_store import RedisStore
from core.stores.sqlite_store import SqliteStore
from core.usage import Tokens

from ..conftest import wait_for
from .conftest import StoreMaker

KEY = ConversationKey("test", "general")


def engine_on(store: object, **options: object) -> ChatEngine:
    settings = load_settings(llmconnect_model="echo", user_rate_limit=0)
    return ChatEngine(settings, store, env={}, options=options)  # type: ignore[arg-type]


async def test_memory_is_the_default():
    engine = ChatEngine(load_settings(max_conversations=7), env={})
    assert isinstance(engine.store, MemoryStore)
    assert engine.store.max_conversations == 7
    assert isinstance(engine.locks, LocalLocks)
    await engine.aclose()


async def test_sqlite_url_opens_a_file_that_survives_the_engine(tmp_path: Path):
    settings = load_settings(store_url="sqlite:///data/conversations.db", llmconnect_model="echo")
    (tmp_path / "data").mkdir()  # the tests run in tmp_path
    engine = ChatEngine(settings, env={})
    assert isinstance(engine.store, SqliteStore)
    reply = await engine.submit(KEY, "remember this")
    await reply
    await engine.aclose()  # closes the store it opened
    assert (tmp_path / "data" / "conversations.db").exists()

    again = ChatEngine(settings, env={})
    conversation = await again.store.get(KEY)
    assert conversation is not None
    assert [(m.role, m.status, m.content) for m in conversation.messages] == [
        ("user", Status.COMPLETE, "remember this"),
        ("assistant", Status.COMPLETE, "[echo] You said: remember this"),
    ]
    await again.aclose()


async def test_a_bad_store_url_fails_at_start_up():
    for url in ("postgres://db/x", "sqlite://relative.db", "redis"):
        with pytest.raises(SettingsError, match="STORE_URL"):
            load_settings(store_url=url)


async def test_an_unopenable_sqlite_file_fails_at_once(tmp_path: Path):
    settings = load_settings(store_url=f"sqlite:///{tmp_path}/missing-dir/x.db")
    with pytest.raises(OSError, match="missing-dir"):
        open_store(settings)


async def test_redis_url_shares_store_and_lock(redis_url: str):
    engine = ChatEngine(load_settings(store_url=redis_url, store_lock_expiry=5), env={})
    assert isinstance(engine.store, RedisStore)
    assert engine.locks is engine.store
    assert engine.store.lock_expiry == 5
    await engine.aclose()


async def test_turns_accumulate_in_order_and_a_new_engine_continues(make_store: StoreMaker):
    store = await make_store()
    engine = engine_on(store)
    replies = [await engine.submit(KEY, f"prompt {n}") for n in range(3)]
    await asyncio.gather(*replies)
    # A restart (SQLite), another process (Redis); memory: the same store, another engine.
    later = engine_on(store if make_store.backend == "memory" else await make_store())  # type: ignore[attr-defined]
    await (await later.submit(KEY, "prompt 3"))
    conversation = await later.store.get(KEY)
    assert conversation is not None
    assert [m.content for m in conversation.messages] == [
        text for n in range(4) for text in (f"prompt {n}", f"[echo] You said: prompt {n}")
    ]
    assert all(m.status is Status.COMPLETE for m in conversation.messages)
    await engine.aclose()
    await later.aclose()


async def test_a_reply_cut_off_by_a_crash_is_closed_by_the_next_one(make_store: StoreMaker):
    store = await make_store()
    crashed = await store.get_or_create(KEY)
    crashed.messages += [
        Message("user", "lost question"),
        Message("assistant", status=Status.STREAMING, parts=["half an ans"]),
    ]
    await store.save(crashed)
    engine = engine_on(store)
    await (await engine.submit(KEY, "again"))
    conversation = await engine.get(KEY)
    assert conversation is not None
    old = conversation.messages[1]
    assert (old.status, old.error, old.content) == (Status.ERROR, INTERRUPTED, "half an ans")
    assert conversation.messages[-1].status is Status.COMPLETE
    # The interrupted turn is not sent to the LLM again.
    assert conversation.llm_history() == [
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "[echo] You said: again"},
    ]
    await engine.aclose()


async def test_changes_during_a_generation_are_kept(make_store: StoreMaker):
    """The system prompt set while a reply streams survives the reply's own final save."""
    store = await make_store()
    engine = engine_on(store, delay=0.01, words=30)
    reply = await engine.submit(KEY, "long answer please")
    await wait_for(lambda: reply.status is Status.STREAMING)
    await engine.set_system(KEY, "You are terse.")
    live = await engine.get(KEY)
    assert live is not None
    assert live.messages[-1] is reply.message  # the running reply, text so far included
    await reply
    stored = await store.get(KEY)
    assert stored is not None
    assert stored.system == "You are terse."
    assert stored.messages[-1].status is Status.COMPLETE
    await engine.aclose()


async def test_reset_during_a_generation_empties_the_stored_history(make_store: StoreMaker):
    store = await make_store()
    engine = engine_on(store, delay=0.01)
    await (await engine.submit(KEY, "first"))
    engine.options["words"] = 10_000  # the second reply is still streaming when reset
    reply = await engine.submit(KEY, "second")
    await wait_for(lambda: reply.status is Status.STREAMING)
    await engine.reset(KEY)
    assert reply.status is Status.CANCELLED
    stored = await store.get(KEY)
    assert stored is not None
    assert stored.messages == []
    await engine.aclose()


async def test_reset_waits_for_a_generation_in_another_process(redis_url: str):
    """With Redis, a reset in one worker while another streams clears the history after that
    generation saved its turn (not before, where the save would bring the turn back)."""
    prefix = f"test:{uuid.uuid4().hex}:"
    one = RedisStore(redis_url, prefix=prefix)
    two = RedisStore(redis_url, prefix=prefix)
    streaming, resetting = engine_on(one, delay=0.01, words=60), engine_on(two)
    reply = await streaming.submit(KEY, "busy")
    await wait_for(lambda: reply.status is Status.STREAMING)
    await resetting.reset(KEY)
    assert reply.done  # the reset waited for the other worker's lock
    stored = await one.get(KEY)
    assert stored is not None
    assert stored.messages == []
    await streaming.aclose()
    await resetting.aclose()
    for store in (one, two):
        keys = [k async for k in store.client.scan_iter(match=f"{prefix}*")]
        if keys:
            await store.client.delete(*keys)
        await store.aclose()


async def test_reply_buttons_pressed_in_another_process(redis_url: str):
    """Two workers on one Redis: a reply streaming in one is stopped by its Stop pressed in the
    other (a stranger's press refused), then regenerated and rated from there."""
    prefix = f"test:{uuid.uuid4().hex}:"
    one = RedisStore(redis_url, prefix=prefix)
    two = RedisStore(redis_url, prefix=prefix)
    streaming, other = engine_on(one, delay=0.01, words=200), engine_on(two)
    asker, stranger = Actor("U1"), Actor("U2")
    reply = await streaming.submit(KEY, "busy", actor=asker)
    await wait_for(lambda: reply.status is Status.STREAMING and reply.text != "")
    await wait_for(lambda: reply.stored)
    stop = action_id(Action.STOP, KEY, reply.id)

    refused = await press(other, KEY, stop, stranger)
    regenerate = await press(other, KEY, action_id(Action.REGENERATE, KEY, reply.id), asker)
    stopped = await press(other, KEY, stop, asker)

    assert refused.text == ONLY_ASKER
    assert regenerate.text == "This reply is still being written: stop it first."
    assert stopped.ok
    assert reply.done
    assert reply.status is Status.CANCELLED
    again = await press(other, KEY, action_id(Action.REGENERATE, KEY, reply.id), asker)
    assert again.reply is not None
    assert (await again.reply).status is Status.COMPLETE
    await press(streaming, KEY, action_id(Action.UP, KEY, again.reply.id), stranger)
    assert await other.feedback_of(KEY) == {"echo/echo": Counts(1, 0)}
    await streaming.aclose()
    await other.aclose()
    for store in (one, two):
        keys = [k async for k in store.client.scan_iter(match=f"{prefix}*")]
        if keys:
            await store.client.delete(*keys)
        await store.aclose()


async def test_a_daily_cap_counts_the_replies_of_every_process(redis_url: str):
    """Two workers on one Redis: tokens one counts refuse the user's next prompt in the other."""
    prefix = f"test:{uuid.uuid4().hex}:"
    one = RedisStore(redis_url, prefix=prefix)
    two = RedisStore(redis_url, prefix=prefix)
    settings = load_settings(llmconnect_model="echo", user_rate_limit=0, user_daily_tokens=5)
    clock = FakeClock(wall_start=datetime(2026, 12, 2, 23, 0, tzinfo=UTC).timestamp())
    first = ChatEngine(settings, one, env={}, clock=clock)
    second = ChatEngine(settings, two, env={}, clock=clock)
    alice = Actor("alice")
    reply = await first.submit(KEY, "one two three", actor=alice)
    await reply
    assert reply.usage is not None
    with pytest.raises(Refused, match=r"^You have used your 5 tokens for today .* 1 h \(00:00"):
        await second.submit(ConversationKey("test", "elsewhere"), "hi", actor=alice)
    report = await second.usage_of(KEY, alice)
    assert report is not None
    assert report.user_day == {"echo/echo": Tokens(3, reply.usage.output_tokens)}
    await first.aclose()
    await second.aclose()
    for store in (one, two):
        keys = [k async for k in store.client.scan_iter(match=f"{prefix}*")]
        if keys:
            await store.client.delete(*keys)
        await store.aclose()


class SlowSqliteStore(SqliteStore):
    """A real SQLite store on a slow disk: once ``delay`` is set, each save waits that long
    first (``slow_save`` is set when one has begun)."""

    delay = 0.0

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.slow_save = asyncio.Event()

    async def save(self, conversation: Conversation) -> None:
        if self.delay:
            self.slow_save.set()
            await asyncio.sleep(self.delay)
        await super().save(conversation)


async def test_shutdown_waits_for_the_final_save_of_a_stopped_reply(tmp_path: Path):
    """A reply stopped by /stop is saving its turn (slowly) when shutdown comes: ``aclose``
    returns only once that turn is stored. A store closed (or a process exiting) before that
    would lose what the user saw."""
    store = SlowSqliteStore(tmp_path / "slow.db")
    engine = engine_on(store, delay=0.01, words=10_000)
    reply = await engine.submit(KEY, "talk for a while")
    await wait_for(lambda: reply.status is Status.STREAMING and bool(reply.text))
    store.delay = 0.2
    stopping = asyncio.ensure_future(engine.stop(KEY))
    await store.slow_save.wait()  # the stopped reply's final save has begun
    await engine.aclose()
    stored = await store.get(KEY)
    assert stored is not None
    assert [m.status for m in stored.messages] == [Status.COMPLETE, Status.CANCELLED]
    assert stored.messages[-1].content == reply.text
    assert reply.status is Status.CANCELLED
    assert await stopping is True
    await store.aclose()


def test_conversation_to_dict_is_json_only():
    conversation = Conversation(KEY, parent=ConversationKey("test", "p"))
    conversation.messages.append(Message("assistant", status=Status.STREAMING, parts=["a", "b"]))
    assert json.loads(json.dumps(conversation.to_dict()))["messages"][0]["content"] == "ab"
