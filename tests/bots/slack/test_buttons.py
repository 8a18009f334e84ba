"""Stop / Regenerate / 👍👎 on Slack replies (core.controls), through the real front end: bolt
over signed HTTP (and Socket Mode) against the Web API stand-in. The buttons ride on the text's
own requests (an ``actions`` block), a click is a signed ``block_actions`` payload, and a refusal
reaches only the clicker (by the payload's ``response_url``)."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from bots.slack import SlackBot
from core.controls import Action, parse_action_id
from core.delivery import STOPPED_NOTE
from core.engine import NOT_LATEST, ONLY_ASKER
from core.feedback import Counts
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest, Reply
from tests.fakes.slack_api import FakeSlackAPI, Message

from .conftest import CHANNEL, TEAM, USER, BotMaker, Running, SlackClient, next_ts, wait_for

STRANGER = "U0STRANGER"


def actions(message: Message) -> list[Action]:
    """What the message's buttons do, in order."""
    found = [parse_action_id(a) for a in message.buttons]
    return [p.action for p in found if p is not None]


def button(message: Message, action: Action) -> str:
    [action_id] = [a for a in message.buttons if a.startswith(f"llmc:{action}:")]
    return action_id


def chats(llm: FakeLLMServer) -> list[RecordedRequest]:
    return [r for r in llm.requests if r.protocol is not None]


async def only_message(slack_api: FakeSlackAPI, thread_ts: str | None = None) -> Message:
    await wait_for(lambda: len(slack_api.thread(CHANNEL, thread_ts)) == 1)
    [message] = slack_api.thread(CHANNEL, thread_ts)
    return message


async def streaming_answer(
    running: Running, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> Message:
    """A channel question whose answer hangs after two words: its message, showing Stop."""
    llm.enqueue(Reply(text="one two three four five", hang_after=2))
    await running.slack.mention("count slowly")
    message = await only_message(slack_api)
    await wait_for(lambda: message.text.startswith("one two") and actions(message) == [Action.STOP])
    return message


async def test_the_streaming_message_carries_stop_then_regenerate_and_feedback_in_its_own_requests(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot(slack_streaming="update")
    await running.slack.mention("hello")
    message = await only_message(slack_api)
    await wait_for(lambda: running.bot._tasks == {} and message.text == "You said: hello")

    assert actions(message) == [Action.REGENERATE, Action.UP, Action.DOWN]
    # Stop showed while it streamed, and every set of buttons came with a post or an update of
    # the text: no request of their own.
    shown = [[a.split(":")[1] for a in buttons] for buttons in message.button_history]
    assert [Action.STOP.value] in shown
    assert len(message.button_history) == 1 + message.updates
    assert message.block_text == message.text
    assert {c.method for c in slack_api.calls} <= {
        "auth.test",
        "chat.postMessage",
        "chat.update",
    }


async def test_stop_by_the_asker_ends_the_reply_and_closes_the_llm_stream(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="update")
    message = await streaming_answer(running, slack_api, llm)

    rid, status, _ = await running.slack.click(message, button(message, Action.STOP))

    assert status == 200
    await wait_for(lambda: message.text == f"one two \n{STOPPED_NOTE}")
    await wait_for(lambda: llm.open_streams == 0)
    assert llm.disconnects == 1
    # A stopped reply can be tried again; it has no text to rate.
    await wait_for(lambda: actions(message) == [Action.REGENERATE])
    assert slack_api.responses.get(rid) is None  # the message shows it: nothing to say


async def test_a_strangers_stop_is_refused_to_them_alone_and_the_reply_goes_on(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="update", admin_user_ids="U0BOSS")
    message = await streaming_answer(running, slack_api, llm)

    rid, status, _ = await running.slack.click(message, button(message, Action.STOP), user=STRANGER)

    assert status == 200
    [answer] = await running.slack.responses(rid)
    assert answer["text"] == ONLY_ASKER
    assert answer["response_type"] == "ephemeral"
    assert answer["replace_original"] is False
    [reply] = running.engine.replies(running.bot.threads.channel_key(CHANNEL))
    assert not reply.done
    assert llm.open_streams == 1

    # An admin (ADMIN_USER_IDS) may stop anyone's reply.
    await running.slack.click(message, button(message, Action.STOP), user="U0BOSS")
    await wait_for(lambda: message.text == f"one two \n{STOPPED_NOTE}")


async def test_regenerate_asks_again_without_the_first_answer_and_rewrites_the_message(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="update")
    llm.enqueue(Reply(text="First answer."), Reply(text="Second, better answer."))
    await running.slack.mention("tell me")
    message = await only_message(slack_api)
    await wait_for(lambda: actions(message) == [Action.REGENERATE, Action.UP, Action.DOWN])

    _, status, _ = await running.slack.click(message, button(message, Action.REGENERATE))

    assert status == 200
    await wait_for(lambda: message.text == "Second, better answer." and not running.bot._tasks)
    assert len(slack_api.thread(CHANNEL)) == 1  # the same message, rewritten
    _, second = chats(llm)
    assert [role for role, _ in second.turns()] == ["user"]
    assert second.turns()[0][1][0].text == "tell me"
    assert "First answer." not in json.dumps(second.json)
    assert actions(message) == [Action.REGENERATE, Action.UP, Action.DOWN]
    # The conversation keeps one answer: the new one.
    conversation = await running.engine.conversation(running.bot.threads.channel_key(CHANNEL))
    assert [m.content for m in conversation.messages if m.role == "assistant"] == [
        "Second, better answer."
    ]


async def test_a_stranger_may_not_regenerate_and_an_old_reply_cannot_be(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="update", admin_user_ids="U0BOSS")
    await running.slack.mention("first")
    old = await only_message(slack_api)
    await wait_for(lambda: actions(old) == [Action.REGENERATE, Action.UP, Action.DOWN])
    rid, _, _ = await running.slack.click(old, button(old, Action.REGENERATE), user=STRANGER)
    assert (await running.slack.responses(rid))[0]["text"] == ONLY_ASKER

    await running.slack.mention("second")
    await wait_for(lambda: len(slack_api.thread(CHANNEL)) == 2 and not running.bot._tasks)
    rid, _, _ = await running.slack.click(old, button(old, Action.REGENERATE))
    assert (await running.slack.responses(rid))[0]["text"] == NOT_LATEST
    assert len(chats(llm)) == 2


async def test_feedback_is_counted_per_model_and_one_vote_per_user(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot(slack_streaming="update")
    await running.slack.mention("rate me")
    message = await only_message(slack_api)
    await wait_for(lambda: actions(message) == [Action.REGENERATE, Action.UP, Action.DOWN])
    key = running.bot.threads.channel_key(CHANNEL)

    rid, _, _ = await running.slack.click(message, button(message, Action.UP), user=STRANGER)
    [thanks] = await running.slack.responses(rid)
    assert thanks["text"] == "Thanks for the feedback: 👍."
    assert thanks["response_type"] == "ephemeral"
    await running.slack.click(message, button(message, Action.UP))
    await running.slack.click(message, button(message, Action.DOWN), user=STRANGER)  # changes it
    await wait_for(lambda: len(slack_api.responses) == 3)
    assert await running.engine.feedback_of(key) == {"local/alpha": Counts(up=1, down=1)}

    rid, _, _ = await running.slack.command("/llm", "status")
    [status] = await running.slack.responses(rid)
    assert "Feedback here: local/alpha 👍 1 👎 1." in status["text"]


async def test_a_click_with_a_bad_signature_is_refused_and_does_nothing(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="update")
    message = await streaming_answer(running, slack_api, llm)
    stop = button(message, Action.STOP)

    _, status, body = await running.slack.click(message, stop, secret="not-the-secret")
    assert (status, json.loads(body)) == (401, {"error": "invalid request"})
    _, status, _ = await running.slack.click(message, stop, timestamp=int(time.time()) - 600)
    assert status == 401
    payload = running.slack.click_payload(message, stop, rid="forged")
    raw = urlencode({"payload": json.dumps(payload)}).encode()
    status, _ = await running.slack.post(
        raw, "application/x-www-form-urlencoded", signature="v0=00"
    )
    assert status == 401

    [reply] = running.engine.replies(running.bot.threads.channel_key(CHANNEL))
    assert not reply.done
    assert slack_api.responses == {}
    assert actions(message) == [Action.STOP]


async def test_in_a_native_stream_the_final_buttons_ride_on_stop_stream_and_regenerate_updates(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()  # auto: a thread is answered by a native stream
    llm.enqueue(Reply(text="Streamed first."), Reply(text="Then updated."))
    root = next_ts()
    await running.slack.mention("stream it", thread_ts=root)
    message = await only_message(slack_api, root)
    await wait_for(lambda: not message.streaming and not running.bot._tasks)

    assert message.text == "Streamed first."
    assert actions(message) == [Action.REGENERATE, Action.UP, Action.DOWN]
    [stop] = slack_api.calls_to("chat.stopStream")
    assert "blocks" in stop.args
    # A stream takes no blocks before its stop: no Stop button, no extra request.
    assert message.button_history == [message.buttons]
    assert slack_api.calls_to("chat.update") == []

    await running.slack.click(message, button(message, Action.REGENERATE))
    await wait_for(lambda: message.text == "Then updated." and not running.bot._tasks)
    assert actions(message) == [Action.REGENERATE, Action.UP, Action.DOWN]
    assert len(slack_api.thread(CHANNEL, root)) == 1
    assert [(role, parts[0].text) for role, parts in chats(llm)[1].turns()] == [
        ("user", "stream it")
    ]


async def test_over_socket_mode_a_click_is_acked_and_stops_the_reply(
    socket_bot: SlackBot, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    llm.enqueue(Reply(text="one two three four five", hang_after=2))
    ts = next_ts()
    await slack_api.send_envelope(
        "events_api",
        {
            "team_id": TEAM,
            "api_app_id": "A0001",
            "type": "event_callback",
            "event_id": "EvClick1",
            "event_time": 1,
            "event": {
                "type": "app_mention",
                "user": USER,
                "text": "<@UBOT> count",
                "ts": ts,
                "channel": CHANNEL,
                "team": TEAM,
            },
        },
    )
    message = await only_message(slack_api)
    await wait_for(lambda: message.text.startswith("one two") and actions(message) == [Action.STOP])

    client = SlackClient("unused", None, slack_api)  # type: ignore[arg-type]  # payloads only
    payload = client.click_payload(message, button(message, Action.STOP), rid="sock")
    envelope = await slack_api.send_envelope("interactive", payload)

    assert await slack_api.wait_ack(envelope) == {"envelope_id": envelope}
    await wait_for(lambda: message.text == f"one two \n{STOPPED_NOTE}")
    await wait_for(lambda: llm.open_streams == 0)
    await wait_for(lambda: actions(message) == [Action.REGENERATE])
    assert socket_bot.engine.replies(socket_bot.threads.channel_key(CHANNEL)) == []


async def test_without_reply_buttons_answers_carry_no_blocks(
    make_bot: BotMaker, slack_api: FakeSlackAPI
) -> None:
    running = await make_bot(slack_streaming="update", reply_buttons=False)
    await running.slack.mention("plain")
    message = await only_message(slack_api)
    await wait_for(lambda: running.bot._tasks == {} and message.text == "You said: plain")
    assert message.blocks is None
    assert all("blocks" not in c.args for c in slack_api.calls)

    root = next_ts()
    native = await make_bot(reply_buttons=False)
    await native.slack.mention("streamed", thread_ts=root)
    await wait_for(lambda: len(slack_api.calls_to("chat.stopStream")) == 1)
    assert "blocks" not in slack_api.calls_to("chat.stopStream")[0].args


async def test_regenerating_a_split_reply_into_a_short_one_deletes_the_surplus_messages(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="update")
    long_answer = " ".join(f"word{n}" for n in range(1200))  # past one message's length
    llm.enqueue(Reply(text=long_answer), Reply(text="Short now."))
    await running.slack.mention("tell me at length")
    await wait_for(lambda: len(slack_api.thread(CHANNEL)) >= 2 and not running.bot._tasks)
    old = slack_api.thread(CHANNEL)
    last = old[-1]
    await wait_for(lambda: actions(last) == [Action.REGENERATE, Action.UP, Action.DOWN])
    assert all(not m.buttons for m in old[:-1])

    _, status, _ = await running.slack.click(last, button(last, Action.REGENERATE))

    assert status == 200
    await wait_for(lambda: len(slack_api.thread(CHANNEL)) == 1 and not running.bot._tasks)
    [kept] = slack_api.thread(CHANNEL)
    assert kept.ts == old[0].ts  # the first part is the new answer, the rest deleted
    assert kept.text == "Short now."
    assert actions(kept) == [Action.REGENERATE, Action.UP, Action.DOWN]
    deleted = {c.args["ts"] for c in slack_api.calls_to("chat.delete")}
    assert deleted == {m.ts for m in old[1:]}
