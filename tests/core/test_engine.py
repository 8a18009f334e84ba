"""Tests for core.engine: ChatEngine and Reply, with the offline echo provider and a real local
OpenAI-compatible server (``local/<model>``) where HTTP matters. No real sleeps: the tests yield to
the loop, await replies, or drive a FakeClock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.clock import FakeClock
from core.conversations import ConversationKey, Status
from core.engine import HEARD_WAIT, HELP_TEXT, ChatEngine, Refused, Reply
from core.policy import Actor
from llmconnect.protocols.echo import echo_reply
from tests.fakes.llm_server import Fail, FakeLLMServer
from tests.fakes.llm_server import Reply as Scripted

from .conftest import KEY, OTHER, EngineMaker, wait_for

THREAD = ConversationKey("test", "general/thread-1")
ZERO_RETRY_AFTER = {"retry-after-ms": "0"}  # retried at once: no real back-off sleep


def echo_text(prompt: str, words: int | None = None) -> str:
    return "".join(echo_reply(prompt, words))


async def ticks(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def sent_messages(server: FakeLLMServer, index: int = -1) -> list[dict[str, Any]]:
    return server.requests[index].json["messages"]


async def streaming(reply: Reply) -> None:
    await wait_for(lambda: reply.status is Status.STREAMING and reply.text != "")


# -- submit, iterate, await -----------------------------------------------------------------------


async def test_submit_returns_at_once_and_the_reply_streams_to_completion(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine()

    reply = await engine.submit(KEY, "  hello there  ")

    assert reply.status is Status.PENDING  # nothing has run yet
    assert not reply.done
    assert engine.is_busy(KEY)
    assert reply.model == "echo/echo"

    deltas = [delta async for delta in reply]

    assert await reply is reply
    assert reply.status is Status.COMPLETE
    assert reply.error is None
    assert "".join(deltas) == reply.text == echo_text("hello there")
    assert len(deltas) > 1  # it streamed
    assert not engine.is_busy(KEY)
    conversation = await engine.conversation(KEY)
    assert [(m.role, m.text, m.status) for m in conversation.messages] == [
        ("user", "hello there", Status.COMPLETE),
        ("assistant", echo_text("hello there"), Status.COMPLETE),
    ]


async def test_await_without_iterating_gives_the_final_state(make_engine: EngineMaker) -> None:
    engine = make_engine()
    reply = await (await engine.submit(KEY, "just wait"))
    assert reply.status is Status.COMPLETE
    assert reply.text == echo_text("just wait")
    assert [d async for d in reply] == [reply.text]  # a finished reply: all of it, once


async def test_several_observers_each_get_the_whole_text(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 40})
    reply = await engine.submit(KEY, "a b c")

    async def observe() -> str:
        return "".join([d async for d in reply])

    texts = await asyncio.gather(observe(), observe(), observe())
    assert texts == [echo_text("a b c", 40)] * 3


async def test_options_are_forwarded_to_the_provider(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 25})
    reply = await engine.submit(KEY, "one two")
    deltas = [d async for d in reply]
    assert "".join(deltas) == echo_text("one two", 25)
    assert len(echo_reply("one two", 25)) == 25


async def test_options_reach_an_http_provider(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(options={"temperature": 0.25, "max_tokens": 64})
    await (await engine.submit(KEY, "hi"))
    body = llm_server.requests[-1].json
    assert (body["temperature"], body["max_tokens"]) == (0.25, 64)


async def test_the_next_prompt_carries_the_history_and_the_system_prompt(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(llmconnect_system_prompt="Be terse.")
    llm_server.enqueue(Scripted(text="first answer"), Scripted(text="second answer"))

    assert (await (await engine.submit(KEY, "first"))).text == "first answer"
    assert (await (await engine.submit(KEY, "second"))).text == "second answer"

    assert sent_messages(llm_server, 0) == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "first"},
    ]
    assert sent_messages(llm_server, 1) == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second"},
    ]


async def test_conversation_system_prompt_overrides_the_default_and_empty_means_none(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(llmconnect_system_prompt="Default.")
    await engine.set_system(KEY, "Custom.")
    await engine.set_system(OTHER, "")
    await (await engine.submit(KEY, "a"))
    await (await engine.submit(OTHER, "b"))
    assert sent_messages(llm_server, 0)[0] == {"role": "system", "content": "Custom."}
    assert sent_messages(llm_server, 1) == [{"role": "user", "content": "b"}]


async def test_history_sent_and_kept_is_bounded(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(history_max_messages=4)
    for n in range(4):
        llm_server.enqueue(Scripted(text=f"a{n}"))
        await (await engine.submit(KEY, f"q{n}"))

    conversation = await engine.conversation(KEY)
    assert [m.text for m in conversation.messages] == ["q2", "a2", "q3", "a3"]
    # The last request had at most max_messages of history before the new prompt.
    assert [m["content"] for m in sent_messages(llm_server)] == ["q1", "a1", "q2", "a2", "q3"]


async def test_thread_uses_parents_model_and_system_with_its_own_history(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine()
    await engine.set_model(KEY, "local/parent-model")
    await engine.set_system(KEY, "Parent system.")
    await (await engine.submit(KEY, "in the channel"))

    reply = await engine.submit(THREAD, "in the thread", parent=KEY)
    await reply

    assert reply.model == "local/parent-model"
    assert llm_server.requests[-1].json["model"] == "parent-model"
    assert sent_messages(llm_server) == [
        {"role": "system", "content": "Parent system."},
        {"role": "user", "content": "in the thread"},
    ]
    thread = await engine.conversation(THREAD)
    assert thread.parent == KEY


# -- ordering and concurrency ---------------------------------------------------------------------


async def test_prompts_in_one_channel_run_one_at_a_time_in_order(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 30})
    started: list[str] = []
    replies = [await engine.submit(KEY, f"prompt{n}") for n in range(3)]

    async def watch(name: str, reply: Reply) -> None:
        async for _ in reply:
            if name not in started:
                # When a reply starts streaming, every earlier one is already complete.
                started.append(name)
                index = int(name[-1])
                assert all(r.status is Status.COMPLETE for r in replies[:index])
                assert all(r.status is Status.PENDING for r in replies[index + 1 :])

    await asyncio.gather(*(watch(f"prompt{n}", r) for n, r in enumerate(replies)))

    assert started == ["prompt0", "prompt1", "prompt2"]
    conversation = await engine.conversation(KEY)
    assert [m.text for m in conversation.messages if m.role == "user"] == [
        "prompt0",
        "prompt1",
        "prompt2",
    ]


async def test_second_prompt_waits_for_the_first_on_the_server(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine()
    llm_server.enqueue(Scripted(deltas=["partial ", "never"], hang_after=1))
    first = await engine.submit(KEY, "first")
    second = await engine.submit(KEY, "second")

    await streaming(first)
    await ticks(20)
    assert len(llm_server.requests) == 1  # the second has not been sent
    assert second.status is Status.PENDING
    assert engine.reply_for(KEY) is first

    assert await engine.stop(KEY) is True

    assert first.status is Status.CANCELLED
    assert first.text == "partial "
    await second
    assert second.status is Status.COMPLETE
    assert second.text == "You said: second"
    # The stopped reply is kept as far as the user saw it, and sent as history.
    assert sent_messages(llm_server) == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "partial "},
        {"role": "user", "content": "second"},
    ]


async def test_two_channels_stream_at_the_same_time(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine()
    llm_server.enqueue(
        Scripted(deltas=["one ", "x"], hang_after=1), Scripted(deltas=["two ", "x"], hang_after=1)
    )
    a = await engine.submit(KEY, "a")
    b = await engine.submit(OTHER, "b")

    await wait_for(lambda: llm_server.open_streams == 2 and a.text != "" and b.text != "")

    assert a.status is b.status is Status.STREAMING
    assert {a.text, b.text} == {"one ", "two "}
    assert await engine.stop(KEY)
    assert b.status is Status.STREAMING  # stopping one channel leaves the other alone
    assert await engine.stop(OTHER)
    assert (a.status, b.status) == (Status.CANCELLED, Status.CANCELLED)


# -- stop and reset -------------------------------------------------------------------------------


async def test_stop_keeps_the_text_so_far_and_queued_prompts_still_run(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine(options={"words": 500})
    first = await engine.submit(KEY, "long one")
    second = await engine.submit(KEY, "next")
    await streaming(first)
    await ticks(5)

    assert await engine.stop(KEY)

    assert first.done
    assert first.status is Status.CANCELLED
    seen = first.text
    assert seen
    assert echo_text("long one", 500).startswith(seen)
    assert len(seen) < len(echo_text("long one", 500))
    await second
    assert second.status is Status.COMPLETE
    conversation = await engine.conversation(KEY)
    assert conversation.llm_history()[:2] == [
        {"role": "user", "content": "long one"},
        {"role": "assistant", "content": seen},
    ]


async def test_stop_right_after_submit_cancels_the_pending_reply(make_engine: EngineMaker) -> None:
    engine = make_engine()
    reply = await engine.submit(KEY, "never mind")
    assert reply.status is Status.PENDING

    assert await engine.stop(KEY) is True

    assert reply.done
    assert reply.status is Status.CANCELLED
    assert reply.text == ""
    assert [d async for d in reply] == []
    assert not engine.is_busy(KEY)
    # The conversation still works afterwards.
    again = await (await engine.submit(KEY, "again"))
    assert again.status is Status.COMPLETE
    conversation = await engine.conversation(KEY)
    assert conversation.llm_history() == [
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": echo_text("again")},
    ]


async def test_stop_twice_cancels_the_running_then_the_next(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 500})
    first = await engine.submit(KEY, "one")
    second = await engine.submit(KEY, "two")
    third = await engine.submit(KEY, "three")
    await streaming(first)

    assert await engine.stop(KEY)
    assert await engine.stop(KEY)

    assert first.status is Status.CANCELLED
    assert second.status is Status.CANCELLED
    await third
    assert third.status is Status.COMPLETE


async def test_stop_when_nothing_runs(make_engine: EngineMaker) -> None:
    engine = make_engine()
    assert await engine.stop(KEY) is False
    await (await engine.submit(KEY, "done"))
    assert await engine.stop(KEY) is False


async def test_reset_clears_history_but_keeps_model_and_system(make_engine: EngineMaker) -> None:
    engine = make_engine(env={"LOCAL_BASE_URL": "http://127.0.0.1:9/v1"})
    await engine.set_model(KEY, "local/kept")
    await engine.set_system(KEY, "Kept.")
    await engine.set_model(KEY, "echo")
    await (await engine.submit(KEY, "remember me"))

    await engine.reset(KEY)

    conversation = await engine.conversation(KEY)
    assert conversation.messages == []
    assert conversation.llm_history() == []
    assert (conversation.model, conversation.system) == ("echo/echo", "Kept.")
    assert engine.reply_for(KEY) is None


async def test_reset_stops_a_running_reply(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 500})
    reply = await engine.submit(KEY, "long")
    await streaming(reply)

    await engine.reset(KEY)

    assert reply.status is Status.CANCELLED
    assert (await engine.conversation(KEY)).messages == []


async def test_reset_stops_the_running_reply_and_drops_the_queued_ones(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine(options={"words": 500})
    first = await engine.submit(KEY, "one")
    second = await engine.submit(KEY, "two")
    third = await engine.submit(KEY, "three")
    await streaming(first)
    assert engine.replies(KEY) == [first, second, third]  # one runs, two wait

    await engine.reset(KEY)

    assert engine.replies(KEY) == []  # nothing runs, nothing waits
    assert not engine.is_busy(KEY)
    assert [r.status for r in (first, second, third)] == [Status.CANCELLED] * 3
    assert (second.text, third.text) == ("", "")  # dropped: never run
    assert (await engine.conversation(KEY)).messages == []
    assert engine.reply_for(KEY) is None
    again = await (await engine.submit(KEY, "fresh"))  # the conversation goes on from empty
    assert (await engine.conversation(KEY)).llm_history() == [
        {"role": "user", "content": "fresh"},
        {"role": "assistant", "content": again.text},
    ]


async def test_reply_cancel_stops_that_very_reply_running_or_queued(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine(options={"words": 50})
    first = await engine.submit(KEY, "one")
    second = await engine.submit(KEY, "two")
    third = await engine.submit(KEY, "three")
    await streaming(first)

    assert second.cancel() is True  # queued behind a running reply: ends without running
    await second
    assert engine.replies(KEY) == [first, third]
    assert (second.status, second.text) == (Status.CANCELLED, "")
    assert first.status is Status.STREAMING  # the others are untouched
    assert (await first).status is Status.COMPLETE
    assert (await third).status is Status.COMPLETE
    assert first.cancel() is False  # already ended: nothing to stop
    history = (await engine.conversation(KEY)).llm_history()
    assert [m["content"] for m in history if m["role"] == "user"] == ["one", "three"]

    running = await engine.submit(KEY, "long")
    await streaming(running)
    assert running.cancel() is True
    await running
    assert running.status is Status.CANCELLED
    assert running.text  # the text so far is kept, as with stop
    assert not engine.is_busy(KEY)


# -- late observers -------------------------------------------------------------------------------


async def test_late_observer_gets_text_so_far_then_the_rest(make_engine: EngineMaker) -> None:
    engine = make_engine(options={"words": 200})
    reply = await engine.submit(KEY, "alpha beta gamma")
    await streaming(reply)
    await ticks(10)
    assert reply.status is Status.STREAMING

    late = engine.reply_for(KEY)
    assert late is reply
    so_far = reply.text
    iterator = aiter(late)
    first = await anext(iterator)
    rest = [d async for d in iterator]

    assert first == so_far  # everything so far, as one delta
    assert len(rest) > 1  # then the rest as it streams
    assert first + "".join(rest) == reply.text == echo_text("alpha beta gamma", 200)
    assert reply.status is Status.COMPLETE


async def test_reply_for_gives_the_latest_reply_after_it_ended(make_engine: EngineMaker) -> None:
    engine = make_engine()
    assert engine.reply_for(KEY) is None
    first = await (await engine.submit(KEY, "one"))
    assert engine.reply_for(KEY) is first
    second = await engine.submit(KEY, "two")
    assert engine.reply_for(KEY) is first  # the new one has not started yet
    await second
    assert engine.reply_for(KEY) is second
    assert "".join([d async for d in second]) == echo_text("two")


# -- models ---------------------------------------------------------------------------------------


async def test_model_switch_is_per_conversation_and_reaches_the_server(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine()

    assert await engine.set_model(KEY, "local/other-model") == "local/other-model"
    switched = await (await engine.submit(KEY, "a"))
    default = await (await engine.submit(OTHER, "b"))

    assert (switched.model, default.model) == ("local/other-model", "local/fake")
    assert [r.json["model"] for r in llm_server.requests] == ["other-model", "fake"]


async def test_unknown_provider_is_refused_listing_available_models(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine(env={"GROQ_API_KEY": "gsk-test"})
    with pytest.raises(Refused) as info:
        await engine.set_model(KEY, "nosuch/model")
    message = info.value.user_message
    assert "Unknown provider 'nosuch'" in message
    # Offered: echo always, groq because its key is set (keyless local servers only when
    # pointed at: see test_keyless_local_servers_are_offered_only_when_pointed_at).
    assert message.endswith("Available: echo/echo, groq/llama-3.3-70b-versatile.")
    assert (await engine.conversation(KEY)).model is None


async def test_provider_without_key_is_refused_naming_the_variable(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine()
    with pytest.raises(Refused) as info:
        engine.validate_model("groq/llama-3.3-70b-versatile")
    assert "GROQ_API_KEY" in info.value.user_message
    assert info.value.user_message.endswith("Available: echo/echo.")


async def test_allowed_models_are_enforced_including_provider_wildcards(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine(
        env={"GROQ_API_KEY": "gsk-test", "OPENAI_API_KEY": "sk-test"},
        llmconnect_allowed_models="groq/*, openai/gpt-4o, echo",
    )

    assert engine.available_models() == [
        "groq/llama-3.3-70b-versatile",
        "openai/gpt-4o",
        "echo/echo",
    ]
    assert engine.validate_model("groq/any-model-at-all") == "groq/any-model-at-all"
    assert engine.validate_model("groq") == "groq/llama-3.3-70b-versatile"
    assert engine.validate_model("openai/gpt-4o") == "openai/gpt-4o"
    assert engine.validate_model("echo") == "echo/echo"
    with pytest.raises(Refused) as info:
        engine.validate_model("openai/gpt-4o-mini")
    assert "openai/gpt-4o-mini is not allowed here" in info.value.user_message
    assert "groq/llama-3.3-70b-versatile, openai/gpt-4o, echo/echo" in info.value.user_message


async def test_available_models_lists_configured_providers(make_engine: EngineMaker) -> None:
    engine = make_engine(env={"MISTRAL_API_KEY": "m"})
    assert engine.available_models() == ["echo/echo", "mistral/mistral-small-latest"]


async def test_keyless_local_servers_are_offered_only_when_pointed_at(
    make_engine: EngineMaker,
) -> None:
    # Needing no key is not being there: ollama is offered once OLLAMA_BASE_URL is set...
    pointed = make_engine(env={"OLLAMA_BASE_URL": "http://gpu-box:11434/v1"})
    assert pointed.available_models() == ["echo/echo", "ollama/llama3.2"]
    # ...or when it serves the default model; lmstudio, neither, is not offered.
    default = make_engine(env={}, llmconnect_model="lmstudio/qwen")
    assert default.available_models() == ["echo/echo", "lmstudio/local-model"]
    # Asked for by name it is still accepted (the user knows their server runs).
    assert make_engine().validate_model("ollama/llama3.2") == "ollama/llama3.2"


# -- errors ---------------------------------------------------------------------------------------


async def test_rejected_key_becomes_an_error_reply_excluded_from_history(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine()
    llm_server.enqueue(Fail(401))

    reply = await (await engine.submit(KEY, "doomed"))

    assert reply.status is Status.ERROR
    assert reply.error is not None
    assert reply.error.startswith("The provider rejected the API key")
    assert "\n" not in reply.error
    assert len(reply.error) < 120
    assert len(llm_server.requests) == 1  # a 401 is not retried

    await (await engine.submit(KEY, "next"))
    assert sent_messages(llm_server) == [{"role": "user", "content": "next"}]
    conversation = await engine.conversation(KEY)
    assert [m.status for m in conversation.messages] == [
        Status.COMPLETE,
        Status.ERROR,
        Status.COMPLETE,
        Status.COMPLETE,
    ]


async def test_server_errors_are_retried_then_reported(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(llm_max_retries=2)
    llm_server.enqueue(*[Fail(500, headers=ZERO_RETRY_AFTER)] * 3)

    reply = await (await engine.submit(KEY, "try hard"))

    assert len(llm_server.requests) == 3  # one try and two retries
    assert reply.status is Status.ERROR
    assert reply.error is not None
    assert reply.error.startswith("The provider is unavailable right now")


async def test_server_error_then_success_is_a_complete_reply(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(llm_max_retries=2)
    llm_server.enqueue(*[Fail(500, headers=ZERO_RETRY_AFTER)] * 2, Scripted(text="made it"))

    reply = await (await engine.submit(KEY, "try hard"))

    assert (reply.status, reply.text, reply.error) == (Status.COMPLETE, "made it", None)
    assert len(llm_server.requests) == 3


async def test_stream_dropped_mid_reply_ends_in_error_with_text_so_far(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(llm_max_retries=2)
    llm_server.enqueue(Scripted(deltas=["one ", "two ", "three"], drop_after=2))

    deltas = [d async for d in await engine.submit(KEY, "go")]
    reply = engine.reply_for(KEY)

    assert reply is not None
    assert reply.status is Status.ERROR
    assert "".join(deltas) == reply.text == "one two "
    assert reply.error is not None
    assert "cut off" in reply.error
    assert len(llm_server.requests) == 1  # never retried once text was shown

    await (await engine.submit(KEY, "again"))
    assert sent_messages(llm_server) == [{"role": "user", "content": "again"}]


async def test_unreachable_provider_is_an_error_not_an_exception(
    make_engine: EngineMaker,
) -> None:
    engine = make_engine(
        env={"LOCAL_BASE_URL": "http://127.0.0.1:9/v1"},
        llmconnect_model="local/x",
        llm_max_retries=0,
    )
    reply = await (await engine.submit(KEY, "hello?"))
    assert reply.status is Status.ERROR
    assert reply.error


# -- refusals -------------------------------------------------------------------------------------


async def test_input_over_the_limit_is_refused_stating_it(make_engine: EngineMaker) -> None:
    engine = make_engine(max_input_chars=10)
    with pytest.raises(Refused) as info:
        await engine.submit(KEY, "x" * 11)
    assert "11 characters" in info.value.user_message
    assert "the limit is 10" in info.value.user_message
    assert not engine.is_busy(KEY)

    reply = await engine.submit(KEY, "  " + "y" * 10 + "  ")  # surrounding space is not counted
    await reply
    assert reply.status is Status.COMPLETE


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
async def test_empty_prompt_is_refused_with_help(make_engine: EngineMaker, text: str) -> None:
    engine = make_engine()
    with pytest.raises(Refused) as info:
        await engine.submit(KEY, text)
    assert info.value.user_message == HELP_TEXT
    assert KEY not in engine.store  # type: ignore[operator]


async def test_blocked_user_and_channel_are_refused(make_engine: EngineMaker) -> None:
    engine = make_engine(blocked_users="troll", blocked_channels="general")

    with pytest.raises(Refused, match="not enabled in this channel"):
        await engine.submit(KEY, "hi", actor=Actor("friend"))
    with pytest.raises(Refused, match="not allowed to use this bot"):
        await engine.submit(OTHER, "hi", actor=Actor("troll"))

    assert not engine.is_busy(KEY)
    assert not engine.is_busy(OTHER)
    reply = await (await engine.submit(OTHER, "hi", actor=Actor("friend")))
    assert reply.status is Status.COMPLETE


async def test_a_thread_of_an_allowed_channel_is_served(make_engine: EngineMaker) -> None:
    engine = make_engine(allowed_channels="general")
    thread = ConversationKey("test", "general/1700000000.000100")

    reply = await (await engine.submit(thread, "hi", parent=KEY))
    assert reply.status is Status.COMPLETE
    with pytest.raises(Refused, match="not enabled in this channel"):
        await engine.submit(thread, "hi")  # without its parent, the thread id alone is unknown


async def test_per_user_rate_limit(make_engine: EngineMaker) -> None:
    clock = FakeClock()
    engine = make_engine(clock=clock, user_rate_limit=3, user_rate_window=60)
    alice, bob = Actor("alice"), Actor("bob")

    for n in range(3):
        await engine.submit(KEY, f"prompt {n}", actor=alice)
    with pytest.raises(Refused) as info:
        await engine.submit(KEY, "one too many", actor=alice)
    assert "too fast" in info.value.user_message
    assert "try again in 60 s" in info.value.user_message

    await engine.submit(KEY, "bob is fine", actor=bob)  # limits are per user

    await clock.advance(59.5)
    with pytest.raises(Refused) as info:
        await engine.submit(KEY, "still too early", actor=alice)
    assert "try again in 1 s" in info.value.user_message  # rounded up, never "0 s"

    await clock.advance(0.5)
    reply = await engine.submit(KEY, "allowed again", actor=alice)
    await reply
    assert reply.status is Status.COMPLETE


async def test_rate_limit_zero_means_unlimited(make_engine: EngineMaker) -> None:
    engine = make_engine(clock=FakeClock(), user_rate_limit=0, max_queued_prompts=30)
    replies = [await engine.submit(KEY, f"p{n}", actor=Actor("alice")) for n in range(30)]
    await asyncio.gather(*replies)
    assert all(r.status is Status.COMPLETE for r in replies)


# -- shutdown -------------------------------------------------------------------------------------


async def test_aclose_leaves_every_reply_final(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine: ChatEngine = local_engine(llmconnect_model="echo", options={"words": 100_000})
    llm_server.enqueue(Scripted(deltas=["hanging "], hang_after=1))
    await engine.set_model(OTHER, "local/fake")
    on_server = await engine.submit(OTHER, "hangs on the server")
    await streaming(on_server)  # loopback I/O first; the echo replies below only need ticks
    echoing = await engine.submit(KEY, "streaming")
    queued = await engine.submit(KEY, "queued behind it")
    await streaming(echoing)
    not_started = await engine.submit(ConversationKey("test", "third"), "not started yet")
    replies = [on_server, echoing, queued, not_started]
    assert [r.status for r in replies] == [
        Status.STREAMING,
        Status.STREAMING,
        Status.PENDING,
        Status.PENDING,
    ]

    await engine.aclose()

    statuses = [r.status for r in replies]
    assert all(r.done for r in replies)
    assert Status.PENDING not in statuses
    assert Status.STREAMING not in statuses
    assert statuses == [Status.CANCELLED] * 4
    assert not any(engine.is_busy(r.key) for r in replies)


async def test_latest_replies_are_bounded_like_the_store(make_engine: EngineMaker) -> None:
    engine = make_engine(max_conversations=3)
    keys = [ConversationKey("test", f"c{i}") for i in range(5)]
    for key in keys:
        await (await engine.submit(key, "hi"))
    assert [engine.reply_for(k) is not None for k in keys] == [False, False, True, True, True]


async def test_allowed_models_accept_a_prefix_pattern(make_engine: EngineMaker) -> None:
    engine = make_engine(
        env={"OPENROUTER_API_KEY": "or-test"},
        llmconnect_allowed_models="openrouter/meta-llama/*",
    )
    full = "openrouter/meta-llama/llama-3.1-8b-instruct"
    assert engine.validate_model(full) == full
    with pytest.raises(Refused):
        engine.validate_model("openrouter/mistralai/mistral-7b")


# --------------------------------------------------------------------------- reasoning


@pytest.mark.parametrize("way", ["reasoning_content", "reasoning", "think"])
async def test_reasoning_is_kept_on_the_reply_never_in_the_conversation(
    local_engine: EngineMaker, llm_server: FakeLLMServer, way: str
) -> None:
    clock = FakeClock(100.0)
    engine = local_engine(clock=clock)
    llm_server.enqueue(
        Scripted(deltas=["Forty", "-two."], reasoning=["Six ", "times seven."], reasoning_as=way),  # type: ignore[arg-type]
        Scripted(text="Again."),
    )
    reply = await engine.submit(KEY, "why?")
    events = [event async for event in reply.events()]
    await reply
    assert reply.text == "Forty-two."
    assert reply.reasoning_text == "Six times seven."
    assert reply.reasoning_since == 100.0  # the engine clock's
    kinds = [kind for kind, _ in events]
    assert kinds == sorted(kinds)  # every "reasoning" before the first "text"
    assert "".join(text for kind, text in events if kind == "text") == "Forty-two."
    assert "".join(text for kind, text in events if kind == "reasoning") == "Six times seven."
    conversation = await engine.get(KEY)
    assert conversation is not None
    assert [m.content for m in conversation.messages] == ["why?", "Forty-two."]
    await (await engine.submit(KEY, "more"))
    sent = str(llm_server.requests[-1].json)
    assert "Six" not in sent  # never sent back to the model


async def test_a_late_observer_gets_the_reasoning_then_the_text(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine()
    llm_server.enqueue(Scripted(deltas=["A", "B"], reasoning=["x", "y"]))
    reply = await engine.submit(KEY, "q")
    await reply
    assert [event async for event in reply.events()] == [("reasoning", "xy"), ("text", "AB")]


# -- attachments ----------------------------------------------------------------------------------


def _png(size: tuple[int, int] = (8, 6)) -> bytes:
    import io

    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.new("RGB", size, (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


async def test_an_image_reaches_a_vision_model_as_an_image_part_after_the_text(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    from core.attachments import prepare
    from tests.fakes.llm_server import ReceivedPart

    engine = local_engine(llmconnect_model="local/gpt-4o-mini")
    png = _png()
    reply = await (await engine.submit(KEY, "what is it?", attachments=[prepare("a.png", "", png)]))

    assert reply.status is Status.COMPLETE
    assert reply.notes == ()
    assert llm_server.requests[-1].parts() == [
        ReceivedPart("text", "text", text="what is it?"),
        ReceivedPart("image", "image_url", media_type="image/png", data=png),
    ]
    user = (await engine.conversation(KEY)).messages[0]
    assert [(a.name, a.kind) for a in user.attachments] == [("a.png", "image")]


async def test_a_text_model_gets_a_note_instead_of_the_image_and_a_text_file_inlined(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    from core.attachments import prepare

    engine = local_engine()  # local/fake: no vision
    files = [prepare("a.png", "image/png", _png()), prepare("x.py", "", b"print(1)\n")]
    await (await engine.submit(KEY, "look", attachments=files))

    (content,) = [m["content"] for m in sent_messages(llm_server) if m["role"] == "user"]
    assert content == (
        "look\n\n[image: a.png — this model does not read images]\n\nx.py\n```py\nprint(1)\n```"
    )


async def test_a_skipped_file_is_a_line_under_the_reply_and_the_text_is_answered(
    make_engine: EngineMaker,
) -> None:
    from core.attachments import AttachmentLimits, prepare
    from core.delivery import final_note

    engine = make_engine()
    big = prepare("big.png", "image/png", b"x" * 1025, AttachmentLimits(max_bytes=1024))
    doc = prepare("r.docx", "application/msword", b"x")
    reply = await (await engine.submit(KEY, "hello", attachments=[big, doc]))

    assert reply.text == echo_text("hello")
    assert final_note(reply) == (
        "Skipped big.png: larger than the 0.000977 MB limit.\n"
        "Skipped r.docx: this type of file is not read (images, text files and PDFs are)."
    )
    stored = (await engine.conversation(KEY)).messages[1]
    assert final_note(stored) == final_note(reply)  # kept with the reply (history shows it too)
    assert (await engine.conversation(KEY)).messages[0].attachments == ()


async def test_files_without_text_are_answered_and_only_skipped_files_are_refused_clearly(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    from core.attachments import prepare

    engine = local_engine()
    reply = await (await engine.submit(KEY, "  ", attachments=[prepare("n.md", "", b"# hi")]))
    assert reply.status is Status.COMPLETE
    assert sent_messages(llm_server)[-1] == {"role": "user", "content": "n.md\n```md\n# hi\n```"}

    with pytest.raises(Refused) as refused:
        await engine.submit(KEY, "", attachments=[prepare("a.bin", "", b"x")])
    assert refused.value.user_message == (
        "Skipped a.bin: this type of file is not read (images, text files and PDFs are).\n"
        "No text and no file I can read: nothing to answer."
    )
    with pytest.raises(Refused, match="Ask me anything"):
        await engine.submit(KEY, "")


async def test_images_stay_for_the_latest_turns_with_images_then_become_their_names(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    from core.attachments import prepare

    engine = local_engine(llmconnect_model="local/gpt-4o-mini", history_max_images=1)
    await (await engine.submit(KEY, "one", attachments=[prepare("1.png", "", _png())]))
    await (await engine.submit(KEY, "two", attachments=[prepare("2.png", "", _png())]))

    request = llm_server.requests[-1]
    assert [p.kind for p in request.parts(0)] == ["text"]  # the first turn's image: its name
    assert request.parts(0)[0].text == "one\n\n[image: 1.png]"
    assert [p.kind for p in request.parts()] == ["text", "image"]
    first = (await engine.conversation(KEY)).messages[0]
    assert first.attachments[0].data == ""  # its bytes are dropped from the store


async def test_history_max_images_zero_still_sends_the_current_image(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    from core.attachments import prepare

    engine = local_engine(llmconnect_model="local/gpt-4o-mini", history_max_images=0)
    await (await engine.submit(KEY, "one", attachments=[prepare("1.png", "", _png())]))
    assert [p.kind for p in llm_server.requests[-1].parts()] == ["text", "image"]
    await (await engine.submit(KEY, "two"))
    assert llm_server.requests[-1].parts(0)[0].text == "one\n\n[image: 1.png]"


async def test_a_pdf_reaches_a_text_model_as_its_text(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    from core.attachments import prepare
    from tests.llmconnect.test_parts import make_pdf

    engine = local_engine()
    pdf = prepare("r.pdf", "application/pdf", make_pdf("Quarterly numbers"))
    await (await engine.submit(KEY, "sum up", attachments=[pdf]))
    (content,) = [m["content"] for m in sent_messages(llm_server) if m["role"] == "user"]
    assert content.startswith("sum up\n\n")
    assert "Quarterly numbers" in content


async def test_the_llm_is_asked_only_once_the_front_ends_first_sign_is_shown(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    # On a fake clock: HEARD_WAIT never runs out by itself here.
    engine = local_engine(clock=FakeClock())
    shown = asyncio.get_running_loop().create_future()
    reply = await engine.submit(KEY, "hello", heard=shown)
    await wait_for(lambda: reply.message.status is Status.STREAMING)
    for _ in range(20):
        await asyncio.sleep(0)  # every turn the reply's task could use to ask
    assert llm_server.requests == []

    shown.set_result(True)
    await reply
    assert reply.status is Status.COMPLETE
    assert len(llm_server.requests) == 1


async def test_a_sign_that_never_comes_holds_the_llm_back_heard_wait_at_most(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = local_engine(clock=clock)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    reply = await engine.submit(KEY, "hello", heard=never)
    await wait_for(lambda: reply.message.status is Status.STREAMING)
    await clock.advance(HEARD_WAIT - 0.01)
    for _ in range(20):
        await asyncio.sleep(0)
    assert llm_server.requests == []

    await clock.advance(0.01)
    await reply
    assert reply.status is Status.COMPLETE
    assert not never.done()  # the front end's own: never cancelled by the engine
    never.cancel()


async def test_a_failed_sign_does_not_fail_the_reply(local_engine: EngineMaker) -> None:
    async def fails() -> None:
        raise RuntimeError("the platform refused the typing indicator")

    reply = await local_engine().submit(KEY, "hello", heard=asyncio.ensure_future(fails()))
    await reply
    assert reply.status is Status.COMPLETE
    assert reply.text == "You said: hello"
