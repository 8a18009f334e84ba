"""Mentions: the answer streams into a reply, per channel / thread / DM conversation."""

from __future__ import annotations

import asyncio

from core.clock import FakeClock
from core.conversations import ConversationKey, Status
from core.delivery import EMPTY_NOTE
from core.split import split_message
from tests.fakes.discord_server import StoredMessage
from tests.fakes.journal import Journal
from tests.fakes.llm_server import Fail, FakeLLMServer, Reply

from .conftest import BotStarter, World, wait_for

ANSWER = "Streaming works: one token at a time, edited into a single Discord message."


def tokens(text: str) -> list[str]:
    return [word + " " for word in text.split(" ")[:-1]] + [text.split(" ")[-1]]


def said(prompt: str) -> str:
    """What the fake LLM answers when nothing is scripted."""
    return f"You said: {prompt}"


async def answered(world: World, prompt: StoredMessage, *texts: str) -> list[StoredMessage]:
    """Wait until the bot's reply to ``prompt`` shows exactly ``texts``."""
    server = world.server
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == list(texts))
    return server.replies_to(prompt)


async def test_a_mention_streams_the_full_reply_into_a_reply_message(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    llm.enqueue(Reply(deltas=tokens(ANSWER), delay=0.03))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "explain streaming")
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == [ANSWER])

    reply = server.replies_to(prompt)[0]
    assert reply.reference is not None
    assert reply.reference["message_id"] == prompt.id
    assert reply.edits >= 1  # it streamed: posted early, then edited to the final text
    # The LLM got the text without the bot's mention.
    assert llm.requests[-1].json["messages"][-1] == {"role": "user", "content": "explain streaming"}
    # "typing..." showed before the first text.
    paths = [(r.method, r.path) for r in server.requests]
    typing = paths.index(("POST", f"/api/v10/channels/{world.general}/typing"))
    first_post = paths.index(("POST", f"/api/v10/channels/{world.general}/messages"))
    assert typing < first_post


async def test_the_conversation_is_the_channels(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot()
    server = world.server
    first = await server.send_message(world.general, world.alice, "my name is Alice")
    await answered(world, first, said("my name is Alice"))
    # bob, same channel: same conversation; the thread and another channel start afresh.
    second = await server.send_message(world.general, world.bob, "who am I?")
    await answered(world, second, said("who am I?"))
    history = llm.requests[-1].json["messages"]
    assert [m["content"] for m in history] == [
        "my name is Alice",
        said("my name is Alice"),
        "who am I?",
    ]
    for channel in (world.thread, world.random):
        other = await server.send_message(channel, world.bob, "fresh start")
        await answered(world, other, said("fresh start"))
        assert [m["content"] for m in llm.requests[-1].json["messages"]] == ["fresh start"]


async def test_a_thread_is_its_own_conversation_starting_from_its_channels_model(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    bot = await start_bot()
    server = world.server
    command = await server.send_message(world.general, world.mod, "model local/beta")
    await wait_for(lambda: bool(server.replies_to(command)))
    assert "local/beta" in server.replies_to(command)[0].content
    prompt = await server.send_message(world.thread, world.alice, "hello thread")
    await answered(world, prompt, said("hello thread"))
    assert llm.requests[-1].json["model"] == "beta"
    thread = await bot.engine.conversation(ConversationKey("discord", world.thread))
    assert thread.parent == ConversationKey("discord", world.general)


async def test_direct_messages_need_no_mention(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot()
    server = world.server
    dm = server.dm_channel(world.alice)
    prompt = await server.send_message(dm, world.alice, "hi in private", mention_bot=False)
    await answered(world, prompt, said("hi in private"))


async def test_messages_without_a_mention_and_the_bots_own_are_ignored(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot()
    server = world.server
    await server.send_message(world.general, world.alice, "just chatting", mention_bot=False)
    prompt = await server.send_message(world.general, world.alice, "now you")
    await answered(world, prompt, said("now you"))
    # One LLM call only: neither the unmentioned message nor the bot's own reply (which Discord
    # also dispatches as MESSAGE_CREATE) started a generation.
    assert len(llm.requests) == 1


async def test_mention_text_commands_use_the_core_grammar(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot()
    server = world.server
    command = await server.send_message(world.general, world.alice, "model local/beta")
    await answered(world, command, "Model for this conversation is now local/beta.")
    prompt = await server.send_message(world.general, world.alice, "which model?")
    await answered(world, prompt, said("which model?"))
    assert llm.requests[0].json["model"] == "beta"
    # A prompt that merely starts like a command stays a prompt.
    poem = await server.send_message(world.general, world.alice, "help me write a poem")
    await answered(world, poem, said("help me write a poem"))


async def test_a_long_reply_continues_in_further_messages(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 12 for i in range(14)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 4000
    llm.enqueue(Reply(text=text))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "write a lot")
    expected = split_message(text, 2000)
    await answered(world, prompt, *expected)
    assert all(len(m.content) <= 2000 for m in server.replies_to(prompt))
    assert len(expected) >= 3


async def test_a_deleted_reply_stops_the_generation_quietly(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    llm.enqueue(Reply(deltas=["Once ", "upon ", "a ", "time", " forever"], hang_after=2))
    bot = await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "tell me a story")
    await wait_for(lambda: bool(server.replies_to(prompt)))
    reply_message = server.replies_to(prompt)[0]
    await server.delete_message(reply_message.id)
    await wait_for(lambda: llm.disconnects == 1)  # the LLM stream was closed
    await wait_for(lambda: bot.streaming == 0)
    key = ConversationKey("discord", world.general)
    assert bot.engine.reply_for(key) is not None
    assert bot.engine.reply_for(key).status is Status.CANCELLED
    # Nothing more was posted: no "stopped" note, no error.
    assert [m.id for m in server.bot_messages(world.general)] == [reply_message.id]


async def test_an_llm_error_is_shown_in_the_reply(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    llm.enqueue(Reply(deltas=["Half ", "an ", "answer"], error_after=2), Fail(401))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "try")
    await wait_for(
        lambda: bool(server.replies_to(prompt)) and "⚠️" in server.replies_to(prompt)[0].content
    )
    content = server.replies_to(prompt)[0].content
    assert content.startswith("Half an ")
    assert "▌" not in content
    prompt2 = await server.send_message(world.general, world.alice, "again")
    await wait_for(
        lambda: bool(server.replies_to(prompt2)) and "⚠️" in server.replies_to(prompt2)[0].content
    )
    assert "API key" in server.replies_to(prompt2)[0].content


async def test_an_empty_answer_says_so(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    llm.enqueue(Reply(text=""))
    await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "say nothing")
    await answered(world, prompt, EMPTY_NOTE)


async def test_shutdown_ends_each_reply_on_its_final_text(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    llm.enqueue(Reply(deltas=["Still ", "thinking ", "about ", "it"], hang_after=2))
    bot = await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "a hard one")
    await wait_for(lambda: bool(server.replies_to(prompt)))
    await bot.close()
    # No streaming marker is left behind: the reply says it was stopped.
    assert [m.content for m in server.replies_to(prompt)] == ["Still thinking \n⏹ stopped"]
    # The stand-in notices the closed stream on its side a moment later (the final edit no longer
    # waits out the edit interval, so the close can return first).
    await wait_for(lambda: llm.disconnects == 1)


async def test_a_fallback_answers_when_the_model_is_unavailable_and_the_note_says_so(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot(llmconnect_fallback_models="local/beta")
    llm.enqueue(Fail(503))
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "anyone there?")
    await answered(
        world,
        prompt,
        said("anyone there?") + "\nanswered by local/beta — local/alpha was unavailable",
    )
    chats = [r.json["model"] for r in llm.requests if r.method == "POST"]
    assert chats == ["alpha", "beta"]


# ------------------------------------------------------------ follow-ups without a mention


async def test_a_thread_follow_up_without_a_mention_is_answered(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot()
    server = world.server
    first = await server.send_message(world.thread, world.alice, "question")
    await answered(world, first, said("question"))

    follow_up = await server.send_message(world.thread, world.bob, "and then?", mention_bot=False)

    await answered(world, follow_up, said("and then?"))
    assert [m["content"] for m in llm.requests[-1].json["messages"]] == [
        "question",
        said("question"),
        "and then?",
    ]


async def test_threads_the_bot_did_not_answer_and_plain_channels_need_a_mention(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    other = server.add_thread(world.guild, world.random, "another thread")
    await start_bot()
    first = await server.send_message(world.thread, world.alice, "question")
    await answered(world, first, said("question"))
    await server.send_message(other, world.alice, "not for the bot", mention_bot=False)
    await server.send_message(world.general, world.alice, "nor this", mention_bot=False)
    last = await server.send_message(other, world.alice, "now you")
    await answered(world, last, said("now you"))
    assert len(llm.requests) == 2
    assert server.bot_messages(world.general) == []


async def test_follow_ups_off_a_thread_needs_a_mention(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot(follow_up_in_threads=False)
    server = world.server
    first = await server.send_message(world.thread, world.alice, "question")
    await answered(world, first, said("question"))
    await server.send_message(world.thread, world.alice, "ignored", mention_bot=False)
    last = await server.send_message(world.thread, world.alice, "mentioned")
    await answered(world, last, said("mentioned"))
    assert len(llm.requests) == 2


async def test_every_message_in_an_auto_reply_channel_is_a_prompt(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot(auto_reply_channels=world.random)
    server = world.server
    prompt = await server.send_message(world.random, world.alice, "no mention", mention_bot=False)
    await answered(world, prompt, said("no mention"))
    await server.send_message(world.general, world.alice, "not here", mention_bot=False)
    last = await server.send_message(world.general, world.alice, "mentioned")
    await answered(world, last, said("mentioned"))
    assert len(llm.requests) == 2


async def test_other_bots_only_when_allowed_and_never_its_own(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    robot = server.add_member(world.guild, "robot", bot=True)
    bot = await start_bot(auto_reply_channels=world.random)
    await server.send_message(world.random, robot, "beep", mention_bot=False)
    await server.send_message(world.random, robot, "beep at you")
    last = await server.send_message(world.random, world.alice, "a person")
    await answered(world, last, said("a person"))
    assert len(llm.requests) == 1  # the bot's own answer (dispatched too) started nothing
    await bot.close()

    await start_bot(auto_reply_channels=world.random, allow_bots=True)
    beep = await server.send_message(world.random, robot, "beep", mention_bot=False)
    await answered(world, beep, said("beep"))
    assert len(llm.requests) == 2


async def test_thread_per_question_answers_in_a_new_thread_named_after_it(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    bot = await start_bot(discord_thread_per_question=True)
    server = world.server
    question = "What is the tallest mountain on Earth, and how tall is it? " * 3
    prompt = await server.send_message(world.general, world.alice, question)

    await wait_for(lambda: prompt.id in world.guild.threads)
    thread = world.guild.threads[prompt.id]
    assert thread["name"] == " ".join(question.split())[:100]
    assert thread["parent_id"] == world.general
    await wait_for(
        lambda: [m.content for m in server.bot_messages(prompt.id)] == [said(question.strip())]
    )
    assert server.bot_messages(world.general) == []
    conversation = await bot.engine.conversation(ConversationKey("discord", prompt.id))
    assert conversation.parent == ConversationKey("discord", world.general)

    # The thread is its own conversation, and follow-ups there need no mention.
    follow_up = await server.send_message(
        prompt.id, world.bob, "and the second?", mention_bot=False
    )
    await wait_for(lambda: len(server.bot_messages(prompt.id)) == 2)
    assert [m["content"] for m in llm.requests[-1].json["messages"]] == [
        question.strip(),
        said(question.strip()),
        "and the second?",
    ]
    assert follow_up.channel_id == prompt.id
    # The channel's own conversation is untouched.
    channel = await bot.engine.conversation(ConversationKey("discord", world.general))
    assert channel.messages == []


async def test_the_per_user_rate_limit_applies_to_follow_ups(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot(user_rate_limit=1, auto_reply_channels=world.random)
    server = world.server
    first = await server.send_message(world.thread, world.alice, "question")
    await answered(world, first, said("question"))
    follow_up = await server.send_message(world.thread, world.alice, "more", mention_bot=False)
    auto = await server.send_message(world.random, world.alice, "auto", mention_bot=False)
    for message in (follow_up, auto):
        await wait_for(lambda m=message: bool(server.replies_to(m)))
        assert "sending messages too fast" in server.replies_to(message)[0].content
    assert len(llm.requests) == 1


async def test_thread_per_question_answers_in_the_channel_when_discord_refuses_the_thread(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    world.server.threads_forbidden = True
    await start_bot(discord_thread_per_question=True)
    prompt = await world.server.send_message(world.general, world.alice, "no threads here")
    await answered(world, prompt, said("no threads here"))
    assert prompt.id not in world.guild.threads


async def test_typing_reaches_discord_before_the_llm_is_asked(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    # Discord is slow to take the typing indicator (held at the stand-in's door); the bot runs on
    # a fake clock, so the engine's HEARD_WAIT never runs out while it is held. The order is read
    # off one journal both stand-ins write on each request's arrival.
    server = world.server
    journal = server.journal = llm.journal = Journal()
    typing_path = f"/api/v10/channels/{world.general}/typing"
    gate = server.hold[typing_path] = asyncio.Event()
    clock = FakeClock()
    bot = await start_bot(clock=clock)
    prompt = await server.send_message(world.general, world.alice, "are you there")
    await wait_for(lambda: server.held == 1)
    await wait_for(lambda: any(r.status is Status.STREAMING for r in bot.engine._last.values()))
    await asyncio.sleep(0.05)  # room for a request that should not come (it would be recorded)
    try:
        assert llm.requests == []
    finally:
        gate.set()

    await wait_for(lambda: bool(llm.requests))
    assert journal.first("discord", f"POST {typing_path}") < journal.first("llm")
    for _ in range(200):
        if [m.content for m in server.replies_to(prompt)] == [said("are you there")]:
            break
        await clock.advance(0.5)
        await asyncio.sleep(0.01)
    assert [m.content for m in server.replies_to(prompt)] == [said("are you there")]
