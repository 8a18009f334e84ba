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
