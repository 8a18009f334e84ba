"""Slash commands: synced at start-up, answered through the core grammar, /ask streamed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bots.discord import invite_url
from bots.discord.bot import PERMISSIONS
from core.conversations import ConversationKey, Status
from core.split import split_message
from tests.fakes.discord_server import FakeInteraction
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.mcp_server import stdio_servers
from tests.fakes.wall_clock import ShiftedClock

from .conftest import BotStarter, World, wait_for

#: 20:48 UTC: daily counts reset in 3 h 12 min.
EVENING = datetime(2026, 12, 2, 20, 48, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 12, 3, tzinfo=UTC).timestamp()
COMMANDS = {"ask", "model", "models", "reset", "system", "stop", "status", "tools", "help"}
EPHEMERAL = 1 << 6


def said(prompt: str) -> str:
    return f"You said: {prompt}"


async def answer_of(world: World, interaction: FakeInteraction) -> tuple[dict[str, Any], str]:
    """(the interaction callback, the text finally shown) once the bot answered."""
    server = world.server

    def shown() -> bool:
        messages = server.interaction_messages(interaction)
        return bool(messages) and not messages[0].flags & (1 << 7)  # no longer "thinking"

    await wait_for(shown)
    return interaction.callbacks[0], server.interaction_messages(interaction)[0].content


async def test_commands_are_synced_globally_and_the_invite_url_printed(
    world: World, start_bot: BotStarter
) -> None:
    bot = await start_bot()
    assert {c["name"] for c in world.server.commands[None]} == COMMANDS
    model = next(c for c in world.server.commands[None] if c["name"] == "model")
    assert model["options"][0]["autocomplete"] is True
    assert model["options"][0]["required"] is False
    url = invite_url(world.server.application_id)
    assert url in bot.out.getvalue()  # type: ignore[attr-defined]
    assert f"permissions={PERMISSIONS.value}" in url
    assert "applications.commands" in url


async def test_commands_are_synced_to_the_configured_guilds(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot(discord_guild_ids=world.guild.id)
    assert None not in world.server.commands
    assert {c["name"] for c in world.server.commands[world.guild.id]} == COMMANDS
    # Guild commands resolve too.
    interaction = await world.server.slash(world.general, world.alice, "ask", prompt="hi")
    await answer_of(world, interaction)
    await wait_for(lambda: world.server.interaction_messages(interaction)[0].content == said("hi"))


async def test_model_autocomplete_then_switch_only_this_channel(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot()
    server = world.server
    choices = await server.autocomplete(world.general, world.alice, "model", "name", "BET")
    assert choices == [{"name": "local/beta", "value": "local/beta"}]
    everything = await server.autocomplete(world.general, world.alice, "model", "name", "")
    assert [c["value"] for c in everything] == ["local/alpha", "local/beta", "echo/echo"]

    switched = await server.slash(world.general, world.alice, "model", name="local/beta")
    callback, _ = await answer_of(world, switched)
    assert callback["type"] == 4
    assert callback["data"]["flags"] & EPHEMERAL  # settings answers only the asker
    assert callback["data"]["content"] == "Model for this conversation is now local/beta."

    here = await server.send_message(world.general, world.alice, "one")
    await wait_for(lambda: len(llm.requests) == 1)
    elsewhere = await server.send_message(world.random, world.alice, "two")
    await wait_for(lambda: len(llm.requests) == 2)
    models = {r.json["messages"][-1]["content"]: r.json["model"] for r in llm.requests}
    assert models == {"one": "beta", "two": "alpha"}
    await wait_for(lambda: bool(server.replies_to(here)) and bool(server.replies_to(elsewhere)))


async def test_an_unknown_model_is_refused_with_the_list(
    world: World, start_bot: BotStarter
) -> None:
    await start_bot()
    interaction = await world.server.slash(world.general, world.alice, "model", name="nope/x")
    callback, text = await answer_of(world, interaction)
    assert callback["data"]["flags"] & EPHEMERAL
    assert "local/alpha" in text


async def test_ask_defers_then_streams_the_answer(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    answer = "Deferred at once, then edited as the tokens arrive."
    llm.enqueue(Reply(deltas=[w + " " for w in answer.split()[:-1]] + ["arrive."], delay=0.03))
    await start_bot()
    server = world.server
    interaction = await server.slash(world.general, world.alice, "ask", prompt="how?")
    await wait_for(lambda: bool(server.interaction_messages(interaction)))
    assert interaction.callbacks[0]["type"] == 5  # deferred ("thinking..."), within 3 s
    await wait_for(lambda: server.interaction_messages(interaction)[0].content == answer)
    assert not server.interaction_messages(interaction)[0].ephemeral
    assert llm.requests[-1].json["messages"][-1]["content"] == "how?"


async def test_ask_continues_a_long_answer_in_followups(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    text = "\n".join(f"Line {i}: " + "words " * 20 for i in range(60))
    llm.enqueue(Reply(text=text))
    await start_bot()
    server = world.server
    interaction = await server.slash(world.general, world.alice, "ask", prompt="long")
    expected = split_message(text, 2000)
    await wait_for(
        lambda: [m.content for m in server.interaction_messages(interaction)] == expected
    )
    assert len(interaction.followup_ids) == len(expected) - 1


async def test_ask_refusal_is_ephemeral(world: World, start_bot: BotStarter) -> None:
    await start_bot(blocked_users=world.bob)
    interaction = await world.server.slash(world.general, world.bob, "ask", prompt="hi")
    callback, text = await answer_of(world, interaction)
    assert callback["type"] == 4
    assert callback["data"]["flags"] & EPHEMERAL
    assert text == "Sorry, you are not allowed to use this bot."


async def test_daily_token_limit_refuses_until_midnight_utc_and_status_shows_usage(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    """USER_DAILY_TOKENS through discord.py: the stand-in reports 7 input tokens and one
    output token per delta ("You said: one two": 4), so one reply uses the cap of 11."""
    clock = ShiftedClock(EVENING)
    bot = await start_bot(
        clock=clock, user_daily_tokens=11, model_prices='{"local/*": [10000, 5000]}'
    )
    server = world.server
    key = ConversationKey("discord", world.general)

    first = await server.send_message(world.general, world.alice, "one two")
    await wait_for(lambda: [m.content for m in server.replies_to(first)] == [said("one two")])
    reply = bot.engine.reply_for(key)
    assert reply is not None
    await reply  # ended: its tokens are counted
    sent = len(llm.requests)
    prompt = await server.send_message(world.general, world.alice, "more please")
    await wait_for(lambda: bool(server.replies_to(prompt)))
    assert server.replies_to(prompt)[0].content == (
        "You have used your 11 tokens for today (11); the limit resets in 3 h 12 min (00:00 UTC)."
    )
    assert len(llm.requests) == sent  # nothing reached the LLM

    status = await server.slash(world.general, world.alice, "status")
    _, text = await answer_of(world, status)
    assert text.splitlines()[1:] == [
        "Tokens here today (UTC): 11 (7 in, 4 out), about $0.09; in total: 11 (7 in, 4 out), "
        "about $0.09.",
        "Price of local/alpha: $10000 / $5000 per million input / output tokens (approximate).",
        "Your tokens today: 11 of 11; resets in 3 h 12 min (00:00 UTC).",
        "Feedback here: none yet.",
    ]

    clock.set_wall(MIDNIGHT)  # 00:00 UTC: a new day
    served = await server.send_message(world.general, world.alice, "one two")
    await wait_for(lambda: [m.content for m in server.replies_to(served)] == [said("one two")])
    assert len(llm.requests) == sent + 1


async def test_system_reset_help_models_status(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    bot = await start_bot()
    server = world.server
    key = ConversationKey("discord", world.general)

    async def run(command: str, **options: str) -> tuple[dict[str, Any], str]:
        interaction = await server.slash(world.general, world.alice, command, **options)
        return await answer_of(world, interaction)

    callback, text = await run("system", text="You are terse.")
    assert text == "System prompt set."
    prompt = await server.send_message(world.general, world.alice, "hi")
    await wait_for(lambda: bool(server.replies_to(prompt)))
    assert llm.requests[-1].json["messages"][0] == {"role": "system", "content": "You are terse."}
    await wait_for(lambda: server.replies_to(prompt)[0].content == said("hi"))

    _, text = await run("system")
    assert text == "System prompt: You are terse."
    _, text = await run("system", text="clear")
    assert text == "System prompt cleared."

    callback, text = await run("reset")
    assert text == "History cleared."
    assert (
        not callback["data"].get("flags", 0) & EPHEMERAL
    )  # the channel sees its history was cleared
    assert (await bot.engine.conversation(key)).messages == []

    for name, expect in [
        ("help", "Ask me anything"),
        ("models", "local/beta"),
        ("status", "Model: local/alpha"),
    ]:
        callback, text = await run(name)
        assert expect in text
        assert callback["data"]["flags"] & EPHEMERAL


async def test_stop_ends_a_running_reply(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    llm.enqueue(Reply(deltas=["Going ", "on ", "and ", "on"], hang_after=1))
    bot = await start_bot()
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "go")
    await wait_for(lambda: bool(server.replies_to(prompt)))
    _, text = await answer_of(world, await server.slash(world.general, world.alice, "stop"))
    assert text == "Stopped."
    await wait_for(lambda: server.replies_to(prompt)[0].content == "Going \n⏹ stopped")
    reply = bot.engine.reply_for(ConversationKey("discord", world.general))
    assert reply is not None
    assert reply.status is Status.CANCELLED


async def test_reset_stops_the_running_reply_and_drops_the_queued_one(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    llm.enqueue(Reply(deltas=["Going ", "on ", "and ", "on"], hang_after=1))
    bot = await start_bot()
    server = world.server
    key = ConversationKey("discord", world.general)
    running = await server.send_message(world.general, world.alice, "go")
    await wait_for(lambda: bool(server.replies_to(running)))
    queued = await server.send_message(world.general, world.alice, "and then this")
    await wait_for(lambda: len(bot.engine.replies(key)) == 2)
    first, second = bot.engine.replies(key)

    _, text = await answer_of(world, await server.slash(world.general, world.alice, "reset"))

    assert text == "History cleared."
    assert bot.engine.replies(key) == []
    assert (first.status, second.status) == (Status.CANCELLED, Status.CANCELLED)
    assert second.text == ""  # dropped: never sent to the model
    assert len(llm.requests) == 1
    assert (await bot.engine.conversation(key)).messages == []
    await wait_for(lambda: server.replies_to(running)[0].content == "Going \n⏹ stopped")
    await wait_for(lambda: [m.content for m in server.replies_to(queued)][:1] == ["⏹ stopped"])


async def test_model_changes_follow_the_admin_rule(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot(admin_user_ids="someone-else")
    server = world.server
    denied = await server.slash(world.general, world.alice, "model", name="local/beta")
    _, text = await answer_of(world, denied)
    assert text == "Only admins can change this here."
    # Manage Server makes a member an admin here.
    allowed = await server.slash(world.general, world.mod, "model", name="local/beta")
    _, text = await answer_of(world, allowed)
    assert text == "Model for this conversation is now local/beta."
    # The same rule for mention text.
    mention = await server.send_message(world.general, world.alice, "system: be rude")
    await wait_for(lambda: bool(server.replies_to(mention)))
    assert server.replies_to(mention)[0].content == "Only admins can change this here."


async def test_model_autocomplete_offers_a_model_only_the_providers_list_has(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    llm.models = ["alpha", "beta", "gpt-4.1-listed-only", "gpt-4o"]
    bot = await start_bot(llmconnect_allowed_models="")
    server = world.server
    # The first answer comes at once, from what is known; the list is asked for meanwhile.
    await server.autocomplete(world.general, world.alice, "model", "name", "gpt")
    await wait_for(lambda: not bot.engine.catalogue.refreshing())

    choices = await server.autocomplete(world.general, world.alice, "model", "name", "GPT-4")
    assert [c["value"] for c in choices] == ["local/gpt-4o", "local/gpt-4.1-listed-only"]
    anywhere = await server.autocomplete(world.general, world.alice, "model", "name", "listed")
    assert [c["value"] for c in anywhere] == ["local/gpt-4.1-listed-only"]

    switched = await server.slash(world.general, world.alice, "model", name="local/gpt-4o")
    _, text = await answer_of(world, switched)
    assert text == "Model for this conversation is now local/gpt-4o."
    models = await server.slash(world.general, world.alice, "models")
    _, listing = await answer_of(world, models)
    assert listing.endswith(
        "• local/alpha\n• local/beta\n• local/gpt-4.1-listed-only\n→ local/gpt-4o"
    )


async def test_tools_lists_the_servers_and_admins_enable_one(
    world: World, start_bot: BotStarter
) -> None:
    bot = await start_bot(mcp_servers=stdio_servers("files"), admin_user_ids=str(world.mod))
    await bot.engine.start()
    await bot.engine.mcp.wait_ready()
    server = world.server
    tools = next(c for c in server.commands[None] if c["name"] == "tools")
    assert [o["name"] for o in tools["options"]] == ["action", "server"]

    callback, text = await answer_of(world, await server.slash(world.general, world.alice, "tools"))
    assert text.splitlines()[:2] == ["Tool servers (✓ enabled here):", "• files — 6 tools"]
    assert callback["data"]["flags"] & EPHEMERAL
    denied = await server.slash(
        world.general, world.alice, "tools", action="enable", server="files"
    )
    assert (await answer_of(world, denied))[1] == "Only admins can change this here."
    enabled = await server.slash(world.general, world.mod, "tools", action="enable", server="files")
    assert (await answer_of(world, enabled))[1] == (
        "Tools of files enabled here. Tool servers here: files."
    )
    key = ConversationKey("discord", world.general)
    assert (await bot.engine.conversation(key)).tools == ("files",)
