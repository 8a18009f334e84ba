"""Slash commands, POSTed signed and form-encoded to the running bot, answered via response_url."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bots.slack.commands import SLASH_COMMANDS, slash_command
from core.commands import Command
from core.conversations import Status
from tests.fakes.llm_server import Fail, FakeLLMServer, Reply
from tests.fakes.mcp_server import stdio_servers
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.wall_clock import ShiftedClock

from .conftest import CHANNEL, DM, OTHER_CHANNEL, USER, BotMaker, wait_for


def chats(llm: FakeLLMServer) -> list[dict]:
    return [r.json for r in llm.requests if r.path.endswith("/chat/completions")]


async def test_daily_token_limit_refuses_until_midnight_utc_and_status_shows_usage(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    """CHANNEL_DAILY_TOKENS through bolt: the stand-in reports 7 input tokens and one output
    token per delta ("You said: one two": 4), so one reply uses the cap of 11."""
    clock = ShiftedClock(datetime(2026, 12, 2, 20, 48, tzinfo=UTC).timestamp())
    running = await make_bot(
        clock=clock, channel_daily_tokens=11, user_daily_tokens=1000, llm_max_retries=0
    )
    await running.slack.mention("one two")
    await wait_for(lambda: slack_api.texts(CHANNEL) == ["You said: one two"])
    reply = running.engine.reply_for(running.bot.threads.channel_key(CHANNEL))
    assert reply is not None
    await reply  # ended: its tokens are counted

    await running.slack.mention("more please", user="U0OTHER")  # the channel's cap: anyone
    await wait_for(lambda: len(slack_api.ephemeral) == 1)
    assert slack_api.ephemeral[0]["text"] == (
        "This conversation has used its 11 tokens for today (11); the limit resets in "
        "3 h 12 min (00:00 UTC)."
    )
    assert len(chats(llm)) == 1  # nothing reached the LLM

    rid, _, _ = await running.slack.command("/llm", "status")
    [status] = await running.slack.responses(rid)
    assert status["text"].splitlines()[1:] == [
        "Tokens here today (UTC): 11 (7 in, 4 out); in total: 11 (7 in, 4 out).",
        "Price of local/alpha: not known (MODEL_PRICES sets it).",
        "Daily limit here: 11 of 11 tokens used; resets in 3 h 12 min (00:00 UTC).",
        "Your tokens today: 11 of 1,000; resets in 3 h 12 min (00:00 UTC).",
        "Feedback here: none yet.",
    ]
    assert slack_api.bot_token not in status["text"]

    clock.set_wall(datetime(2026, 12, 3, tzinfo=UTC).timestamp())  # 00:00 UTC: a new day
    await running.slack.mention("one two")
    await wait_for(lambda: len(chats(llm)) == 2)
    await wait_for(lambda: slack_api.texts(CHANNEL)[-1] == "You said: one two")


async def test_ask_acks_at_once_then_shows_the_question_and_streams_the_answer(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    llm.enqueue(Reply(text="A *haiku* needs 17 syllables & a season word."))

    _, status, body = await running.slack.command("/ask", "How long is a haiku?\nBe exact.")

    assert (status, body) == (200, "")  # the ack: nothing shown, nothing waited for
    expected = [
        f"*<@{USER}> asked:*\n> How long is a haiku?\n> Be exact.",
        "A _haiku_ needs 17 syllables &amp; a season word.",
    ]
    await wait_for(lambda: slack_api.texts(CHANNEL) == expected)
    assert chats(llm)[0]["messages"] == [
        {"role": "user", "content": "How long is a haiku?\nBe exact."}
    ]


async def test_ask_in_a_dm_streams_natively_under_the_question(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot()
    await running.slack.command("/ask", "hi there", channel=DM)

    await wait_for(lambda: len(slack_api.texts(DM)) == 1)
    question = slack_api.thread(DM)[0]
    await wait_for(lambda: slack_api.texts(DM, question.ts) == ["You said: hi there"])
    assert slack_api.thread(DM, question.ts)[0].streamed


async def test_model_switches_the_model_for_that_channel_only(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()

    rid, status, _ = await running.slack.command("/model", "local/beta")
    assert status == 200
    [answer] = await running.slack.responses(rid)
    assert answer == {
        "text": "Model for this conversation is now local/beta.",
        "response_type": "ephemeral",
    }

    await running.slack.command("/ask", "here")
    await wait_for(lambda: len(chats(llm)) == 1)
    await running.slack.command("/ask", "there", channel=OTHER_CHANNEL)
    await wait_for(lambda: len(chats(llm)) == 2)
    by_prompt = {c["messages"][-1]["content"]: c["model"] for c in chats(llm)}
    assert by_prompt == {"here": "beta", "there": "alpha"}

    rid, _, _ = await running.slack.command("/model")
    [shown] = await running.slack.responses(rid)
    assert shown["text"].startswith("Model here: local/beta.")


async def test_unknown_model_is_refused_listing_the_available_ones(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot(llmconnect_allowed_models="local/alpha,local/beta")
    rid, _, _ = await running.slack.command("/model", "nosuch/model")
    [answer] = await running.slack.responses(rid)
    assert "local/alpha, local/beta" in answer["text"]
    assert answer["response_type"] == "ephemeral"

    rid, _, _ = await running.slack.command("/models")
    [listing] = await running.slack.responses(rid)
    assert listing["text"] == "Available models:\n→ local/alpha\n• local/beta"


async def test_system_prompt_set_shown_and_cleared(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    rid, _, _ = await running.slack.command("/system", "You answer in French.")
    assert (await running.slack.responses(rid))[0]["text"] == "System prompt set."

    await running.slack.command("/ask", "hello")
    await wait_for(lambda: len(chats(llm)) == 1)
    assert chats(llm)[0]["messages"][0] == {"role": "system", "content": "You answer in French."}

    rid, _, _ = await running.slack.command("/system")
    assert (await running.slack.responses(rid))[0]["text"] == "System prompt: You answer in French."
    rid, _, _ = await running.slack.command("/system", "clear")
    assert (await running.slack.responses(rid))[0]["text"] == "System prompt cleared."
    await running.slack.command("/ask", "again")
    await wait_for(lambda: len(chats(llm)) == 2)
    assert chats(llm)[1]["messages"][0]["role"] == "user"


async def test_reset_clears_the_history_in_the_channel(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    await running.slack.command("/ask", "remember me")
    await wait_for(lambda: len(slack_api.texts(CHANNEL)) == 2)
    await wait_for(lambda: not running.engine.is_busy(running.bot.threads.channel_key(CHANNEL)))

    rid, _, _ = await running.slack.command("/reset")
    assert (await running.slack.responses(rid))[0] == {
        "text": "History cleared.",
        "response_type": "in_channel",
    }
    await running.slack.command("/ask", "who am I?")
    await wait_for(lambda: len(chats(llm)) == 2)
    assert chats(llm)[1]["messages"] == [{"role": "user", "content": "who am I?"}]


async def test_reset_stops_the_running_answer_and_drops_the_queued_one(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    key = running.bot.threads.channel_key(CHANNEL)
    llm.enqueue(Reply(text="one two three four five", hang_after=2))
    await running.slack.command("/ask", "count slowly")
    await wait_for(lambda: any(t.startswith("one two") for t in slack_api.texts(CHANNEL)))
    await running.slack.command("/ask", "and then this")
    await wait_for(lambda: len(running.engine.replies(key)) == 2)
    first, second = running.engine.replies(key)

    rid, _, _ = await running.slack.command("/reset")

    assert (await running.slack.responses(rid))[0]["text"] == "History cleared."
    assert running.engine.replies(key) == []
    assert (first.status, second.status) == (Status.CANCELLED, Status.CANCELLED)
    assert second.text == ""  # dropped: never sent to the model
    assert len(chats(llm)) == 1
    assert (await running.engine.conversation(key)).messages == []
    await wait_for(lambda: "one two \n⏹ stopped" in slack_api.texts(CHANNEL))


async def test_stop_ends_the_answer_with_what_was_written(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    llm.enqueue(Reply(text="one two three four five", hang_after=2))
    await running.slack.command("/ask", "count slowly")
    await wait_for(lambda: any(t.startswith("one two") for t in slack_api.texts(CHANNEL)))

    rid, _, _ = await running.slack.command("/stop")
    assert (await running.slack.responses(rid))[0]["text"] == "Stopped."

    await wait_for(lambda: slack_api.texts(CHANNEL)[-1] == "one two \n⏹ stopped")
    rid, _, _ = await running.slack.command("/stop")
    assert (await running.slack.responses(rid))[0]["text"] == "Nothing is running here."


async def test_llm_is_help_and_reaches_every_command(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot()
    rid, _, _ = await running.slack.command("/llm")
    [help_text] = await running.slack.responses(rid)
    assert "Slash commands: /ask" in help_text["text"]
    assert "Model here: local/alpha." in help_text["text"]

    rid, _, _ = await running.slack.command("/llm", "status")
    [status] = await running.slack.responses(rid)
    assert status["text"].startswith("Model: local/alpha.")


async def test_ask_without_a_question_explains_how(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    rid, _, _ = await running.slack.command("/ask", "   ")
    [answer] = await running.slack.responses(rid)
    assert answer["response_type"] == "ephemeral"
    assert answer["text"].startswith("Ask me anything")
    assert slack_api.texts(CHANNEL) == []
    assert chats(llm) == []


async def test_ask_where_the_bot_cannot_post_says_so_privately(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot()
    rid, _, _ = await running.slack.command("/ask", "hello?", channel="CGONE1")
    [answer] = await running.slack.responses(rid)
    assert answer == {
        "text": "I can't post here: invite me first (/invite).",
        "response_type": "ephemeral",
    }


async def test_admin_rule_counts_workspace_admins(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot(admin_user_ids="U0BOSS")

    rid, _, _ = await running.slack.command("/model", "local/beta", user=USER)
    assert (await running.slack.responses(rid))[0]["text"] == "Only admins can change this here."
    rid, _, _ = await running.slack.command("/system", "Be terse.", user=USER)
    assert (await running.slack.responses(rid))[0]["text"] == "Only admins can change this here."
    rid, _, _ = await running.slack.command("/system", user=USER)  # reading is for everyone
    assert (await running.slack.responses(rid))[0]["text"] == "System prompt: (none)"

    for admin in ("U0BOSS", "U0ADMIN"):  # listed, and a Slack workspace admin (users.info)
        rid, _, _ = await running.slack.command("/model", "local/beta", user=admin)
        assert (await running.slack.responses(rid))[0]["text"].startswith("Model for this")
    # Looked up only when the rule applies to an unlisted user, then remembered for a while.
    assert [c.args["user"] for c in slack_api.calls_to("users.info")] == [USER, "U0ADMIN"]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("/model", " local/beta ", Command("model", "local/beta")),
        ("/model", "", Command("model", "")),
        ("/models", " gpt ", Command("models", "gpt")),  # a filter
        ("/system", "Be terse. Very.", Command("system", "Be terse. Very.")),
        ("/reset", "", Command("reset")),
        ("/stop", "", Command("stop")),
        ("/llm", "", Command("help")),
        ("/llm", "what is this", Command("help")),
        ("/llm", "status", Command("status")),
        ("/llm", "system: Be terse", Command("system", "Be terse")),
        ("/llm", "model local/beta", Command("model", "local/beta")),
        ("/tools", "", Command("tools")),
        ("/tools", "enable files", Command("tools", "enable files")),
        ("/llm", "tools disable files", Command("tools", "disable files")),
    ],
)
def test_slash_commands_map_onto_the_core_grammar(name: str, text: str, expected: Command) -> None:
    assert slash_command(name, text) == expected


def test_every_core_command_has_a_slash_command() -> None:
    assert set(SLASH_COMMANDS) == {
        "/ask",
        "/model",
        "/models",
        "/reset",
        "/system",
        "/stop",
        "/tools",
        "/llm",
    }


async def test_models_lists_a_model_only_the_providers_list_has(
    make_bot: BotMaker, llm: FakeLLMServer
) -> None:
    llm.models = ["alpha", "beta", "listed-only"]
    running = await make_bot()
    rid, _, _ = await running.slack.command("/models")
    [first] = await running.slack.responses(rid)
    assert "local/alpha" in first["text"]  # at once, from what is known
    await wait_for(lambda: not running.engine.catalogue.refreshing())

    rid, _, _ = await running.slack.command("/models")
    [listing] = await running.slack.responses(rid)
    assert listing["text"] == (
        "Available models:\n• echo/echo\n→ local/alpha\n• local/beta\n• local/listed-only"
    )
    rid, _, _ = await running.slack.command("/models", "listed")
    [found] = await running.slack.responses(rid)
    assert found["text"] == "Models matching 'listed':\n• local/listed-only"
    rid, _, _ = await running.slack.command("/model")
    [shown] = await running.slack.responses(rid)
    assert shown["text"] == (
        "Model here: local/alpha. Available: echo/echo, local/alpha, local/beta, local/listed-only."
    )


async def test_ask_is_answered_by_the_fallback_when_the_model_is_unavailable(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(llmconnect_fallback_models="local/beta", llm_max_retries=0)
    llm.enqueue(Fail(503))
    await running.slack.command("/ask", "anyone there?")
    await wait_for(
        lambda: (
            slack_api.texts(CHANNEL)[1:]
            == ["You said: anyone there?\nanswered by local/beta — local/alpha was unavailable"]
        )
    )
    assert [c["model"] for c in chats(llm)] == ["alpha", "beta"]


async def test_tools_lists_the_servers_and_enables_one_for_the_channel(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot(mcp_servers=stdio_servers("files"), admin_user_ids=USER)
    await running.engine.start()
    await running.engine.mcp.wait_ready()
    rid, _, _ = await running.slack.command("/tools")
    [listed] = await running.slack.responses(rid)
    assert listed["text"].splitlines()[:2] == [
        "Tool servers (✓ enabled here):",
        "• files — 6 tools",
    ]
    rid, _, _ = await running.slack.command("/tools", "enable files", user="U0OTHER")
    [denied] = await running.slack.responses(rid)
    assert denied["text"] == "Only admins can change this here."
    rid, _, _ = await running.slack.command("/tools", "enable files")
    [enabled] = await running.slack.responses(rid)
    assert enabled["text"] == "Tools of files enabled here. Tool servers here: files."
    key = running.bot.threads.channel_key(CHANNEL)
    assert (await running.engine.conversation(key)).tools == ("files",)
    assert slash_command("/tools", " disable  files ") == Command("tools", "disable  files")
