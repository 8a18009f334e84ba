"""Reply buttons on Discord: Stop while streaming, then Regenerate and 👍/👎, clicked through the
stand-in's gateway (INTERACTION_CREATE type 3) into the real bot."""

from __future__ import annotations

from pathlib import Path

from bots.discord import NO_MENTIONS
from core.controls import Action, parse_action_id
from core.delivery import STOPPED_NOTE
from core.engine import NOT_LATEST, ONLY_ASKER
from tests.fakes.discord_server import FakeInteraction, StoredMessage
from tests.fakes.llm_server import FakeLLMServer, Reply

from .conftest import BotStarter, World, wait_for

EPHEMERAL = 1 << 6


def said(prompt: str) -> str:
    return f"You said: {prompt}"


def button(message: StoredMessage, action: Action) -> str:
    """The custom id of ``message``'s button for ``action``."""
    for custom_id in message.custom_ids:
        pressed = parse_action_id(custom_id)
        if pressed is not None and pressed.action is action:
            return custom_id
    raise AssertionError(f"no {action} button on {message.custom_ids}")


def actions(message: StoredMessage) -> list[Action]:
    return [parse_action_id(c).action for c in message.custom_ids]  # type: ignore[union-attr]


async def answered(world: World, prompt: StoredMessage, text: str) -> StoredMessage:
    """The bot's reply to ``prompt`` once it shows ``text`` and its final buttons."""
    server = world.server

    def done() -> bool:
        replies = server.replies_to(prompt)
        return [m.content for m in replies] == [text] and Action.STOP not in actions(replies[0])

    await wait_for(done)
    return server.replies_to(prompt)[0]


async def ephemeral_answer(interaction: FakeInteraction) -> str:
    await wait_for(lambda: interaction.responded)
    [callback] = interaction.callbacks
    assert callback["type"] == 4
    assert callback["data"]["flags"] & EPHEMERAL
    assert callback["data"]["allowed_mentions"]["parse"] == []
    return str(callback["data"]["content"])


async def test_the_streaming_message_carries_stop_and_the_asker_stops_it(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    llm.enqueue(Reply(deltas=["Once ", "upon ", "a ", "time"], hang_after=2))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "tell me a story")
    await wait_for(lambda: bool(server.replies_to(prompt)) and llm.open_streams == 1)
    message = server.replies_to(prompt)[0]
    await wait_for(lambda: message.content.startswith("Once upon"))
    assert actions(message) == [Action.STOP]
    stop_button = message.buttons[0]
    assert (stop_button["label"], stop_button["style"]) == ("Stop", 4)  # red

    click = await server.click(message, world.alice, button(message, Action.STOP))

    await wait_for(lambda: message.content == f"Once upon \n{STOPPED_NOTE}")
    await wait_for(lambda: llm.disconnects == 1)  # the LLM's stream was closed
    assert llm.open_streams == 0
    assert actions(message) == [Action.REGENERATE]  # stopped: no feedback on a cut answer
    assert click.callbacks == [{"type": 6}]  # acknowledged, nothing else said
    for payload in message.payloads:
        assert payload["allowed_mentions"] == NO_MENTIONS
    assert [m.id for m in server.bot_messages(world.general)] == [message.id]


async def test_regenerate_asks_again_without_the_first_answer_into_the_same_message(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    llm.enqueue(Reply("first answer"), Reply("second answer"))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "write a haiku")
    message = await answered(world, prompt, "first answer")
    assert actions(message) == [Action.REGENERATE, Action.UP, Action.DOWN]
    first_ids = message.custom_ids

    click = await server.click(message, world.alice, button(message, Action.REGENERATE))

    await wait_for(
        lambda: message.content == "second answer" and Action.STOP not in actions(message)
    )
    assert [m["content"] for m in llm.requests[-1].json["messages"]] == ["write a haiku"]
    assert len(llm.requests) == 2
    assert click.callbacks == [{"type": 6}]
    # The new reply's buttons name the new reply; no other message was posted.
    assert set(message.custom_ids).isdisjoint(first_ids)
    assert actions(message) == [Action.REGENERATE, Action.UP, Action.DOWN]
    assert [m.id for m in server.bot_messages(world.general)] == [message.id]
    # The streamed edits showed Stop while the new answer was written.
    assert any(
        [b["custom_id"] for row in p.get("components", []) for b in row["components"]]
        and Action.STOP.value in p["components"][0]["components"][0]["custom_id"]
        for p in message.payloads[2:]
    )
    # The next prompt's history holds the new answer only.
    follow = await server.send_message(world.general, world.alice, "another")
    await answered(world, follow, said("another"))
    assert [m["content"] for m in llm.requests[-1].json["messages"]] == [
        "write a haiku",
        "second answer",
        "another",
    ]


async def test_a_strangers_click_is_refused_ephemerally_and_changes_nothing(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "hello")
    message = await answered(world, prompt, said("hello"))
    edits = message.edits

    click = await server.click(message, world.bob, button(message, Action.REGENERATE))

    assert await ephemeral_answer(click) == ONLY_ASKER
    assert len(llm.requests) == 1
    assert message.edits == edits
    assert message.content == said("hello")


async def test_a_moderator_may_stop_anyones_reply(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    llm.enqueue(Reply(deltas=["a ", "b ", "c"], hang_after=1))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "go")
    await wait_for(lambda: bool(server.replies_to(prompt)) and llm.open_streams == 1)
    message = server.replies_to(prompt)[0]
    await server.click(message, world.mod, button(message, Action.STOP))  # Manage Server
    await wait_for(lambda: message.content.endswith(STOPPED_NOTE))


async def test_feedback_from_anyone_is_counted_per_model_in_status(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "hello")
    message = await answered(world, prompt, said("hello"))

    up = await server.click(message, world.bob, button(message, Action.UP))
    assert await ephemeral_answer(up) == "Thanks for the feedback: 👍."
    down = await server.click(message, world.alice, button(message, Action.DOWN))
    assert await ephemeral_answer(down) == "Thanks for the feedback: 👎."
    changed = await server.click(message, world.bob, button(message, Action.DOWN))
    assert await ephemeral_answer(changed) == "Thanks for the feedback: 👎."

    status = await server.slash(world.general, world.alice, "status")
    await wait_for(lambda: status.responded)
    assert status.callbacks[0]["data"]["content"].endswith("Feedback here: local/alpha 👍 0 👎 2.")
    assert message.content == said("hello")  # a vote edits nothing


async def test_regenerate_on_an_older_reply_says_only_the_latest(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot()
    server = world.server
    first = await server.send_message(world.general, world.alice, "one")
    old = await answered(world, first, said("one"))
    second = await server.send_message(world.general, world.alice, "two")
    await answered(world, second, said("two"))

    click = await server.click(old, world.alice, button(old, Action.REGENERATE))

    assert await ephemeral_answer(click) == NOT_LATEST
    assert len(llm.requests) == 2
    # Its feedback buttons still work.
    vote = await server.click(old, world.alice, button(old, Action.UP))
    assert await ephemeral_answer(vote) == "Thanks for the feedback: 👍."


async def test_buttons_work_after_a_restart(
    world: World, llm: FakeLLMServer, start_bot: BotStarter, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'conversations.db'}"
    first = await start_bot(store_url=store)
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "remember")
    message = await answered(world, prompt, said("remember"))
    await first.close()
    await first.engine.aclose()

    await start_bot(store_url=store)  # a new process: no view or reply in memory
    llm.enqueue(Reply("again, after the restart"))
    await server.click(message, world.alice, button(message, Action.REGENERATE))
    await wait_for(lambda: message.content == "again, after the restart")
    assert [m["content"] for m in llm.requests[-1].json["messages"]] == ["remember"]


async def test_without_reply_buttons_messages_carry_none(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot(reply_buttons=False)
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "plain")
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == [said("plain")])
    message = server.replies_to(prompt)[0]
    assert message.components == []
    assert all("components" not in p for p in message.payloads)


async def test_ask_answers_carry_the_buttons_too(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot()
    server = world.server
    asked = await server.slash(world.general, world.alice, "ask", prompt="hi")
    await wait_for(
        lambda: (
            bool(server.interaction_messages(asked))
            and server.interaction_messages(asked)[0].content == said("hi")
            and Action.UP in actions(server.interaction_messages(asked)[0])
        )
    )
    message = server.interaction_messages(asked)[0]
    llm.enqueue(Reply("regenerated"))
    await server.click(message, world.alice, button(message, Action.REGENERATE))
    await wait_for(lambda: message.content == "regenerated")


async def test_a_long_answer_has_its_buttons_on_its_last_message_only(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    long = " ".join(f"word{i}" for i in range(450))  # past 2,000 characters: two messages
    llm.enqueue(Reply(long))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "long one")
    await wait_for(
        lambda: (
            len(server.replies_to(prompt)) == 2
            and actions(server.replies_to(prompt)[-1])
            == [Action.REGENERATE, Action.UP, Action.DOWN]
        )
    )
    first, last = server.replies_to(prompt)
    assert first.components == []
    assert " ".join([first.content, last.content]).split() == long.split()


# -- regenerating a reply that took several messages ---------------------------------------


def words(tag: str, count: int) -> str:
    """``count`` words like ``tag17``: 450 make two Discord messages, 700 three."""
    return " ".join(f"{tag}{i}" for i in range(count))


def shown(world: World) -> list[StoredMessage]:
    """The bot's messages a user sees in #general now (deleted ones gone), oldest first."""
    return [m for m in world.server.bot_messages(world.general) if not m.deleted]


async def long_answer(world: World, prompt: StoredMessage, parts: int) -> list[StoredMessage]:
    """The reply to ``prompt`` once it spans ``parts`` messages and shows its final buttons."""
    server = world.server

    def done() -> bool:
        replies = server.replies_to(prompt)
        return len(replies) == parts and Action.UP in actions(replies[-1])

    await wait_for(done)
    return server.replies_to(prompt)


async def regenerated(world: World, new_text: str, parts: int) -> list[StoredMessage]:
    """#general's visible bot messages once they are ``parts`` showing ``new_text`` with the
    final buttons on the last."""

    def done() -> bool:
        messages = shown(world)
        return (
            len(messages) == parts
            and " ".join(m.content for m in messages).split() == new_text.split()
            and Action.UP in actions(messages[-1])
        )

    await wait_for(done, tries=3000)
    return shown(world)


def assert_only_the_new_answer(world: World, new_text: str, old_tag: str) -> None:
    messages = shown(world)
    assert " ".join(m.content for m in messages).split() == new_text.split()
    assert not any(old_tag in m.content for m in messages)
    for message in messages[:-1]:
        assert message.components == []  # buttons on the last message only
    assert actions(messages[-1]) == [Action.REGENERATE, Action.UP, Action.DOWN]
    for message in world.server.bot_messages(world.general):
        for payload in message.payloads:
            assert payload["allowed_mentions"] == NO_MENTIONS


async def test_a_two_part_answer_regenerated_into_one_message_leaves_no_old_part(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    old, new = words("old", 450), "a short new answer"
    llm.enqueue(Reply(old), Reply(new))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "explain it")
    first, last = await long_answer(world, prompt, 2)

    click = await server.click(last, world.alice, button(last, Action.REGENERATE))

    [message] = await regenerated(world, new, 1)
    assert_only_the_new_answer(world, new, "old")
    # The new answer is where the old one began (still a reply to the question); the clicked
    # message, not needed any more, was deleted by the bot, which goes on working.
    assert message.id == first.id
    assert [m.id for m in server.replies_to(prompt) if not m.deleted] == [first.id]
    assert last.deleted
    assert click.callbacks == [{"type": 6}]
    assert [m["content"] for m in llm.requests[-1].json["messages"]] == ["explain it"]
    follow = await server.send_message(world.general, world.alice, "thanks")
    await answered(world, follow, said("thanks"))
    assert [m["content"] for m in llm.requests[-1].json["messages"]] == [
        "explain it",
        new,
        "thanks",
    ]


async def test_a_one_part_answer_regenerated_into_three_messages(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    new = words("new", 700)
    llm.enqueue(Reply("old short answer"), Reply(new))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "go long")
    message = await answered(world, prompt, "old short answer")

    await server.click(message, world.alice, button(message, Action.REGENERATE))

    messages = await regenerated(world, new, 3)
    assert_only_the_new_answer(world, new, "old")
    # The clicked message holds the start; the rest follows it.
    assert messages[0].id == message.id
    assert [m.id for m in server.replies_to(prompt)] == [m.id for m in messages]
    assert not any(m.deleted for m in server.bot_messages(world.general))


async def test_a_three_part_answer_regenerated_into_three_after_a_restart(
    world: World, llm: FakeLLMServer, start_bot: BotStarter, tmp_path: Path
) -> None:
    # The parts of the old answer are known from the store, not from the process that
    # posted them.
    store = f"sqlite:///{tmp_path / 'conversations.db'}"
    old, new = words("old", 700), words("new", 690)
    llm.enqueue(Reply(old))
    first_bot = await start_bot(store_url=store)
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "three parts please")
    before = await long_answer(world, prompt, 3)
    await first_bot.close()
    await first_bot.engine.aclose()

    await start_bot(store_url=store)
    llm.enqueue(Reply(new))
    await server.click(before[-1], world.alice, button(before[-1], Action.REGENERATE))

    after = await regenerated(world, new, 3)
    assert_only_the_new_answer(world, new, "old")
    assert [m.id for m in after] == [m.id for m in before]  # edited in place, in order
    assert len(server.bot_messages(world.general)) == 3  # nothing posted, nothing deleted


async def test_regenerating_a_long_answer_again_uses_the_messages_of_the_last_regeneration(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    first_new, second_new = words("mid", 700), words("fin", 450)
    llm.enqueue(Reply("short"), Reply(first_new), Reply(second_new))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "again and again")
    message = await answered(world, prompt, "short")
    await server.click(message, world.alice, button(message, Action.REGENERATE))
    three = await regenerated(world, first_new, 3)

    await server.click(three[-1], world.alice, button(three[-1], Action.REGENERATE))

    two = await regenerated(world, second_new, 2)
    assert_only_the_new_answer(world, second_new, "mid")
    assert [m.id for m in two] == [m.id for m in three[:2]]
    assert three[-1].deleted


async def test_an_old_part_deleted_by_someone_is_skipped_by_the_regeneration(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    old, new = words("old", 700), words("new", 450)
    llm.enqueue(Reply(old), Reply(new))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "three parts")
    first, middle, last = await long_answer(world, prompt, 3)
    await server.delete_message(first.id)  # a moderator removed the first part

    await server.click(last, world.alice, button(last, Action.REGENERATE))

    after = await regenerated(world, new, 2)
    assert_only_the_new_answer(world, new, "old")
    assert [m.id for m in after] == [middle.id, last.id]


async def test_a_long_ask_answer_is_regenerated_into_its_own_messages(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    # /ask's answer is the interaction's response and a follow-up: kept by their real ids, so
    # the regeneration edits them through the channel (the interaction token expires).
    old, new = words("old", 450), "a short new answer"
    llm.enqueue(Reply(old), Reply(new))
    await start_bot()
    server = world.server
    asked = await server.slash(world.general, world.alice, "ask", prompt="long please")

    def done() -> bool:
        messages = server.interaction_messages(asked)
        return len(messages) == 2 and Action.UP in actions(messages[-1])

    await wait_for(done)
    original, followup = server.interaction_messages(asked)

    await server.click(followup, world.alice, button(followup, Action.REGENERATE))

    await wait_for(lambda: original.content == new and Action.UP in actions(original))
    await wait_for(lambda: followup.deleted)
    assert [m.content for m in shown(world)] == [new]
