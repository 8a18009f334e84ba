"""A provider that misbehaves on the wire: split surrogates, trickles, floods, echoed keys, model ids
that try to become URLs, a proxy that ignores ``stream: true``, and the CLI's exit status.

Everything runs over loopback against :class:`FakeLLMServer`; time limits are small (tenths of a
second) and only outcomes are asserted (which error, what text was kept), never durations.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.conversations import Status
from core.settings import SettingsError, load_settings
from llmconnect import (
    APIClientFactory,
    AsyncAPIClient,
    ConfigurationError,
    EventTooLargeError,
    InvalidModelIdError,
    LLMError,
    LLMTimeoutError,
    RetryPolicy,
    StreamInterruptedError,
    TimeLimitError,
    Timeouts,
    validate_model_id,
)
from tests.bots.test_console import run_cli_async
from tests.fakes.llm_server import Fail, FakeLLMServer, RawStream, Reply
from tests.llmconnect import conftest as llm_fixtures
from tests.llmconnect.conftest import (
    KEY,
    ClientMaker,
    SleepRecorder,
    TrackingTransport,
    base_url_for,
)

from .conftest import MARKER, ChatMaker, assert_consistent, chat_messages

# tests/llmconnect's fixtures, reused by name (its ``http`` would shadow the bots' own ``http``).
llm_server = llm_fixtures.llm_server
sleeps = llm_fixtures.sleeps

WORDS = "one two three four five six seven eight"
#: Small limits keep these tests quick; a test that would otherwise hang is cut by GUARD.
IDLE = 0.3
GUARD = 20.0


@pytest.fixture(params=["httpx", "aiohttp"])
async def client_http(
    llm_server: FakeLLMServer, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    """tests/llmconnect's ``http`` under another name (the bots' fixtures here own ``http``)."""
    transport = TrackingTransport(request.param)
    async with httpx.AsyncClient(transport=transport) as client:
        yield client
    assert transport.open == 0, f"{transport.open} response(s) left open by the test"


@pytest.fixture
def make_client(
    llm_server: FakeLLMServer, client_http: httpx.AsyncClient, sleeps: SleepRecorder
) -> ClientMaker:
    """A client on the fake LLM server, as in tests/llmconnect (``make_client("gemini", "m")``)."""

    def make(provider: str = "openai", model: str = "fake", **kwargs: Any) -> AsyncAPIClient:
        kwargs.setdefault("base_url", base_url_for(llm_server, provider))
        kwargs.setdefault("api_key", KEY)
        kwargs.setdefault("env", {})
        kwargs.setdefault("http_client", client_http)
        kwargs.setdefault("retry", RetryPolicy(max_retries=2, sleep=sleeps))
        return APIClientFactory.create(model=f"{provider}/{model}", **kwargs)

    return make


async def failed_reply(client: Any, prompt: str = "hi") -> tuple[LLMError, list[str]]:
    """Stream one reply that must fail: its error and the deltas that arrived first."""
    received: list[str] = []

    async def consume() -> None:
        async with asyncio.timeout(GUARD):  # a guard, not an assertion: never hang the suite
            async for delta in await client.chat(prompt, stream=True):
                received.append(delta)

    with pytest.raises(LLMError) as info:
        await consume()
    return info.value, received


# --------------------------------------------------------------------------- surrogates (3)


def sse_body(provider: str, texts: list[str]) -> bytes:
    """A minimal stream for ``provider`` whose texts are JSON-escaped (``\\ud83d``): how a
    provider written in a language with UTF-16 strings can cut an emoji in two."""
    events: list[tuple[str, dict[str, Any]]] = []
    if provider == "openai":
        events = [("", {"choices": [{"index": 0, "delta": {"content": t}}]}) for t in texts]
        events.append(("", {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    elif provider == "anthropic":
        events = [
            ("content_block_delta", {"delta": {"type": "text_delta", "text": t}}) for t in texts
        ]
        events.append(("message_delta", {"delta": {"stop_reason": "end_turn"}}))
        events.append(("message_stop", {}))
    else:
        events = [("", {"candidates": [{"content": {"parts": [{"text": t}]}}]}) for t in texts]
        events.append(("", {"candidates": [{"finishReason": "STOP"}]}))
    out = []
    for name, payload in events:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {json.dumps(payload)}\n\n")  # ensure_ascii: \ud83d escapes
    if provider == "openai":
        out.append("data: [DONE]\n\n")
    return "".join(out).encode()


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["\ud83d", "\ude00"], "😀"),
        (["a \ud83d", "\ude00 b"], "a 😀 b"),
        (["\ud83d", "x"], "\ufffdx"),
        (["x\ude00", "y"], "x\ufffdy"),
        (["end \ud83d"], "end \ufffd"),
        (["\ud83d\ud83d", "\ude00"], "\ufffd😀"),
        (["é", "\ud83d", "", "\ude00!"], "é😀!"),
    ],
    ids=["pair", "pair-in-text", "high-then-text", "lone-low", "high-at-end", "two-highs", "gap"],
)
async def test_surrogates_split_across_chunks_are_joined_or_replaced(
    llm_server: FakeLLMServer,
    make_client: ClientMaker,
    provider: str,
    texts: list[str],
    expected: str,
) -> None:
    llm_server.enqueue(RawStream(sse_body(provider, texts)))
    client = make_client(provider, "m")
    deltas = [d async for d in await client.chat("hi", stream=True)]
    assert "".join(deltas) == expected
    for delta in deltas:
        delta.encode("utf-8")  # never raises: only valid Unicode leaves llmconnect
    assert client.messages[-1]["content"] == expected


# --------------------------------------------------------------------------- trickles (4)


async def test_keepalive_comments_do_not_keep_a_silent_reply_alive(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    llm_server.enqueue(Reply(text=WORDS, hang_after=2, keepalive_every=0.05))
    client = make_client(timeouts=Timeouts(idle=IDLE))
    exc, received = await failed_reply(client)
    assert isinstance(exc, LLMTimeoutError)
    assert received == ["one ", "two "]
    assert client.messages == []


async def test_one_byte_at_a_time_does_not_keep_a_reply_alive(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    # Every byte arrives well within IDLE, but no whole event ever does within it.
    llm_server.enqueue(*[Reply(text=WORDS, write_sizes=1, write_delay=0.02) for _ in range(3)])
    client = make_client(timeouts=Timeouts(idle=IDLE))
    exc, received = await failed_reply(client)
    assert isinstance(exc, LLMTimeoutError)
    assert received == []
    assert len(llm_server.requests) == 3  # nothing shown yet: retried, each cut the same way


async def test_a_reply_longer_than_the_time_limit_is_cut_and_keeps_its_text(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    deltas = [f"w{i} " for i in range(400)]
    llm_server.enqueue(Reply(deltas=deltas, delay=0.01))
    client = make_client(timeouts=Timeouts(idle=IDLE, max_duration=0.5))
    exc, received = await failed_reply(client)
    assert isinstance(exc, TimeLimitError)
    assert isinstance(exc, LLMTimeoutError)
    assert exc.retryable is False
    assert 0 < len(received) < len(deltas)
    assert received == deltas[: len(received)]  # the text so far, exact
    assert "time limit" in exc.user_message
    assert client.messages == []  # an error: the client's history is left as it was
    assert len(llm_server.requests) == 1


async def test_a_silent_reply_hits_the_time_limit_even_while_retrying(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    # Every attempt goes silent before its first delta; the time limit spans all attempts.
    llm_server.enqueue(*[Reply(text=WORDS, hang_after=0) for _ in range(20)])
    client = make_client(
        timeouts=Timeouts(idle=60.0, max_duration=0.4),
        retry=RetryPolicy(max_retries=10, sleep=asyncio.sleep, base_delay=0.01),
    )
    exc, received = await failed_reply(client)
    assert isinstance(exc, TimeLimitError)
    assert received == []


async def test_a_slow_reader_is_not_the_provider_going_silent(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    # The caller takes longer than the idle timeout over each delta: no timeout, and the
    # caller's own awaits are never cancelled by the watch.
    llm_server.enqueue(Reply(deltas=["a ", "b ", "c"]))
    client = make_client(timeouts=Timeouts(idle=0.1))
    received = []
    async for delta in await client.chat("hi", stream=True):
        await asyncio.sleep(0.25)
        received.append(delta)
    assert received == ["a ", "b ", "c"]


async def test_the_time_limit_also_ends_a_reply_whose_reader_is_slow(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    llm_server.enqueue(Reply(deltas=[f"w{i} " for i in range(50)]))
    # Room for the first delta even on a busy machine (the limit counts from the request), and
    # a reader slow enough that 50 deltas could never all fit in it.
    client = make_client(timeouts=Timeouts(idle=2.0, max_duration=1.0))
    received: list[str] = []

    async def read_slowly() -> None:
        async for delta in await client.chat("hi", stream=True):
            await asyncio.sleep(0.1)  # the caller's own wait: never cancelled by the limit
            received.append(delta)

    with pytest.raises(TimeLimitError):
        await read_slowly()
    assert 0 < len(received) < 50


@pytest.mark.parametrize("chunk", [b"1", b"[]", b'"text"', b'{"choices": 5}', b"null"])
async def test_a_chunk_of_the_wrong_shape_is_a_malformed_chunk(
    llm_server: FakeLLMServer, make_client: ClientMaker, chunk: bytes
) -> None:
    llm_server.enqueue(RawStream(b"data: " + chunk + b"\n\n"))
    exc, _ = await failed_reply(make_client(retry=RetryPolicy(max_retries=0)))
    assert isinstance(exc, StreamInterruptedError)
    assert "malformed" in str(exc)


async def test_time_limit_cut_through_a_bot_keeps_the_text_with_a_note(
    make_chat: ChatMaker,
) -> None:
    chat = await make_chat(llm_max_duration=0.5, llm_idle_timeout=IDLE)
    deltas = [f"w{i} " for i in range(400)]
    chat.llm.enqueue(Reply(deltas=deltas, delay=0.01))
    asked = await chat.ask("question one")
    texts = await chat.settled(asked, tries=3000)
    reply = chat.engine.reply_for(chat.key)
    assert reply is not None
    assert reply.status is Status.ERROR
    assert len(texts) == 1, texts
    head, _, note = texts[0].rpartition("\n")
    assert head
    assert "".join(deltas).startswith(head)  # the text so far, shown
    assert note.startswith("⚠️ The reply was cut at the time limit")
    assert MARKER not in texts[0]
    # Like every error, the cut reply and its question are not sent to the LLM again.
    nxt = await chat.ask("and now?")
    await chat.answer(nxt, "You said: and now?")
    last = chat_messages(chat.llm)[-1]
    assert last == [{"role": "user", "content": "and now?"}]
    assert_consistent(last)


# --------------------------------------------------------------------------- event size (4)


def one_event(content: str) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    return f"data: {json.dumps(chunk)}\n".encode()


def stream_with(event: bytes) -> bytes:
    done = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    return event + b"\n" + done


@pytest.mark.parametrize("write_sizes", [None, 1000], ids=["one-write", "pieces"])
async def test_event_size_limit_exact(
    llm_server: FakeLLMServer, make_client: ClientMaker, write_sizes: int | None
) -> None:
    event = one_event("x" * 5000)
    limit = len(event)  # the event's line with its line ending; the blank line is not counted
    llm_server.enqueue(RawStream(stream_with(event), write_sizes=write_sizes))
    assert await make_client(max_event_bytes=limit).chat("hi") == "x" * 5000

    llm_server.enqueue(RawStream(stream_with(event), write_sizes=write_sizes))
    client = make_client(max_event_bytes=limit - 1)
    exc, received = await failed_reply(client)
    assert isinstance(exc, EventTooLargeError)
    assert isinstance(exc, StreamInterruptedError)
    assert exc.retryable is False
    assert exc.provider == "openai"
    assert str(limit - 1) in str(exc)
    assert received == []
    assert len(llm_server.requests) == 2  # not retried


async def test_an_endless_line_fails_cleanly(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    # 8 MB without a newline: the reply fails once the buffer passes the limit.
    llm_server.enqueue(RawStream(b"data: " + b"x" * 8_000_000, write_sizes=65536))
    exc, _ = await failed_reply(make_client(max_event_bytes=1 << 20))
    assert isinstance(exc, EventTooLargeError)


async def test_event_size_limit_through_a_bot(make_chat: ChatMaker) -> None:
    chat = await make_chat(llm_max_event_bytes=4096)
    chat.llm.enqueue(Reply(deltas=["short ", "y" * 5000]))
    asked = await chat.ask("question one")
    texts = await chat.settled(asked)
    assert len(texts) == 1, texts
    assert texts[0].startswith("short \n⚠️ The provider sent a reply piece larger than")


@pytest.mark.parametrize(
    ("variable", "good", "bad"),
    [("LLM_MAX_EVENT_BYTES", "1024", "1023"), ("LLM_MAX_DURATION", "0.01", "0")],
)
def test_limit_settings_are_checked(
    monkeypatch: pytest.MonkeyPatch, variable: str, good: str, bad: str
) -> None:
    monkeypatch.setenv(variable, good)
    settings = load_settings()
    if variable == "LLM_MAX_DURATION":
        assert settings.timeouts().max_duration == float(good)
    else:
        assert settings.llm_max_event_bytes == int(good)
    monkeypatch.setenv(variable, bad)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_limit_defaults() -> None:
    settings = load_settings()
    assert settings.llm_max_event_bytes == 1 << 20
    assert settings.timeouts().max_duration == 600.0


# --------------------------------------------------------------------------- echoed keys (5)

SECRET = "sk-AU7q9ZpL3mW8xK2vN5bR"


def windows(secret: str, size: int = 4) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


async def test_a_key_echoed_anywhere_in_a_long_error_never_shows(
    llm_server: FakeLLMServer,
    make_client: ClientMaker,
    sleeps: SleepRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    pieces = windows(SECRET)
    for offset in range(401):
        message = "e" * offset + f"key={SECRET}" + " ." * 300
        body = {"error": {"message": message, "type": "server_error", "code": None}}
        llm_server.enqueue(Fail(500, body=body), Fail(500, body=body))
        client = make_client(api_key=SECRET, retry=RetryPolicy(max_retries=1, sleep=sleeps))
        exc, _ = await failed_reply(client)
        seen = " ".join([str(exc), repr(exc), exc.user_message, exc.message, repr(exc.args)])
        leaked = [p for p in pieces if p in seen]
        assert not leaked, (offset, leaked)
    assert caplog.records
    leaked = [p for p in pieces if p in caplog.text]
    assert not leaked, leaked


# --------------------------------------------------------------------------- model ids (7)


@pytest.mark.parametrize(
    "model",
    [
        "gemini/../../admin/delete?x=",
        "gemini/../admin",
        "gemini/models/..",
        "gemini/a?b",
        "gemini/a#b",
        "gemini/a%2e%2e",
        "gemini/a b",
        "gemini/a\nb",
        "gemini/é",
        "gemini/a//b",
        "gemini/a/",
        "gemini/./a",
    ],
)
async def test_unsafe_model_ids_are_refused_before_any_request(
    llm_server: FakeLLMServer, make_client: ClientMaker, model: str
) -> None:
    with pytest.raises(InvalidModelIdError) as info:
        make_client("gemini", model.partition("/")[2])
    assert isinstance(info.value, ConfigurationError)
    assert info.value.user_message
    with pytest.raises(InvalidModelIdError):
        validate_model_id(model.partition("/")[2])
    with pytest.raises(InvalidModelIdError):
        APIClientFactory.create(model=model, api_key="k", env={})
    assert llm_server.requests == []


@pytest.mark.parametrize(
    "model",
    ["gemini-2.5-flash", "tuned/x", "a:b@c+d", "v1.2_x-y"],
)
async def test_safe_model_ids_are_percent_encoded_in_the_gemini_path(
    llm_server: FakeLLMServer, make_client: ClientMaker, model: str
) -> None:
    assert validate_model_id(model) == model
    llm_server.enqueue(RawStream(sse_body("gemini", ["ok"])))
    assert await make_client("gemini", model).chat("hi") == "ok"
    raw = llm_server.requests[-1].raw_path
    segment = raw.removeprefix("/v1beta/models/").removesuffix(":streamGenerateContent")
    assert "/" not in segment
    assert (
        segment.replace("%2F", "/").replace("%3A", ":").replace("%40", "@").replace("%2B", "+")
        == model
    )


# --------------------------------------------------------------------------- stream ignored (8)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_json_answer_to_a_streaming_request_is_the_reply(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    llm_server.enqueue(Reply(text="The whole answer 😀.", usage=(5, 4), ignore_stream=True))
    client = make_client(provider, "m")
    deltas = [d async for d in await client.chat("hi", stream=True)]
    assert "".join(deltas) == "The whole answer 😀."
    assert len(llm_server.requests) == 1  # asked once, paid once
    assert llm_server.requests[0].json.get("stream", True) is True or provider == "gemini"
    assert client.finish_reason == "stop"
    assert client.usage is not None
    assert client.usage.output_tokens == 4
    assert client.messages[-1] == {"role": "assistant", "content": "The whole answer 😀."}


async def test_a_gemini_json_array_answer_is_the_reply(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    parts = [
        {"candidates": [{"content": {"parts": [{"text": "Hello "}], "role": "model"}}]},
        {"candidates": [{"content": {"parts": [{"text": "there"}]}, "finishReason": "STOP"}]},
    ]
    llm_server.enqueue(RawStream(json.dumps(parts).encode(), content_type="application/json"))
    client = make_client("gemini", "m")
    assert await client.chat("hi") == "Hello there"
    assert len(llm_server.requests) == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'data: {"choices":[]}\n\n', "text/event-stream"),  # ended without a finish
        (b"", "text/event-stream"),  # an empty 200
        (b'{"unexpected": true}', "application/json"),  # a JSON body that is no reply
        (b"{not json", "application/json"),
    ],
    ids=["sse-no-finish", "empty", "json-not-a-reply", "json-malformed"],
)
async def test_a_200_whose_body_was_read_is_never_retried(
    llm_server: FakeLLMServer,
    make_client: ClientMaker,
    sleeps: SleepRecorder,
    body: bytes,
    content_type: str,
) -> None:
    llm_server.enqueue(*[RawStream(body, content_type=content_type) for _ in range(3)])
    exc, received = await failed_reply(make_client())
    assert isinstance(exc, StreamInterruptedError)
    assert exc.retryable is False
    assert received == []
    assert len(llm_server.requests) == 1
    assert sleeps.delays == []


# --------------------------------------------------------------------------- CLI (14)


async def test_cli_one_prompt_exits_non_zero_when_the_reply_fails() -> None:
    async with FakeLLMServer() as server:
        env = {"LOCAL_BASE_URL": server.openai_base_url, "LLM_MAX_RETRIES": "0"}
        server.enqueue(Fail(500))
        code, _, err = await run_cli_async("chat", "-m", "local/alpha", "hi", env=env)
        assert code == 1
        assert "⚠️" in err
        server.enqueue(Reply(text="fine", drop_after=0))
        code, _, err = await run_cli_async("chat", "-m", "local/alpha", "hi", env=env)
        assert code == 1
        code, out, err = await run_cli_async("chat", "-m", "local/alpha", "hi", env=env)
        assert (code, out) == (0, "You said: hi\n"), err
