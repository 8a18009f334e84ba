"""HTTP status / stream fault → error class, retry or not, and what the user is shown."""

from __future__ import annotations

import pytest

from llmconnect import (
    APIClientFactory,
    AsyncAPIClient,
    AuthenticationError,
    ContextLengthError,
    InvalidRequestError,
    LLMError,
    LLMTimeoutError,
    ModelNotFoundError,
    ProviderUnavailableError,
    RateLimitError,
    RetryPolicy,
    StreamInterruptedError,
    Timeouts,
)
from tests.fakes.llm_server import Fail, FakeLLMServer, RawStream, Reply

from .conftest import ClientMaker, SleepRecorder, closed_port, collect, reply

CONTEXT_BODY = {
    "error": {
        "message": "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9000 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}


def assert_presentable(exc: LLMError, provider: str) -> None:
    """Every error names its provider and carries a short, traceback-free line for users."""
    assert exc.provider == provider
    msg = exc.user_message
    assert msg.strip()
    assert len(msg) < 200
    assert "\n" not in msg
    assert "Traceback" not in msg
    assert 'File "' not in msg
    assert "http://" not in msg


async def chat_error(client: AsyncAPIClient, stream: bool = False) -> tuple[LLMError, list[str]]:
    """Run one reply that must fail; the error and the deltas that arrived before it."""
    received: list[str] = []
    with pytest.raises(LLMError) as info:
        await reply(client, "hi", stream, received)
    return info.value, received


# --------------------------------------------------------------------------- not retried


@pytest.mark.parametrize(
    ("fail", "cls"),
    [
        (Fail(401), AuthenticationError),
        (Fail(403), AuthenticationError),
        (Fail(404), ModelNotFoundError),
        (Fail(400, body=CONTEXT_BODY), ContextLengthError),
        (Fail(400), InvalidRequestError),
        (Fail(422), InvalidRequestError),
    ],
    ids=["401", "403", "404", "400-context", "400", "422"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_client_errors_are_classified_and_not_retried(
    llm_server: FakeLLMServer,
    make_client: ClientMaker,
    sleeps: SleepRecorder,
    fail: Fail,
    cls: type[LLMError],
    stream: bool,
) -> None:
    llm_server.enqueue(fail, Reply(text="should never be asked for"))
    exc, received = await chat_error(make_client(), stream)

    assert type(exc) is cls
    assert exc.status == fail.status
    assert exc.retryable is False
    assert len(llm_server.requests) == 1
    assert sleeps.delays == []
    assert received == []
    assert_presentable(exc, "openai")


@pytest.mark.parametrize(
    ("provider", "fail", "cls"),
    [
        ("anthropic", Fail(401), AuthenticationError),
        ("anthropic", Fail(404), ModelNotFoundError),
        (
            "anthropic",
            Fail(
                400,
                body={
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "prompt is too long: 210000 tokens > 200000 maximum",
                    },
                },
            ),
            ContextLengthError,
        ),
        ("anthropic", Fail(400), InvalidRequestError),
        ("gemini", Fail(403), AuthenticationError),
        ("gemini", Fail(404), ModelNotFoundError),
        ("gemini", Fail(400), InvalidRequestError),
    ],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "status", getattr(v, "__name__", "")),
)
async def test_other_protocols_error_bodies(
    llm_server: FakeLLMServer,
    make_client: ClientMaker,
    sleeps: SleepRecorder,
    provider: str,
    fail: Fail,
    cls: type[LLMError],
) -> None:
    llm_server.enqueue(fail)
    exc, _ = await chat_error(make_client(provider, "m"))
    assert type(exc) is cls
    assert len(llm_server.requests) == 1
    assert sleeps.delays == []
    assert_presentable(exc, provider)


async def test_error_message_carries_the_provider_text(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    llm_server.enqueue(Fail(400, body=CONTEXT_BODY))
    exc, _ = await chat_error(make_client())
    assert "maximum context length is 8192 tokens" in str(exc)
    assert "400" in str(exc)
    assert "reset" in exc.user_message.lower()


# --------------------------------------------------------------------------- retried


async def test_429_retry_after_seconds_is_honoured(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    client = make_client()
    llm_server.enqueue(Fail(429, headers={"Retry-After": "2"}), Reply(text="after the wait"))
    assert await client.chat("hi") == "after the wait"
    assert sleeps.delays == [2.0]
    assert len(llm_server.requests) == 2
    assert client.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "after the wait"},
    ]


async def test_429_retry_after_ms_wins(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    llm_server.enqueue(
        Fail(429, headers={"retry-after-ms": "1500", "Retry-After": "9"}), Reply(text="ok")
    )
    assert await make_client().chat("hi") == "ok"
    assert sleeps.delays == [1.5]
    assert len(llm_server.requests) == 2


async def test_429_retries_exhausted_raises_rate_limit(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    llm_server.enqueue(*[Fail(429, headers={"Retry-After": "3"})] * 3)
    exc, _ = await chat_error(make_client())
    assert isinstance(exc, RateLimitError)
    assert exc.retry_after == 3.0
    assert exc.status == 429
    assert sleeps.delays == [3.0, 3.0]
    assert len(llm_server.requests) == 3
    assert_presentable(exc, "openai")


@pytest.mark.parametrize("status", [500, 502, 503, 408, 409, 529])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_transient_status_is_retried_then_succeeds(
    llm_server: FakeLLMServer,
    make_client: ClientMaker,
    sleeps: SleepRecorder,
    status: int,
    stream: bool,
) -> None:
    client = make_client()
    llm_server.enqueue(Fail(status), Reply(deltas=["all ", "good"]))
    if stream:
        assert await collect(client, "hi") == ["all ", "good"]
    else:
        assert await client.chat("hi") == "all good"
    assert len(llm_server.requests) == 2
    assert len(sleeps.delays) == 1
    # exponential backoff with jitter: 0.5 s * (1 - up to 25 %)
    assert 0.375 <= sleeps.delays[0] <= 0.5
    assert client.messages[-1] == {"role": "assistant", "content": "all good"}


async def test_three_500s_exhaust_two_retries(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    llm_server.enqueue(Fail(500), Fail(500), Fail(500), Reply(text="too late"))
    exc, _ = await chat_error(make_client())
    assert isinstance(exc, ProviderUnavailableError)
    assert exc.status == 500
    assert len(llm_server.requests) == 3
    assert len(sleeps.delays) == 2
    assert 0.375 <= sleeps.delays[0] <= 0.5
    assert 0.75 <= sleeps.delays[1] <= 1.0
    assert llm_server.pending == 1
    assert_presentable(exc, "openai")


async def test_no_retries_when_disabled(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    llm_server.enqueue(Fail(503), Reply(text="unused"))
    client = make_client(retry=RetryPolicy(max_retries=0, sleep=sleeps))
    exc, _ = await chat_error(client)
    assert isinstance(exc, ProviderUnavailableError)
    assert len(llm_server.requests) == 1
    assert sleeps.delays == []


async def test_connection_refused_is_provider_unavailable(
    make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    client = make_client("groq", "m", base_url=f"http://127.0.0.1:{closed_port()}/v1")
    exc, _ = await chat_error(client, stream=True)
    assert isinstance(exc, ProviderUnavailableError)
    assert len(sleeps.delays) == 2  # retried: nothing had been sent yet
    assert client.messages == []
    assert_presentable(exc, "groq")


# --------------------------------------------------------------------------- mid-stream faults


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_drop_after_deltas_is_interrupted_and_not_retried(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder, stream: bool
) -> None:
    llm_server.enqueue(Reply(text="one two three four", drop_after=2), Reply(text="again"))
    exc, received = await chat_error(make_client(), stream)
    assert isinstance(exc, StreamInterruptedError)
    assert len(llm_server.requests) == 1
    assert sleeps.delays == []
    if stream:
        assert received == ["one ", "two "]  # no duplicated text from a retry
    assert_presentable(exc, "openai")


async def test_drop_before_any_delta_is_retried(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    llm_server.enqueue(Reply(text="lost", drop_after=0), Reply(deltas=["whole ", "answer"]))
    client = make_client()
    assert await collect(client, "hi") == ["whole ", "answer"]
    assert len(llm_server.requests) == 2
    assert len(sleeps.delays) == 1
    assert client.messages[-1]["content"] == "whole answer"


async def test_silent_stream_times_out(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    llm_server.enqueue(Reply(text="one two three four", hang_after=2))
    client = make_client(timeouts=Timeouts(idle=0.3))
    exc, received = await chat_error(client, stream=True)
    assert isinstance(exc, LLMTimeoutError)
    assert received == ["one ", "two "]
    assert len(llm_server.requests) == 1  # text already shown: not retried
    assert client.messages == []
    assert_presentable(exc, "openai")


async def test_a_response_head_that_never_comes_times_out(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    # A stream's request has no transport read timeout (no timer per socket read): the idle
    # clock, counted from the request, is what bounds the wait for the head. Retried like any
    # failure before the first delta; each attempt waits the idle time, not the server's 60 s.
    llm_server.enqueue(*[Fail(503, delay=60.0) for _ in range(3)])
    client = make_client(timeouts=Timeouts(idle=0.3))
    exc, received = await chat_error(client, stream=True)
    assert isinstance(exc, LLMTimeoutError)
    assert received == []
    assert len(llm_server.requests) == 3
    assert len(sleeps.delays) == 2
    assert_presentable(exc, "openai")


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_malformed_chunk_is_interrupted(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder, provider: str
) -> None:
    llm_server.enqueue(Reply(text="one two three four", malformed_after=2))
    exc, received = await chat_error(make_client(provider, "m"), stream=True)
    assert isinstance(exc, StreamInterruptedError)
    assert received == ["one ", "two "]
    assert len(llm_server.requests) == 1
    assert_presentable(exc, provider)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_error_event_in_stream(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder, provider: str
) -> None:
    llm_server.enqueue(Reply(text="one two three four", error_after=2))
    exc, received = await chat_error(make_client(provider, "m"), stream=True)
    assert received == ["one ", "two "]
    assert len(llm_server.requests) == 1
    assert sleeps.delays == []
    assert exc.status is None
    assert_presentable(exc, provider)


async def test_error_event_before_any_delta_is_retried(
    llm_server: FakeLLMServer, make_client: ClientMaker, sleeps: SleepRecorder
) -> None:
    llm_server.enqueue(Reply(text="x", error_after=0), Reply(text="recovered"))
    assert await make_client().chat("hi") == "recovered"
    assert len(llm_server.requests) == 2
    assert len(sleeps.delays) == 1


@pytest.mark.parametrize(
    "body",
    [
        # closed cleanly but without [DONE] or a finish reason: the reply was cut
        b'data: {"choices":[{"index":0,"delta":{"content":"half"},"finish_reason":null}]}\n\n',
        # an error chunk with a rate-limit code mid-stream
        b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}\n\n'
        b'data: {"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}\n\n',
    ],
    ids=["no-done", "rate-limit-event"],
)
async def test_raw_stream_faults_after_text(
    llm_server: FakeLLMServer, make_client: ClientMaker, body: bytes
) -> None:
    llm_server.enqueue(RawStream(body))
    client = make_client()
    exc, received = await chat_error(client, stream=True)
    assert received in (["half"], ["a"])
    assert len(llm_server.requests) == 1
    assert client.messages == []
    assert_presentable(exc, "openai")


async def test_configuration_error_is_presentable() -> None:
    with pytest.raises(LLMError) as info:
        APIClientFactory.create(model="groq/x", env={})
    assert_presentable(info.value, "groq")
