"""AsyncAPIClient scenarios against the fake server: history, streaming, finish/usage, options,
cancellation and concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from llmconnect import (
    APIClientFactory,
    LLMError,
    ProviderUnavailableError,
    ReplyStream,
    RetryPolicy,
    StreamInterruptedError,
    Usage,
)
from llmconnect.errors import AuthenticationError, InvalidRequestError
from tests.fakes.llm_server import Fail, FakeLLMServer, RawStream, Reply, openai_stream_body

from .conftest import (
    ClientMaker,
    SleepRecorder,
    TrackingTransport,
    collect,
    reply,
    wait_until,
)

HISTORY = [
    {"role": "user", "content": "earlier question"},
    {"role": "assistant", "content": "earlier answer"},
]
UNICODE = "Café crème, naïve façade — 😀🎉 日本語 ünïcödé ok"

# --------------------------------------------------------------------------- history


async def test_chat_returns_joined_text_and_commits_both_turns(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client()
    llm_server.enqueue(Reply(text="Hello there, friend."))

    text = await client.chat("hi")

    assert text == "Hello there, friend."
    assert client.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello there, friend."},
    ]


async def test_next_request_carries_the_whole_history(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client(messages=HISTORY)
    llm_server.enqueue(Reply(text="first reply"), Reply(text="second reply"))

    await client.chat("one")
    await client.chat("two")

    sent = llm_server.requests[-1].json["messages"]
    assert sent == [
        *HISTORY,
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first reply"},
        {"role": "user", "content": "two"},
    ]
    assert client.messages == [*sent, {"role": "assistant", "content": "second reply"}]


async def test_stream_commits_history_only_when_the_reply_completes(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client(messages=HISTORY)
    llm_server.enqueue(Reply(deltas=["Once ", "upon ", "a time."]))

    seen_mid_stream: list[list[dict[str, str]]] = []
    deltas: list[str] = []
    async for delta in await client.chat("story", stream=True):
        deltas.append(delta)
        seen_mid_stream.append(list(client.messages))

    assert deltas == ["Once ", "upon ", "a time."]
    assert all(snapshot == HISTORY for snapshot in seen_mid_stream)
    assert client.messages == [
        *HISTORY,
        {"role": "user", "content": "story"},
        {"role": "assistant", "content": "Once upon a time."},
    ]


async def test_reset_clears_history(llm_server: FakeLLMServer, make_client: ClientMaker) -> None:
    client = make_client(messages=HISTORY)
    await client.chat("hi")
    client.reset()
    assert client.messages == []
    await client.chat("again")
    assert llm_server.requests[-1].json["messages"] == [{"role": "user", "content": "again"}]


FAILURES: dict[str, list[Any]] = {
    "500-retries-exhausted": [Fail(500), Fail(500), Fail(500)],
    "401": [Fail(401)],
    "drop-after-2": [Reply(text="one two three four", drop_after=2)],
    "malformed-chunk": [Reply(text="one two three four", malformed_after=2)],
    "in-stream-error": [Reply(text="one two three four", error_after=2)],
}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("actions", list(FAILURES.values()), ids=list(FAILURES))
async def test_error_leaves_history_unchanged(
    llm_server: FakeLLMServer, make_client: ClientMaker, actions: list[Any], stream: bool
) -> None:
    client = make_client(messages=HISTORY)
    llm_server.enqueue(Reply(text="ok", finish_reason="length", usage=(3, 4)))
    await client.chat("before")
    before = [dict(m) for m in client.messages]
    llm_server.enqueue(*actions)

    received: list[str] = []
    with pytest.raises(LLMError):
        await reply(client, "doomed", stream, received)

    assert client.messages == before
    assert all(m["content"] != "doomed" for m in client.messages)
    # the previous reply's metadata is not overwritten by the failed one
    assert client.finish_reason == "length"
    assert client.usage is not None
    assert client.usage.total_tokens == 7
    if stream:  # the deltas before the fault reached the caller, and nothing else
        assert received == ([] if isinstance(actions[0], Fail) else ["one ", "two "])


async def test_failed_reply_does_not_block_the_next_one(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client()
    llm_server.enqueue(Reply(text="a b c", drop_after=1), Reply(text="fine"))
    with pytest.raises(StreamInterruptedError):
        await client.chat("x")
    assert await client.chat("y") == "fine"
    assert client.messages == [
        {"role": "user", "content": "y"},
        {"role": "assistant", "content": "fine"},
    ]


# --------------------------------------------------------------------------- cancellation


async def test_aclose_mid_stream_releases_connection_and_keeps_history(
    llm_server: FakeLLMServer, make_client: ClientMaker, transport: TrackingTransport
) -> None:
    client = make_client(messages=HISTORY)
    llm_server.enqueue(Reply(text="first second third", hang_after=1))

    replies = await client.chat("hi", stream=True)
    assert await replies.__anext__() == "first "
    assert llm_server.open_streams == 1
    await replies.aclose()

    # closed at once on our side, not whenever the garbage collector gets to it
    assert transport.open == 0
    assert await wait_until(lambda: llm_server.open_streams == 0 and llm_server.disconnects == 1)
    assert client.messages == HISTORY
    assert client.finish_reason is None
    # the client is usable again
    assert await client.chat("next") == "You said: next"


async def test_cancelling_the_consuming_task_releases_connection_and_keeps_history(
    llm_server: FakeLLMServer, make_client: ClientMaker, transport: TrackingTransport
) -> None:
    client = make_client(messages=HISTORY)
    llm_server.enqueue(Reply(text="first second third", hang_after=1))
    received: list[str] = []

    async def consume() -> None:
        async for delta in await client.chat("hi", stream=True):
            received.append(delta)

    task = asyncio.create_task(consume())
    assert await wait_until(lambda: bool(received))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert received == ["first "]
    assert transport.open == 0
    assert await wait_until(lambda: llm_server.open_streams == 0 and llm_server.disconnects == 1)
    assert client.messages == HISTORY
    assert await client.chat("next") == "You said: next"


async def test_aclosing_context_manager_stops_the_stream(
    llm_server: FakeLLMServer, make_client: ClientMaker, transport: TrackingTransport
) -> None:
    client = make_client()
    llm_server.enqueue(Reply(text="a b c d", hang_after=2))
    async with contextlib.aclosing(await client.chat("hi", stream=True)) as replies:
        async for delta in replies:
            if delta == "b ":
                break
    assert transport.open == 0
    assert await wait_until(lambda: llm_server.disconnects == 1)
    assert client.messages == []


# --------------------------------------------------------------------------- streaming


async def test_one_delta_per_server_event(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    deltas = ["Hel", "lo", ", ", "wor", "ld", "!"]
    llm_server.enqueue(Reply(deltas=deltas))
    assert await collect(make_client(), "hi") == deltas


@pytest.mark.parametrize(
    "fault",
    [
        {},
        {"write_sizes": 1},
        {"write_sizes": [3, 7, 1]},
        {"crlf": True},
        {"keepalive": True},
        {"crlf": True, "keepalive": True, "write_sizes": [2, 5]},
    ],
    ids=["plain", "bytewise", "3-7-1", "crlf", "keepalive", "all"],
)
async def test_how_bytes_arrive_does_not_change_the_text(
    llm_server: FakeLLMServer, make_client: ClientMaker, fault: dict[str, Any]
) -> None:
    deltas = ["Café ", "crème ", "😀", "🎉 ", "日本", "語 ", "naïve"]
    llm_server.enqueue(Reply(deltas=deltas, **fault))
    client = make_client()
    received = await collect(client, "hi")
    assert received == deltas
    assert client.messages[-1]["content"] == "".join(deltas)


async def test_unicode_split_inside_characters_survives(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client()
    # one byte per write: every multi-byte character arrives in pieces
    llm_server.enqueue(Reply(text=UNICODE, write_sizes=1))
    assert await client.chat("hi") == UNICODE
    assert "\ufffd" not in client.messages[-1]["content"]


async def test_delayed_events_stream_incrementally(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    """A delta is handed over as soon as its event arrives, before the next one is sent."""
    client = make_client()
    llm_server.enqueue(Reply(deltas=["a", "b", "c"], hang_after=1))
    replies = await client.chat("hi", stream=True)
    # the server sends one delta then goes silent: it must still reach us
    assert await asyncio.wait_for(replies.__anext__(), 5) == "a"
    await replies.aclose()


# --------------------------------------------------------------------------- finish and usage


async def test_finish_reason_stop(llm_server: FakeLLMServer, make_client: ClientMaker) -> None:
    client = make_client()
    await client.chat("hi")
    assert client.finish_reason == "stop"
    assert client.truncated is False


async def test_finish_reason_length_marks_truncated(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client()
    llm_server.enqueue(Reply(text="cut sho", finish_reason="length"))
    assert await client.chat("hi") == "cut sho"
    assert client.finish_reason == "length"
    assert client.truncated is True
    llm_server.enqueue(Reply(text="whole"))
    await client.chat("again")
    assert client.truncated is False


async def test_usage_reported_with_include_usage(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client()
    llm_server.enqueue(Reply(text="a b c", usage=(11, 5)))
    await client.chat("hi")
    assert llm_server.requests[-1].json["stream_options"] == {"include_usage": True}
    assert client.usage is not None
    assert (client.usage.input_tokens, client.usage.output_tokens) == (11, 5)
    assert client.usage.total_tokens == 16


async def test_usage_none_when_provider_reports_none(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client()
    llm_server.enqueue(Reply(text="first", usage=(2, 2)))
    await client.chat("hi")
    assert client.usage is not None
    llm_server.enqueue(RawStream(openai_stream_body(["no ", "usage"])))
    assert await client.chat("again") == "no usage"
    assert client.usage is None
    assert client.finish_reason == "stop"


# --------------------------------------------------------------------------- the reply stream


async def test_reply_stream_carries_its_own_outcome(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client()
    llm_server.enqueue(
        Reply(deltas=["cut ", "sho"], finish_reason="length", usage=(3, 2)),
        Reply(deltas=["whole"], usage=(4, 1)),
    )
    first = await client.chat("one", stream=True)
    assert isinstance(first, ReplyStream)
    assert isinstance(first, AsyncIterator)
    assert (first.done, first.text, first.finish_reason, first.usage) == (False, "", None, None)
    assert [delta async for delta in first] == ["cut ", "sho"]
    second = await client.chat("two", stream=True)
    assert [delta async for delta in second] == ["whole"]

    # each reply keeps its own outcome; the client's are the last reply's
    assert (first.done, first.text, first.finish_reason, first.truncated) == (
        True,
        "cut sho",
        "length",
        True,
    )
    assert first.usage == Usage(3, 2)
    assert (second.text, second.finish_reason, second.truncated) == ("whole", "stop", False)
    assert second.usage == Usage(4, 1)
    assert (client.finish_reason, client.usage, client.truncated) == ("stop", Usage(4, 1), False)
    assert "done" in repr(first)
    assert "cut" not in repr(first)


async def test_reply_stream_text_grows_while_streaming(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client()
    llm_server.enqueue(Reply(deltas=["a", "b", "c"]))
    replies = await client.chat("hi", stream=True)
    seen = []
    async for _ in replies:
        seen.append((replies.text, replies.done))
    assert seen == [("a", False), ("ab", False), ("abc", False)]
    assert replies.done


async def test_reply_stream_as_async_context_manager_closes_early(
    llm_server: FakeLLMServer, make_client: ClientMaker, transport: TrackingTransport
) -> None:
    client = make_client(messages=HISTORY)
    llm_server.enqueue(Reply(text="a b c d", hang_after=2))
    async with await client.chat("hi", stream=True) as replies:
        async for delta in replies:
            if delta == "b ":
                break
    assert transport.open == 0
    assert await wait_until(lambda: llm_server.disconnects == 1)
    # a reply cut short is not done and has no outcome; the history is untouched
    assert (replies.done, replies.text, replies.finish_reason) == (False, "a b ", None)
    assert client.messages == HISTORY
    assert client.finish_reason is None


async def test_failed_reply_stream_has_no_outcome(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client()
    llm_server.enqueue(
        Reply(text="ok", finish_reason="length"), Reply(text="one two three", drop_after=1)
    )
    await client.chat("before")
    replies = await client.chat("doomed", stream=True)
    with pytest.raises(StreamInterruptedError):
        async for _ in replies:
            pass
    assert (replies.done, replies.text, replies.finish_reason, replies.usage) == (
        False,
        "one ",
        None,
        None,
    )
    assert client.finish_reason == "length"  # still the last completed reply's


async def test_an_abandoned_reply_stream_is_closed_without_the_cycle_collector(
    llm_server: FakeLLMServer, make_client: ClientMaker, transport: TrackingTransport
) -> None:
    """Dropped mid-reply without aclose(): its connection is released as soon as the last
    reference goes, as a plain generator's would be (no reference cycle to wait for)."""
    client = make_client()
    llm_server.enqueue(Reply(text="first second third", hang_after=1))
    gc.disable()
    try:
        replies = await client.chat("hi", stream=True)
        assert await replies.__anext__() == "first "
        del replies
        assert await wait_until(lambda: transport.open == 0)
    finally:
        gc.enable()
    assert await wait_until(lambda: llm_server.disconnects == 1)
    assert client.messages == []
    assert await client.chat("next") == "You said: next"


async def test_one_reply_stream_at_a_time_per_client(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    """A stream read while another one streams is refused; one made afterwards works
    (making a stream does not claim the client, reading it does)."""
    client = make_client()
    llm_server.enqueue(Reply(deltas=["one ", "two"]), Reply(deltas=["three"]))
    first = await client.chat("first", stream=True)
    later = await client.chat("later", stream=True)
    assert await first.__anext__() == "one "
    with pytest.raises(RuntimeError, match="already streaming"):
        await later.__anext__()
    assert [d async for d in first] == ["two"]
    again = await client.chat("later", stream=True)
    assert [d async for d in again] == ["three"]
    assert not later.done
    assert again.done


# --------------------------------------------------------------------------- options


async def test_system_prompt_and_options_reach_the_request(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client(
        "openai",
        "gpt-test",
        system="Be brief.",
        temperature=0.25,
        max_tokens=42,
        top_p=0.9,
        stop=["\n\n"],
        seed=7,
    )
    await client.chat("hi")
    body = llm_server.requests[-1].json
    assert body["model"] == "gpt-test"
    assert body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1:] == [{"role": "user", "content": "hi"}]
    assert body["temperature"] == 0.25
    assert body["max_tokens"] == 42
    assert body["top_p"] == 0.9
    assert body["stop"] == ["\n\n"]
    assert body["seed"] == 7
    # the system prompt is not part of the stored history
    assert client.messages[0] == {"role": "user", "content": "hi"}


async def test_client_properties(make_client: ClientMaker, llm_server: FakeLLMServer) -> None:
    client = make_client("groq", "llama-x")
    assert client.provider == "groq"
    assert client.model == "groq/llama-x"
    assert client.base_url == llm_server.openai_base_url
    assert repr(client) == "AsyncAPIClient(model='groq/llama-x', messages=0)"


# --------------------------------------------------------------------------- concurrency


async def test_second_chat_while_streaming_raises(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client()
    llm_server.enqueue(Reply(deltas=["one ", "two ", "three"]))
    replies = await client.chat("first", stream=True)
    assert await replies.__anext__() == "one "

    with pytest.raises(RuntimeError, match="already streaming"):
        await client.chat("second")
    with pytest.raises(RuntimeError, match="already streaming"):
        await collect(client, "third")

    rest = [delta async for delta in replies]
    assert rest == ["two ", "three"]
    assert client.messages == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one two three"},
    ]
    assert len(llm_server.requests) == 1
    assert await client.chat("now") == "You said: now"


async def test_fifty_clients_stream_concurrently(
    llm_server: FakeLLMServer, http: httpx.AsyncClient, sleeps: SleepRecorder
) -> None:
    clients = [
        APIClientFactory.create(
            model=f"openai/m{i}",
            base_url=llm_server.openai_base_url,
            api_key="k",
            env={},
            http_client=http,
            retry=RetryPolicy(max_retries=0, sleep=sleeps),
        )
        for i in range(50)
    ]

    async def run(i: int) -> str:
        return "".join(await collect(clients[i], f"prompt number {i} ✓"))

    results = await asyncio.wait_for(asyncio.gather(*(run(i) for i in range(50))), 20)

    assert results == [f"You said: prompt number {i} ✓" for i in range(50)]
    assert len(llm_server.requests) == 50
    assert sorted(r.json["model"] for r in llm_server.requests) == sorted(
        f"m{i}" for i in range(50)
    )
    for i, client in enumerate(clients):
        assert client.messages[-1]["content"] == f"You said: prompt number {i} ✓"
    assert sleeps.delays == []
    assert await wait_until(lambda: llm_server.open_streams == 0)


async def test_error_on_one_client_does_not_affect_another(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    a, b = make_client(), make_client()
    llm_server.enqueue(Fail(401), Reply(text="b ok"))
    with pytest.raises(AuthenticationError):
        await a.chat("x")
    assert await b.chat("y") == "b ok"
    assert a.messages == []


async def test_unavailable_then_recovered_with_no_real_sleep(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    client = make_client()
    llm_server.enqueue(Fail(503), Fail(503), Fail(503))
    with pytest.raises(ProviderUnavailableError):
        await client.chat("x")
    assert len(sleeps.delays) == 2
    assert await client.chat("y") == "You said: y"


# --------------------------------------------------------------------------- refused options


async def test_a_refused_request_names_the_options_sent(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    llm_server.enqueue(Fail(400, body={"error": {"message": "Unsupported parameter"}}))
    client = make_client("openai", "o3", temperature=0.3, reasoning_effort="high")
    with pytest.raises(InvalidRequestError) as info:
        await client.chat("hi")
    message = info.value.user_message
    assert message.endswith("(options sent: temperature, reasoning_effort)")
    assert "0.3" not in message
    assert "high" not in message
    assert len(llm_server.requests) == 1  # a 400 is not retried


async def test_a_refused_request_without_options_says_no_options(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    llm_server.enqueue(Fail(400))
    with pytest.raises(InvalidRequestError) as info:
        await make_client("openai", "m").chat("hi")
    assert "options sent" not in info.value.user_message
