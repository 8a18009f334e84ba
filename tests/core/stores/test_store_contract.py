"""One contract, three stores: memory, SQLite (a real file) and Redis (a real server)."""

from __future__ import annotations

import asyncio

import pytest

from core.conversations import ConversationKey, Message, Status

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
