"""Tests for core.controls: action ids, who may press what, and what a press does (Stop,
Regenerate, 👍/👎) through a real engine (echo, or the local LLM stand-in where the request
matters); the renderer carrying the buttons is tested in test_render.py."""

from __future__ import annotations

import pytest

from core.commands import Command, execute
from core.controls import (
    Action,
    Press,
    action_id,
    final_controls,
    key_hash,
    parse_action_id,
    press,
    streaming_controls,
)
from core.conversations import ConversationKey, Status
from core.engine import NOT_IN_HISTORY, NOT_LATEST, ONLY_ASKER
from core.policy import Actor
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.llm_server import Reply as Scripted

from .conftest import KEY, OTHER, EngineMaker, wait_for

ASKER = Actor("u-asker")
STRANGER = Actor("u-stranger")
ADMIN = Actor("u-admin")
PLATFORM_ADMIN = Actor("u-owner", platform_admin=True)


# -- action ids -----------------------------------------------------------------------------------


def test_action_ids_round_trip_and_fit_discord_and_slack() -> None:
    long_key = ConversationKey("slack", "C0123456789/1700000000.123456" + "x" * 200)
    for action in Action:
        # Approve/Deny name the call waiting for approval (its number); the others none.
        call = 9999 if action in (Action.APPROVE, Action.DENY) else None
        value = action_id(action, long_key, "f" * 32, call)
        assert len(value) <= 64  # Discord's custom_id: 100 (Slack's action_id: 255)
        value = action_id(action, long_key, "0123456789ab", call)
        assert parse_action_id(value) == Press(action, "0123456789ab", key_hash(long_key), call)
        assert parse_action_id(value).belongs_to(long_key)  # type: ignore[union-attr]
        assert not parse_action_id(value).belongs_to(KEY)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "llmc:stop",
        "llmc:boom:0123456789ab:00000000",
        "xllmc:stop:0123456789ab:00000000",
        "llmc:stop:0123456789ab:0000000",
        "llmc:stop:ZZ:00000000",
        "llmc:approve:0123456789ab:00000000",  # which call?
        "llmc:stop:0123456789ab:00000000:1",
        "llmc:deny:0123456789ab:00000000:12345",
    ],
)
def test_foreign_ids_are_not_ours(value: str) -> None:
    assert parse_action_id(value) is None


def test_streaming_controls_are_stop_alone() -> None:
    (stop,) = streaming_controls(KEY, "abc")
    assert (stop.action, stop.label, stop.style) == (Action.STOP, "Stop", "danger")
    assert stop.action_id == action_id(Action.STOP, KEY, "abc")


# -- final controls ---------------------------------------------------------------------------------


async def test_final_controls_regenerate_and_feedback_on_a_complete_reply(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine()
    reply = await (await engine.submit(KEY, "hi", actor=ASKER))
    assert [c.action for c in final_controls(reply)] == [Action.REGENERATE, Action.UP, Action.DOWN]
    assert {parse_action_id(c.action_id).reply_id for c in final_controls(reply)} == {reply.id}  # type: ignore[union-attr]


async def test_a_stopped_reply_may_be_regenerated_but_not_rated(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 400})
    first = await engine.submit(KEY, "long", actor=ASKER)
    queued = await engine.submit(KEY, "never runs", actor=ASKER)
    await wait_for(lambda: first.text != "")
    queued.cancel()
    await queued
    await engine.stop(KEY)
    assert [c.action for c in final_controls(first)] == [Action.REGENERATE]
    assert final_controls(queued) == ()  # never ran: nothing to regenerate or rate


# -- stop -----------------------------------------------------------------------------------------


async def test_the_asker_stops_their_reply(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 400})
    reply = await engine.submit(KEY, "long", actor=ASKER)
    await wait_for(lambda: reply.text != "")
    stop = action_id(Action.STOP, KEY, reply.id)

    result = await press(engine, KEY, stop, ASKER)

    assert (result.ok, result.text) == (True, "")
    assert reply.done
    assert reply.status is Status.CANCELLED
    again = await press(engine, KEY, stop, ASKER)
    assert (again.ok, again.text) == (False, "This reply has already ended.")


async def test_a_stranger_may_not_stop_it_and_nothing_happens(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 400})
    reply = await engine.submit(KEY, "long", actor=ASKER)
    await wait_for(lambda: reply.text != "")

    result = await press(engine, KEY, action_id(Action.STOP, KEY, reply.id), STRANGER)

    assert (result.ok, result.text) == (False, ONLY_ASKER)
    assert not reply.done
    reply.cancel()
    await reply


@pytest.mark.parametrize("admin", [ADMIN, PLATFORM_ADMIN])
async def test_an_admin_may_stop_anyones_reply(make_engine: EngineMaker, admin: Actor) -> None:
    engine = make_engine(options={"words": 400}, admin_user_ids=["u-admin"])
    reply = await engine.submit(KEY, "long", actor=ASKER)
    await wait_for(lambda: reply.text != "")

    result = await press(engine, KEY, action_id(Action.STOP, KEY, reply.id), admin)

    assert result.ok
    assert (await reply).status is Status.CANCELLED


async def test_without_admin_ids_a_stranger_is_still_no_admin_for_buttons(
    make_engine: EngineMaker,
) -> None:
    # ADMIN_USER_IDS empty lets everyone change the model; it must not let anyone stop anyone.
    engine = make_engine(options={"words": 400})
    assert engine.policy.is_admin(STRANGER)
    reply = await engine.submit(KEY, "long", actor=ASKER)
    await wait_for(lambda: reply.text != "")
    result = await press(engine, KEY, action_id(Action.STOP, KEY, reply.id), STRANGER)
    assert result.text == ONLY_ASKER
    reply.cancel()
    await reply


async def test_stop_of_an_ended_reply_never_stops_the_next_one(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 400})
    first = await engine.submit(KEY, "a", actor=ASKER)
    first.cancel()
    await first
    second = await engine.submit(KEY, "b", actor=ASKER)
    await wait_for(lambda: second.text != "")

    result = await press(engine, KEY, action_id(Action.STOP, KEY, first.id), ASKER)

    assert not result.ok
    assert not second.done
    second.cancel()
    await second


async def test_a_button_from_another_conversation_is_refused(make_engine: EngineMaker) -> None:
    engine = make_engine()
    reply = await (await engine.submit(KEY, "hi", actor=ASKER))
    result = await press(engine, OTHER, action_id(Action.REGENERATE, KEY, reply.id), ASKER)
    assert not result.ok
    assert result.text == "That button does not belong to this conversation."


async def test_blocked_users_press_nothing(make_engine: EngineMaker) -> None:
    engine = make_engine(blocked_users=["u-asker"])
    result = await press(engine, KEY, action_id(Action.UP, KEY, "0123456789ab"), ASKER)
    assert (result.ok, result.text) == (False, "Sorry, you are not allowed to use this bot.")


# -- regenerate -----------------------------------------------------------------------------------


async def test_regenerate_drops_the_answer_and_asks_again_with_the_same_prompt(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine()
    llm_server.enqueue(Scripted("first answer"), Scripted("old"), Scripted("second answer"))
    await (await engine.submit(KEY, "earlier", actor=ASKER))
    reply = await (await engine.submit(KEY, "tell me", actor=ASKER))
    assert reply.text == "old"

    result = await press(engine, KEY, action_id(Action.REGENERATE, KEY, reply.id), ASKER)

    assert result.ok
    assert result.reply is not None
    new = await result.reply
    assert new.text == "second answer"
    assert new.id != reply.id
    assert new.user == "u-asker"
    sent = llm_server.requests[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "earlier"),
        ("assistant", "first answer"),
        ("user", "tell me"),
    ]
    conversation = await engine.conversation(KEY)
    assert [(m.role, m.text) for m in conversation.messages] == [
        ("user", "earlier"),
        ("assistant", "first answer"),
        ("user", "tell me"),
        ("assistant", "second answer"),
    ]
    assert conversation.messages[-1].id == new.id


async def test_regenerate_uses_the_conversations_current_model(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    llm_server.models.append("other")
    engine = local_engine()
    reply = await (await engine.submit(KEY, "q", actor=ASKER))
    await engine.set_model(KEY, "local/other")
    result = await press(engine, KEY, action_id(Action.REGENERATE, KEY, reply.id), ASKER)
    assert result.reply is not None
    assert (await result.reply).model == "local/other"
    assert llm_server.requests[-1].json["model"] == "other"


async def test_regenerate_keeps_the_prompts_files(make_engine: EngineMaker) -> None:
    from core.attachments import prepare

    engine = make_engine()
    note = prepare("notes.txt", "text/plain", b"the file's words")
    reply = await (await engine.submit(KEY, "read", actor=ASKER, attachments=[note]))
    result = await press(engine, KEY, action_id(Action.REGENERATE, KEY, reply.id), ASKER)
    assert result.reply is not None
    await result.reply
    conversation = await engine.conversation(KEY)
    assert len(conversation.messages) == 2
    assert [a.name for a in conversation.messages[0].attachments] == ["notes.txt"]


async def test_only_the_latest_reply_can_be_regenerated(make_engine: EngineMaker) -> None:
    engine = make_engine()
    old = await (await engine.submit(KEY, "one", actor=ASKER))
    await (await engine.submit(KEY, "two", actor=ASKER))

    result = await press(engine, KEY, action_id(Action.REGENERATE, KEY, old.id), ASKER)

    assert (result.ok, result.text, result.reply) == (False, NOT_LATEST, None)
    assert len((await engine.conversation(KEY)).messages) == 4


async def test_regenerate_is_refused_while_a_newer_prompt_waits(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 400})
    done = await (await engine.submit(KEY, "one", actor=ASKER))
    running = await engine.submit(KEY, "two", actor=ASKER)
    result = await press(engine, KEY, action_id(Action.REGENERATE, KEY, done.id), ASKER)
    assert result.text == NOT_LATEST
    running.cancel()
    await running


async def test_a_stranger_may_not_regenerate(make_engine: EngineMaker) -> None:
    engine = make_engine()
    reply = await (await engine.submit(KEY, "one", actor=ASKER))
    result = await press(engine, KEY, action_id(Action.REGENERATE, KEY, reply.id), STRANGER)
    assert (result.ok, result.text) == (False, ONLY_ASKER)


async def test_regenerate_after_a_reset_says_the_reply_is_gone(make_engine: EngineMaker) -> None:
    engine = make_engine()
    reply = await (await engine.submit(KEY, "one", actor=ASKER))
    await engine.reset(KEY)
    result = await press(engine, KEY, action_id(Action.REGENERATE, KEY, reply.id), ASKER)
    assert (result.ok, result.text) == (False, NOT_IN_HISTORY)


async def test_regenerate_counts_against_the_rate_limit(make_engine: EngineMaker) -> None:
    engine = make_engine(user_rate_limit=1, user_rate_window=60)
    reply = await (await engine.submit(KEY, "one", actor=ASKER))
    result = await press(engine, KEY, action_id(Action.REGENERATE, KEY, reply.id), ASKER)
    assert not result.ok
    assert result.text.startswith("You are sending messages too fast")


async def test_a_turn_that_arrives_before_the_regeneration_runs_wins(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine()
    reply = await (await engine.submit(KEY, "one", actor=ASKER))
    regenerated = await engine.regenerate(KEY, reply.id, actor=ASKER)
    newer = await engine.submit(KEY, "two", actor=ASKER)
    # The regeneration runs first (it was queued first): the newer prompt follows it.
    assert (await regenerated).status is Status.COMPLETE
    await newer
    conversation = await engine.conversation(KEY)
    assert [m.text for m in conversation.messages if m.role == "user"] == ["one", "two"]


# -- feedback -------------------------------------------------------------------------------------


async def test_feedback_is_one_vote_per_user_changeable_and_counted_in_status(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine()
    reply = await (await engine.submit(KEY, "one", actor=ASKER))
    up, down = action_id(Action.UP, KEY, reply.id), action_id(Action.DOWN, KEY, reply.id)

    first = await press(engine, KEY, up, ASKER)
    assert (first.ok, first.text, first.vote) == (True, "Thanks for the feedback: 👍.", 1)
    await press(engine, KEY, up, STRANGER)  # anyone may rate
    changed = await press(engine, KEY, down, STRANGER)  # changes their vote
    assert changed.vote == -1
    counts = await engine.feedback_of(KEY)
    assert counts is not None
    assert {m: (c.up, c.down) for m, c in counts.items()} == {"echo/echo": (1, 1)}

    status = await execute(engine, KEY, Command("status"), ASKER)
    assert "Feedback here: echo/echo 👍 1 👎 1." in status.text

    withdrawn = await press(engine, KEY, down, STRANGER)
    assert (withdrawn.text, withdrawn.vote) == ("Your 👎 was withdrawn.", 0)
    status = await execute(engine, KEY, Command("status"), ASKER)
    assert "Feedback here: echo/echo 👍 1 👎 0." in status.text


async def test_feedback_counts_per_model_and_older_replies_may_be_rated(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine()
    old = await (await engine.submit(KEY, "one", actor=ASKER))
    await engine.set_model(KEY, "echo/other")
    new = await (await engine.submit(KEY, "two", actor=ASKER))
    await press(engine, KEY, action_id(Action.UP, KEY, old.id), ASKER)
    await press(engine, KEY, action_id(Action.DOWN, KEY, new.id), ASKER)
    counts = await engine.feedback_of(KEY)
    assert counts is not None
    assert {m: (c.up, c.down) for m, c in counts.items()} == {
        "echo/echo": (1, 0),
        "echo/other": (0, 1),
    }


async def test_status_before_any_vote(make_engine: EngineMaker) -> None:
    engine = make_engine()
    status = await execute(engine, KEY, Command("status"), ASKER)
    assert status.text.endswith("Feedback here: none yet.")


async def test_a_vote_on_an_unknown_reply_is_refused(make_engine: EngineMaker) -> None:
    engine = make_engine()
    await (await engine.submit(KEY, "one", actor=ASKER))
    result = await press(engine, KEY, action_id(Action.UP, KEY, "0123456789ab"), ASKER)
    assert (result.ok, result.text) == (False, NOT_IN_HISTORY)
    assert await engine.feedback_of(KEY) == {}


async def test_the_web_operator_may_press_everything(make_engine: EngineMaker) -> None:
    engine = make_engine()
    reply = await (await engine.submit(KEY, "one"))
    assert (await press(engine, KEY, action_id(Action.UP, KEY, reply.id), None)).vote == 1
    result = await press(engine, KEY, action_id(Action.REGENERATE, KEY, reply.id), None)
    assert result.reply is not None
    await result.reply


async def test_regenerate_drops_only_the_latest_of_two_alike_turns(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine()
    await (await engine.submit(KEY, "same", actor=ASKER))
    latest = await (await engine.submit(KEY, "same", actor=ASKER))
    result = await press(engine, KEY, action_id(Action.REGENERATE, KEY, latest.id), ASKER)
    assert result.reply is not None
    new = await result.reply
    conversation = await engine.conversation(KEY)
    assert [m.role for m in conversation.messages] == ["user", "assistant"] * 2
    assert conversation.messages[-1].id == new.id
    assert conversation.messages[1].id != latest.id
