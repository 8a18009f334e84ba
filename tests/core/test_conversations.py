"""Tests for core.conversations: threads, history bounds, LRU eviction and what the LLM is sent."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from core.conversations import (
    IMAGE_CHARS,
    Conversation,
    ConversationKey,
    MemoryStore,
    Message,
    MessageAttachment,
    Status,
    load_conversation,
)

from .conftest import KEY, OTHER

THREAD = ConversationKey("test", "general/thread-1")


def turn(user: str, reply: str, status: Status = Status.COMPLETE) -> list[Message]:
    return [Message("user", user), Message("assistant", reply, status=status)]


def conversation(*turns: list[Message]) -> Conversation:
    return Conversation(KEY, messages=[m for t in turns for m in t])


def contents(conv: Conversation) -> list[str]:
    return [m.text for m in conv.messages]


# -- messages -------------------------------------------------------------------------------------


def test_streaming_message_text_is_its_parts_until_it_finishes() -> None:
    parts = ["Hel", "lo"]
    message = Message("assistant", status=Status.STREAMING, parts=parts)
    assert message.text == "Hello"
    parts.append("!")
    assert message.text == "Hello!"
    assert message.to_dict()["content"] == "Hello!"

    message.finish(Status.COMPLETE)

    assert message.parts is None
    assert message.content == message.text == "Hello!"
    assert message.to_dict()["status"] == "complete"


def test_finish_with_error_keeps_partial_text_and_the_error_line() -> None:
    message = Message("assistant", status=Status.STREAMING, parts=["half an"])
    message.finish(Status.ERROR, "The provider is unavailable right now.")
    assert (message.status, message.content, message.error) == (
        Status.ERROR,
        "half an",
        "The provider is unavailable right now.",
    )


# -- threads --------------------------------------------------------------------------------------


async def test_thread_starts_with_parents_model_and_system_but_its_own_history() -> None:
    store = MemoryStore()
    parent = await store.get_or_create(KEY)
    parent.model = "groq/llama-3.3-70b-versatile"
    parent.system = "Be terse."
    parent.messages.extend(turn("parent question", "parent answer"))
    await store.save(parent)

    thread = await store.get_or_create(THREAD, parent=KEY)

    assert thread.key == THREAD
    assert thread.parent == KEY
    assert (thread.model, thread.system) == ("groq/llama-3.3-70b-versatile", "Be terse.")
    assert thread.messages == []
    assert thread.llm_history() == []

    # From then on they are independent.
    thread.model = "echo/echo"
    thread.messages.extend(turn("thread question", "thread answer"))
    assert parent.model == "groq/llama-3.3-70b-versatile"
    assert contents(parent) == ["parent question", "parent answer"]


async def test_existing_thread_is_not_reinitialised_from_its_parent() -> None:
    store = MemoryStore()
    thread = await store.get_or_create(THREAD, parent=KEY)
    thread.model = "echo/echo"
    parent = await store.get_or_create(KEY)
    parent.model = "groq/llama-3.3-70b-versatile"

    again = await store.get_or_create(THREAD, parent=KEY)

    assert again is thread
    assert again.model == "echo/echo"


async def test_thread_of_an_unknown_parent_starts_with_defaults() -> None:
    thread = await MemoryStore().get_or_create(THREAD, parent=OTHER)
    assert (thread.model, thread.system, thread.messages) == (None, None, [])


# -- trimming -------------------------------------------------------------------------------------


def test_trim_drops_oldest_whole_turns_to_the_message_bound() -> None:
    conv = conversation(turn("q1", "a1"), turn("q2", "a2"), turn("q3", "a3"))

    dropped = conv.trim(max_messages=4, max_chars=10_000)

    assert dropped == 2
    assert contents(conv) == ["q2", "a2", "q3", "a3"]


def test_trim_never_leaves_half_a_turn() -> None:
    conv = conversation(turn("q1", "a1"), turn("q2", "a2"), turn("q3", "a3"))

    conv.trim(max_messages=3, max_chars=10_000)

    # 3 messages would be "a2 q3 a3": a reply without its question. The whole turn goes instead.
    assert contents(conv) == ["q3", "a3"]
    assert conv.messages[0].role == "user"


def test_trim_respects_the_character_budget() -> None:
    conv = conversation(turn("a" * 40, "b" * 40), turn("c" * 10, "d" * 10), turn("e", "f"))

    conv.trim(max_messages=100, max_chars=30)

    assert contents(conv) == ["c" * 10, "d" * 10, "e", "f"]
    assert sum(len(t) for t in contents(conv)) <= 30


def test_trim_keeps_the_last_turn_even_when_it_alone_is_too_long() -> None:
    conv = conversation(turn("q1", "a1"), turn("x" * 500, "y" * 500))

    conv.trim(max_messages=2, max_chars=100)

    assert contents(conv) == ["x" * 500, "y" * 500]


def test_trim_never_drops_a_streaming_reply() -> None:
    streaming = Message("assistant", status=Status.STREAMING, parts=["so far"])
    conv = Conversation(
        KEY, messages=[Message("user", "q1"), streaming, *turn("q2", "a2"), *turn("q3", "a3")]
    )

    conv.trim(max_messages=2, max_chars=10)

    assert conv.messages[1] is streaming
    assert len(conv.messages) == 6

    streaming.finish(Status.COMPLETE)
    conv.trim(max_messages=2, max_chars=10_000)
    assert contents(conv) == ["q3", "a3"]


def test_trim_counts_streaming_text_towards_the_budget() -> None:
    parts = ["z" * 50]
    conv = Conversation(
        KEY,
        messages=[
            *turn("q1", "a1"),
            Message("user", "q2"),
            Message("assistant", status=Status.STREAMING, parts=parts),
        ],
    )
    conv.trim(max_messages=100, max_chars=40)
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert conv.messages[1].parts is parts


@given(
    st.lists(
        st.tuples(st.text(max_size=30), st.text(max_size=30), st.sampled_from(list(Status))),
        min_size=1,
        max_size=12,
    ),
    st.integers(2, 12),
    st.integers(0, 200),
)
def test_trim_property(
    turns: list[tuple[str, str, Status]], max_messages: int, max_chars: int
) -> None:
    # Only the last reply may still be running, as in the engine.
    built = [
        turn(q, a, s if i == len(turns) - 1 else Status.COMPLETE)
        for i, (q, a, s) in enumerate(turns)
    ]
    conv = conversation(*built)
    before = list(conv.messages)

    dropped = conv.trim(max_messages, max_chars)

    after = conv.messages
    assert dropped == len(before) - len(after)
    assert after == before[dropped:]  # only a prefix goes
    assert dropped % 2 == 0  # whole turns
    assert after[0].role == "user"
    assert len(after) >= 2  # the last turn always stays
    within = len(after) <= max_messages and sum(len(m.text) for m in after) <= max_chars
    assert within or len(after) == 2
    if dropped:  # nothing was dropped that did not need to go
        previous = before[dropped - 2 :]
        assert len(previous) > max_messages or sum(len(m.text) for m in previous) > max_chars


# -- the store ------------------------------------------------------------------------------------


def key(n: int) -> ConversationKey:
    return ConversationKey("test", f"c{n}")


async def test_store_evicts_least_recently_created_past_the_bound() -> None:
    store = MemoryStore(max_conversations=3)
    for n in range(5):
        await store.get_or_create(key(n))

    assert len(store) == 3
    assert store.keys() == [key(2), key(3), key(4)]
    assert store.evicted == 2
    assert await store.get(key(0)) is None


async def test_store_evicts_least_recently_used_and_get_refreshes() -> None:
    store = MemoryStore(max_conversations=2)
    first = await store.get_or_create(key(1))
    await store.get_or_create(key(2))

    assert await store.get(key(1)) is first  # key(1) is now the most recently used

    await store.get_or_create(key(3))

    assert key(2) not in store
    assert key(1) in store
    assert key(3) in store


async def test_store_save_refreshes_and_get_or_create_returns_the_same_object() -> None:
    store = MemoryStore(max_conversations=2)
    one = await store.get_or_create(key(1))
    await store.get_or_create(key(2))
    await store.save(one)
    await store.get_or_create(key(3))

    assert store.keys() == [key(1), key(3)]
    assert await store.get_or_create(key(1)) is one


async def test_store_delete() -> None:
    store = MemoryStore()
    await store.get_or_create(KEY)
    await store.delete(KEY)
    await store.delete(KEY)  # twice is fine
    assert KEY not in store
    assert len(store) == 0


# -- what the LLM is sent -------------------------------------------------------------------------


def test_llm_history_sends_completed_turns() -> None:
    conv = conversation(turn("q1", "a1"), turn("q2", "a2"))
    assert conv.llm_history() == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]


def test_llm_history_skips_errors_and_empty_stops_keeps_what_a_stop_showed() -> None:
    errored = Message("assistant", "half an ans", status=Status.ERROR, error="boom")
    conv = conversation(
        turn("q1", "a1"),
        [Message("user", "q2"), errored],
        turn("q3", "what the user saw", Status.CANCELLED),
        turn("q4", "", Status.CANCELLED),
        turn("q5", "a5"),
    )

    assert conv.llm_history() == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q3"},
        {"role": "assistant", "content": "what the user saw"},
        {"role": "user", "content": "q5"},
        {"role": "assistant", "content": "a5"},
    ]


def test_llm_history_never_has_two_user_turns_in_a_row() -> None:
    conv = conversation(
        turn("q1", "", Status.ERROR),
        turn("q2", "", Status.CANCELLED),
        [Message("user", "q3"), Message("assistant", status=Status.STREAMING, parts=["x"])],
        [Message("user", "q4"), Message("assistant", status=Status.PENDING)],
    )
    assert conv.llm_history() == []


def test_llm_history_keeps_the_cancelled_text_of_a_finished_stream() -> None:
    parts = ["what ", "was ", "shown"]
    reply = Message("assistant", status=Status.STREAMING, parts=parts)
    conv = Conversation(KEY, messages=[Message("user", "q"), reply])
    reply.finish(Status.CANCELLED)
    assert conv.llm_history() == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "what was shown"},
    ]


def test_a_conversation_stored_before_replies_recorded_their_model_still_loads() -> None:
    old = (
        '{"key": ["test", "general"], "model": null, "system": null, "parent": null, '
        '"created_at": 1.0, "updated_at": 2.0, "messages": ['
        '{"role": "user", "content": "hi", "status": "complete", "created_at": 1.0, '
        '"error": null}, '
        '{"role": "assistant", "content": "hello", "status": "complete", "created_at": 1.5, '
        '"error": null}]}'
    )
    loaded = load_conversation(old, ConversationKey("test", "general"))
    assert loaded is not None
    reply = loaded.messages[1]
    assert (reply.content, reply.model, reply.unavailable) == ("hello", None, ())
    assert loaded.llm_history()[-1] == {"role": "assistant", "content": "hello"}
    again = Conversation.from_dict(loaded.to_dict())
    assert again.messages[1].model is None


# -- attachments ----------------------------------------------------------------------------------


def image(name: str, data: bytes = b"\x89PNG-bytes") -> MessageAttachment:
    return MessageAttachment(name, "image", "image/png", base64.b64encode(data).decode())


def with_files(text: str, *files: MessageAttachment, reply: str = "ok") -> list[Message]:
    return [Message("user", text, attachments=files), Message("assistant", reply)]


def test_history_parts_keep_images_of_the_last_n_turns_that_have_images() -> None:
    conv = conversation(
        with_files("first", image("a.png", b"A")),
        turn("no image here", "fine"),
        with_files("second", image("b.png", b"B")),
        with_files("", image("c.png", b"C"), image("d.png", b"D")),
    )
    turns = conv.llm_history_parts(max_images=2)
    assert [role for role, _ in turns] == ["user", "assistant"] * 4
    assert turns[0][1] == [("text", "first"), ("text", "[image: a.png]")]
    assert turns[2][1] == [("text", "no image here")]
    assert turns[4][1] == [("text", "second"), ("image", b"B", "image/png", "b.png")]
    assert turns[6][1] == [  # no text: the files alone
        ("image", b"C", "image/png", "c.png"),
        ("image", b"D", "image/png", "d.png"),
    ]
    assert turns[7][1] == [("text", "ok")]
    none = conv.llm_history_parts(max_images=0)
    assert none[6][1] == [("text", "[image: c.png]"), ("text", "[image: d.png]")]


def test_history_parts_carry_text_files_and_pdfs_and_follow_llm_history() -> None:
    block = "a.py\n```py\nx = 1\n```"
    pdf = MessageAttachment("p.pdf", "pdf", "application/pdf", base64.b64encode(b"%PDF-1").decode())
    conv = conversation(
        with_files("look", MessageAttachment("a.py", "text", "text/plain", block), pdf),
        [
            Message("user", "failed", attachments=(image("x.png"),)),
            Message("assistant", "", status=Status.ERROR, error="boom"),
        ],
        turn("q", "a"),
    )
    turns = conv.llm_history_parts(max_images=2)
    assert turns[0] == ("user", [("text", "look"), ("text", block), ("pdf", b"%PDF-1", "p.pdf")])
    assert [(role, parts[0]) for role, parts in turns] == [
        (m["role"], ("text", m["content"])) for m in conv.llm_history()
    ]


def test_drop_old_images_keeps_the_bytes_of_the_last_n_turns_only() -> None:
    conv = conversation(
        with_files("1", image("a.png")),
        with_files("2", image("b.png"), MessageAttachment("t.txt", "text", "text/plain", "t")),
        with_files("3", image("c.png")),
    )
    assert conv.drop_old_images(2) == 1
    assert conv.drop_old_images(2) == 0
    first = conv.messages[0].attachments[0]
    assert (first.name, first.kind, first.data) == ("a.png", "image", "")
    assert conv.llm_history_parts(max_images=5)[0][1] == [("text", "1"), ("text", "[image: a.png]")]
    assert conv.messages[2].attachments[1].data == "t"
    assert conv.drop_old_images(0) == 2


def test_an_image_costs_a_fixed_number_of_characters_and_a_pdf_its_size() -> None:
    big = image("huge.png", b"x" * 300_000)
    assert Message("user", "hi", attachments=(big,)).chars == 2 + IMAGE_CHARS
    pdf = MessageAttachment(
        "p.pdf", "pdf", "application/pdf", base64.b64encode(b"p" * 3000).decode()
    )
    assert pdf.chars == 3000
    text = MessageAttachment("t.txt", "text", "text/plain", "y" * 70)
    assert text.chars == 70


def test_trim_counts_images_at_their_fixed_cost() -> None:
    conv = conversation(
        with_files("q1", image("a.png")), with_files("q2", image("b.png")), turn("q3", "a3")
    )
    budget = 2 * IMAGE_CHARS + len("q1okq2okq3a3")
    assert conv.trim(max_messages=100, max_chars=budget) == 0
    assert conv.trim(max_messages=100, max_chars=budget - 1) == 2
    assert contents(conv) == ["q2", "ok", "q3", "a3"]


def test_attachments_round_trip_and_old_or_unknown_records_still_load() -> None:
    conv = conversation(
        with_files(
            "see",
            image("a.png"),
            MessageAttachment("t.md", "text", "text/markdown", "t.md\n```md\n# hi\n```"),
        )
    )
    data = conv.to_dict()
    assert "attachments" not in data["messages"][1]  # nothing written for a message without
    again = Conversation.from_dict(data)
    assert again.messages[0].attachments == conv.messages[0].attachments
    data["messages"][0]["attachments"].append({"name": "v.mp4", "kind": "video", "data": "x"})
    data["messages"][0]["attachments"].append("not a record")
    assert Conversation.from_dict(data).messages[0].attachments == conv.messages[0].attachments
    data["messages"][0]["attachments"] = "damaged"
    assert Conversation.from_dict(data).messages[0].attachments == ()


def test_a_damaged_base64_image_is_sent_as_its_name() -> None:
    broken = MessageAttachment("b.png", "image", "image/png", "!!not base64!!")
    conv = conversation(with_files("q", broken))
    assert conv.llm_history_parts(max_images=2)[0][1] == [("text", "q"), ("text", "[image: b.png]")]
    assert "!!not" not in repr(broken)
