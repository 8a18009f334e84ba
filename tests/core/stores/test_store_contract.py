"""One contract, three stores: memory, SQLite (a real file) and Redis (a real server)."""

from __future__ import annotations

import asyncio

import pytest

from core.conversations import ConversationKey, MemoryStore, Message, MessageAttachment, Status
from core.feedback import DOWN, UP, Counts, FeedbackStore
from core.stores.redis_store import USAGE_DAY_EXPIRY, RedisStore
from core.usage import Tokens, UsageStore

from .conftest import StoreMaker

KEY = ConversationKey("test", "general")
THREAD = ConversationKey("test", "general/thread")


def key(n: int) -> ConversationKey:
    return ConversationKey("test", f"c{n}")


async def settle(store: object) -> None:
    """Apply the bounds now (the memory store does on every save; the others periodically)."""
    prune = getattr(store, "prune", None)
    if prune is not None:
        await prune()


async def test_unknown_conversation_is_none_until_created(make_store: StoreMaker):
    store = await make_store()
    assert await store.get(KEY) is None
    created = await store.get_or_create(KEY)
    assert created.key == KEY
    assert created.messages == []
    fetched = await store.get(KEY)
    assert fetched is not None
    assert fetched.key == KEY


async def test_every_field_round_trips(make_store: StoreMaker):
    store = await make_store()
    conversation = await store.get_or_create(THREAD, parent=KEY)
    conversation.model = "groq/llama-3.3-70b-versatile"
    conversation.system = "Be terse. ✨ «ünïcødé»"
    conversation.messages = [
        Message("user", "hi 👋\nsecond line", created_at=1.5),
        Message("assistant", "hello", status=Status.COMPLETE, created_at=2.5),
        Message("user", "and?"),
        Message("assistant", "partial", status=Status.ERROR, error="The model timed out."),
        Message("user", "stop that"),
        Message("assistant", "cut", status=Status.CANCELLED),
    ]
    await store.save(conversation)
    stored = await store.get(THREAD)
    assert stored is not None
    assert stored.to_dict() == conversation.to_dict()
    assert stored.parent == KEY
    assert stored.messages[3].error == "The model timed out."
    assert stored.messages[3].status is Status.ERROR
    assert stored.updated_at >= stored.created_at


async def test_attachments_round_trip(make_store: StoreMaker):
    store = await make_store()
    conversation = await store.get_or_create(KEY)
    files = (
        MessageAttachment("a.png", "image", "image/png", "iVBORw0KGgo="),
        MessageAttachment("old.png", "image", "image/png", ""),
        MessageAttachment("r.pdf", "pdf", "application/pdf", "JVBERi0xLjc="),
        MessageAttachment("x.py", "text", "text/x-python", "x.py\n```py\nprint('é')\n```"),
    )
    conversation.messages = [
        Message("user", "look", attachments=files),
        Message("assistant", "seen"),
    ]
    await store.save(conversation)
    # SQLite and Redis: read back over a new connection (memory: the same store).
    reopened = store if make_store.backend == "memory" else await make_store()  # type: ignore[attr-defined]
    stored = await reopened.get(KEY)
    assert stored is not None
    assert stored.messages[0].attachments == files
    assert stored.messages[1].attachments == ()
    assert stored.llm_history_parts(max_images=2)[0][1][1] == (
        "image",
        b"\x89PNG\r\n\x1a\n",
        "image/png",
        "a.png",
    )


async def test_the_model_that_answered_and_the_unavailable_ones_round_trip(
    make_store: StoreMaker,
):
    store = await make_store()
    conversation = await store.get_or_create(KEY)
    conversation.messages = [
        Message("user", "hi"),
        Message("assistant", "hello", model="openai/gpt-4o-mini", unavailable=("groq/llama",)),
        Message("user", "again"),
        Message("assistant", "hello", model="groq/llama"),
    ]
    await store.save(conversation)
    stored = await store.get(KEY)
    assert stored is not None
    assert [(m.model, m.unavailable) for m in stored.messages] == [
        (None, ()),
        ("openai/gpt-4o-mini", ("groq/llama",)),
        (None, ()),
        ("groq/llama", ()),
    ]


async def test_a_replys_id_asker_and_messages_round_trip(make_store: StoreMaker):
    store = await make_store()
    conversation = await store.get_or_create(KEY)
    conversation.messages = [
        Message("user", "hi"),
        Message("assistant", "hello", id="0123456789ab", user="U1", refs=("1001", "1002")),
        Message("user", "old"),
        Message("assistant", "from before ids were kept"),
    ]
    await store.save(conversation)
    reopened = store if make_store.backend == "memory" else await make_store()  # type: ignore[attr-defined]
    stored = await reopened.get(KEY)
    assert stored is not None
    assert [(m.id, m.user, m.refs) for m in stored.messages] == [
        (None, None, ()),
        ("0123456789ab", "U1", ("1001", "1002")),
        (None, None, ()),
        (None, None, ()),
    ]


async def test_a_streaming_reply_is_stored_with_the_text_so_far(make_store: StoreMaker):
    store = await make_store()
    conversation = await store.get_or_create(KEY)
    reply = Message("assistant", status=Status.STREAMING, parts=["Hel", "lo"])
    conversation.messages += [Message("user", "hi"), reply]
    await store.save(conversation)
    stored = await store.get(KEY)
    assert stored is not None
    assert stored.messages[1].text == "Hello"
    assert stored.messages[1].status is Status.STREAMING


async def test_get_or_create_keeps_an_existing_conversation(make_store: StoreMaker):
    store = await make_store()
    conversation = await store.get_or_create(KEY)
    conversation.messages.append(Message("user", "remember me"))
    conversation.system = "kept"
    await store.save(conversation)
    again = await store.get_or_create(KEY, parent=ConversationKey("test", "elsewhere"))
    assert [m.content for m in again.messages] == ["remember me"]
    assert again.system == "kept"
    assert again.parent is None


async def test_a_thread_starts_with_its_parents_model_and_system_prompt(make_store: StoreMaker):
    store = await make_store()
    parent = await store.get_or_create(KEY)
    parent.model, parent.system = "echo/echo", "You are a pirate."
    parent.messages.append(Message("user", "not inherited"))
    await store.save(parent)
    thread = await store.get_or_create(THREAD, parent=KEY)
    assert (thread.model, thread.system, thread.messages) == ("echo/echo", "You are a pirate.", [])
    assert thread.parent == KEY


async def test_the_tool_servers_round_trip_and_a_thread_starts_with_its_parents(
    make_store: StoreMaker,
):
    """``/tools enable|disable``'s choice: ``None`` (the defaults), none at all, or some."""
    store = await make_store()
    conversation = await store.get_or_create(KEY)
    assert conversation.tools is None
    await store.save(conversation)
    stored = await store.get(KEY)
    assert stored is not None
    assert stored.tools is None
    for chosen in ((), ("files", "search")):
        conversation.tools = chosen
        await store.save(conversation)
        again = await (await make_store()).get(KEY) if not isinstance(store, MemoryStore) else None
        stored = again or await store.get(KEY)
        assert stored is not None
        assert stored.tools == chosen
    thread = await store.get_or_create(THREAD, parent=KEY)
    assert thread.tools == ("files", "search")


async def test_delete_forgets(make_store: StoreMaker):
    store = await make_store()
    await store.get_or_create(KEY)
    await store.get_or_create(key(1))
    await store.delete(KEY)
    await store.delete(ConversationKey("test", "never-existed"))
    assert await store.get(KEY) is None
    assert await store.get(key(1)) is not None


async def test_keys_with_separators_do_not_collide(make_store: StoreMaker):
    store = await make_store()
    one, two = ConversationKey("a:b", "c"), ConversationKey("a", "b:c")
    first = await store.get_or_create(one)
    first.system = "one"
    await store.save(first)
    second = await store.get_or_create(two)
    assert second.system is None


async def test_most_conversations_kept_evicts_the_least_recent(make_store: StoreMaker):
    store = await make_store(max_conversations=3)
    for n in range(5):
        conversation = await store.get_or_create(key(n))
        await store.save(conversation)
    await settle(store)
    assert [await store.get(key(n)) is not None for n in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]


async def test_a_second_connection_sees_the_same_conversations(make_store: StoreMaker):
    """What survives a restart (SQLite) and what several processes share (Redis)."""
    if make_store.backend == "memory":  # type: ignore[attr-defined]
        pytest.skip("the memory store is gone with its process, by design")
    first = await make_store()
    conversation = await first.get_or_create(KEY)
    conversation.model = "echo/echo"
    conversation.messages += [Message("user", "hi"), Message("assistant", "hello")]
    await first.save(conversation)
    await first.aclose()  # type: ignore[attr-defined]
    second = await make_store()
    stored = await second.get(KEY)
    assert stored is not None
    assert stored.to_dict() == conversation.to_dict()


async def test_an_idle_conversation_expires(make_store: StoreMaker):
    if make_store.backend == "memory":  # type: ignore[attr-defined]
        pytest.skip("the memory store is bounded by MAX_CONVERSATIONS only")
    store = await make_store(ttl=0.05)
    await store.get_or_create(KEY)
    for _ in range(500):
        if await store.get(KEY) is None:
            break
        await asyncio.sleep(0.01)
    assert await store.get(KEY) is None
    await settle(store)
    assert await store.count() == 0  # type: ignore[attr-defined]
    # Created afresh afterwards, empty.
    assert (await store.get_or_create(KEY)).messages == []


async def test_concurrent_creation_yields_one_conversation(make_store: StoreMaker):
    """Two connections creating the same conversation at once end with one, never a reset."""
    first = await make_store()
    second = first if make_store.backend == "memory" else await make_store()  # type: ignore[attr-defined]
    made = await asyncio.gather(*(s.get_or_create(KEY) for s in (first, second) * 5))
    made[0].messages.append(Message("user", "first turn"))
    await first.save(made[0])
    again = await second.get_or_create(KEY)
    assert [m.content for m in again.messages] == ["first turn"]


async def test_list_keys_names_one_platforms_conversations_most_recent_first(
    make_store: StoreMaker,
):
    store = await make_store()
    web = [ConversationKey("web", name) for name in ("w1", "w:2", "w3")]
    for k in web:
        await store.save(await store.get_or_create(k))
    await store.get_or_create(ConversationKey("slack", "C1"))
    touched = await store.get(web[0])
    assert touched is not None
    await store.save(touched)  # saved last: listed first
    await store.delete(web[2])
    assert await store.list_keys("web") == [web[0], web[1]]
    assert await store.list_keys("slack") == [ConversationKey("slack", "C1")]
    assert await store.list_keys("discord") == []


async def test_list_keys_survives_a_restart_and_skips_expired_ones(make_store: StoreMaker):
    if make_store.backend == "memory":  # type: ignore[attr-defined]
        pytest.skip("the memory store is gone with its process, by design")
    first = await make_store()
    await first.get_or_create(ConversationKey("web", "kept"))
    await first.aclose()  # type: ignore[attr-defined]
    second = await make_store()
    assert await second.list_keys("web") == [ConversationKey("web", "kept")]
    expiring = await make_store(ttl=0.05)
    await expiring.get_or_create(ConversationKey("web", "brief"))
    for _ in range(500):
        if await expiring.get(ConversationKey("web", "brief")) is None:
            break
        await asyncio.sleep(0.01)
    assert await expiring.list_keys("web") == []


# -- token usage (core.usage.UsageStore) ----------------------------------------------------------

DAY, NEXT_DAY = "2026-12-02", "2026-12-03"


async def test_usage_counts_per_conversation_day_total_and_user(make_store: StoreMaker):
    store = await make_store()
    assert isinstance(store, UsageStore)
    await store.get_or_create(KEY)
    await store.add_usage(KEY, "u1", DAY, "openai/gpt-4o-mini", Tokens(10, 20))
    await store.add_usage(KEY, "u1", DAY, "openai/gpt-4o-mini", Tokens(1, 2))
    await store.add_usage(KEY, "u2", DAY, "groq/llama", Tokens(5, 0))
    await store.add_usage(KEY, None, NEXT_DAY, "openai/gpt-4o-mini", Tokens(100, 200))
    await store.add_usage(key(1), "u1", DAY, "openai/gpt-4o-mini", Tokens(3, 3))

    today = await store.read_usage(KEY, "u1", DAY)
    assert today.day == DAY
    assert today.conversation_day == {
        "openai/gpt-4o-mini": Tokens(11, 22),
        "groq/llama": Tokens(5, 0),
    }
    assert today.conversation_total == {
        "openai/gpt-4o-mini": Tokens(111, 222),
        "groq/llama": Tokens(5, 0),
    }
    assert today.user_day == {"openai/gpt-4o-mini": Tokens(14, 25)}  # both conversations
    tomorrow = await store.read_usage(KEY, None, NEXT_DAY)
    assert tomorrow.conversation_day == {"openai/gpt-4o-mini": Tokens(100, 200)}
    assert tomorrow.user_day is None
    nobody = await store.read_usage(ConversationKey("test", "quiet"), "u9", DAY)
    assert (nobody.conversation_day, nobody.conversation_total, nobody.user_day) == ({}, {}, {})


async def test_usage_keys_with_separators_and_platforms_do_not_collide(make_store: StoreMaker):
    store = await make_store()
    one, two = ConversationKey("a:b", "c"), ConversationKey("a", "b:c")
    await store.add_usage(one, "x:y", DAY, "m/1", Tokens(1, 1))
    await store.add_usage(two, "x", DAY, "m/1", Tokens(2, 2))
    await store.add_usage(ConversationKey("slack", "C1"), "U1", DAY, "m/1", Tokens(4, 4))
    assert (await store.read_usage(one, "x:y", DAY)).conversation_day == {"m/1": Tokens(1, 1)}
    assert (await store.read_usage(two, "x", DAY)).user_day == {"m/1": Tokens(2, 2)}
    # The same user id on another platform is another user.
    discord = await store.read_usage(ConversationKey("discord", "C1"), "U1", DAY)
    assert discord.user_day == {}
    assert discord.conversation_day == {}


async def test_concurrent_usage_increments_lose_nothing(make_store: StoreMaker):
    """Several processes (connections) counting at once: every token is counted once."""
    first = await make_store()
    second = first if make_store.backend == "memory" else await make_store()  # type: ignore[attr-defined]
    assert isinstance(first, UsageStore)
    assert isinstance(second, UsageStore)
    await asyncio.gather(
        *(s.add_usage(KEY, "u1", DAY, "m/1", Tokens(1, 2)) for s in (first, second) * 25)
    )
    report = await second.read_usage(KEY, "u1", DAY)
    assert report.conversation_day == report.conversation_total == report.user_day
    assert report.user_day == {"m/1": Tokens(50, 100)}


async def test_usage_survives_a_restart(make_store: StoreMaker):
    if make_store.backend == "memory":  # type: ignore[attr-defined]
        pytest.skip("the memory store is gone with its process, by design")
    first = await make_store()
    await first.get_or_create(KEY)
    await first.add_usage(KEY, "u1", DAY, "m/1", Tokens(3, 4))
    await first.aclose()  # type: ignore[attr-defined]
    second = await make_store()
    assert (await second.read_usage(KEY, "u1", DAY)).user_day == {"m/1": Tokens(3, 4)}


async def test_an_evicted_conversation_takes_its_total_along(make_store: StoreMaker):
    store = await make_store(max_conversations=1)
    await store.save(await store.get_or_create(key(0)))
    await store.add_usage(key(0), "u1", DAY, "m/1", Tokens(3, 4))
    await store.save(await store.get_or_create(key(1)))
    await settle(store)
    assert await store.get(key(0)) is None
    report = await store.read_usage(key(0), "u1", DAY)
    assert report.conversation_total == {}
    # The day's counts stay: a quota is not lifted by evicting a conversation.
    assert report.user_day == {"m/1": Tokens(3, 4)}
    assert report.conversation_day == {"m/1": Tokens(3, 4)}


async def test_daily_counts_do_not_outlive_the_next_days(make_store: StoreMaker):
    store = await make_store()
    await store.get_or_create(KEY)
    await store.add_usage(KEY, "u1", "2026-11-28", "m/1", Tokens(1, 1))
    if isinstance(store, RedisStore):
        # Redis: the day's hashes expire two days after their last count; the total does not
        # (no STORE_TTL here).
        names = store._usage_names(KEY, "u1", "2026-11-28")
        ttls = [await store.client.ttl(name) for name in names]
        assert 0 < ttls[0] <= USAGE_DAY_EXPIRY
        assert 0 < ttls[2] <= USAGE_DAY_EXPIRY
        assert ttls[1] == -1
        return
    await store.add_usage(KEY, "u1", DAY, "m/1", Tokens(2, 2))  # a later day: older ones go
    await settle(store)
    old = await store.read_usage(KEY, "u1", "2026-11-28")
    assert old.conversation_day == {}
    assert old.user_day == {}
    assert old.conversation_total == {"m/1": Tokens(3, 3)}
    assert (await store.read_usage(KEY, "u1", DAY)).user_day == {"m/1": Tokens(2, 2)}


# -- feedback on replies (core.feedback.FeedbackStore) ---------------------------------------------


async def test_votes_are_one_per_user_per_reply_changeable_and_counted_per_model(
    make_store: StoreMaker,
):
    store = await make_store()
    assert isinstance(store, FeedbackStore)
    await store.save(await store.get_or_create(KEY))
    await store.set_vote(KEY, "r1", "u1", "m/1", UP)
    await store.set_vote(KEY, "r1", "u1", "m/1", UP)  # the same vote again: still one
    await store.set_vote(KEY, "r1", "u2", "m/1", UP)
    await store.set_vote(KEY, "r1", "u2", "m/1", DOWN)  # changed
    await store.set_vote(KEY, "r2", "u1", "m/2", DOWN)
    await store.set_vote(key(1), "r9", "u1", "m/1", UP)  # another conversation
    assert await store.read_feedback(KEY) == {"m/1": Counts(1, 1), "m/2": Counts(0, 1)}
    assert await store.vote_of(KEY, "r1", "u2") == DOWN
    assert await store.vote_of(KEY, "r1", "u3") == 0
    await store.set_vote(KEY, "r1", "u2", "m/1", 0)  # withdrawn
    assert await store.vote_of(KEY, "r1", "u2") == 0
    assert await store.read_feedback(KEY) == {"m/1": Counts(1, 0), "m/2": Counts(0, 1)}
    assert await store.read_feedback(ConversationKey("test", "quiet")) == {}


async def test_vote_keys_with_separators_do_not_collide(make_store: StoreMaker):
    store = await make_store()
    await store.set_vote(ConversationKey("a:b", "c"), "r:1", "u", "m/1", UP)  # type: ignore[attr-defined]
    await store.set_vote(ConversationKey("a", "b:c"), "r", "1:u", "m/1", DOWN)  # type: ignore[attr-defined]
    assert await store.read_feedback(ConversationKey("a:b", "c")) == {"m/1": Counts(1, 0)}  # type: ignore[attr-defined]
    assert await store.vote_of(ConversationKey("a", "b:c"), "r", "1:u") == DOWN  # type: ignore[attr-defined]
    assert await store.vote_of(ConversationKey("a", "b:c"), "r:1", "u") == 0  # type: ignore[attr-defined]


async def test_votes_survive_a_restart(make_store: StoreMaker):
    if make_store.backend == "memory":  # type: ignore[attr-defined]
        pytest.skip("the memory store is this process only")
    first = await make_store()
    await first.save(await first.get_or_create(KEY))
    await first.set_vote(KEY, "r1", "u1", "m/1", DOWN)  # type: ignore[attr-defined]
    second = await make_store()
    assert await second.read_feedback(KEY) == {"m/1": Counts(0, 1)}  # type: ignore[attr-defined]


async def test_votes_go_with_their_conversation(make_store: StoreMaker):
    store = await make_store(max_conversations=1)
    await store.save(await store.get_or_create(key(0)))
    await store.set_vote(key(0), "r", "u", "m/1", UP)  # type: ignore[attr-defined]
    await store.save(await store.get_or_create(key(1)))
    await store.set_vote(key(1), "r", "u", "m/1", UP)  # type: ignore[attr-defined]
    await settle(store)  # key(0) evicted
    assert await store.read_feedback(key(0)) == {}  # type: ignore[attr-defined]
    await store.delete(key(1))
    assert await store.read_feedback(key(1)) == {}  # type: ignore[attr-defined]
