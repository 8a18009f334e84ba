"""The API key never shows up in logs, errors, tracebacks, reprs, or (for Gemini) URLs."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import httpx
import pytest

from llmconnect import (
    APIClientFactory,
    AsyncAPIClient,
    AuthenticationError,
    LLMError,
    ProviderUnavailableError,
    list_models,
)
from tests.fakes.llm_server import Fail, FakeLLMServer, RawStream, Reply

from .conftest import KEY, ClientMaker, SleepRecorder, closed_port

ECHOED_401: dict[str, Any] = {
    "openai": {
        "error": {
            "message": f"Incorrect API key provided: {KEY}",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    },
    "anthropic": {
        "type": "error",
        "error": {"type": "authentication_error", "message": f"invalid x-api-key {KEY}"},
    },
    "gemini": {
        "error": {
            "code": 401,
            "message": f"API key not valid: {KEY}",
            "status": "UNAUTHENTICATED",
        }
    },
}


def echoed_429(provider: str) -> dict[str, Any]:
    message = f"Rate limit reached for key {KEY}"
    if provider == "anthropic":
        return {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    if provider == "gemini":
        return {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}}
    return {"error": {"message": message, "type": "requests", "code": "rate_limit_exceeded"}}


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("llmconnect", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def assert_no_key_in_error(exc: LLMError) -> None:
    assert KEY not in str(exc)
    assert KEY not in repr(exc)
    assert KEY not in exc.user_message
    assert KEY not in exc.message
    assert KEY not in "".join(traceback.format_exception(exc))


def assert_no_key_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "nothing was logged: the check would be vacuous"
    for record in caplog.records:
        assert KEY not in record.getMessage(), record.name
        assert KEY not in repr(record.args), record.name
    assert KEY not in caplog.text


def assert_no_key_in_client(client: AsyncAPIClient) -> None:
    assert KEY not in repr(client)
    assert KEY not in str(client)
    assert KEY not in repr(vars(client))


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_key_never_leaks(
    llm_server: FakeLLMServer,
    make_client: ClientMaker,
    sleeps: SleepRecorder,
    debug_logs: pytest.LogCaptureFixture,
    provider: str,
) -> None:
    client = make_client(provider, "m")
    errors: list[LLMError] = []

    # 1. success
    assert await client.chat("hi") == "You said: hi"

    # 2. 401 whose body echoes the key
    llm_server.enqueue(Fail(401, body=ECHOED_401[provider]))
    with pytest.raises(AuthenticationError) as auth:
        await client.chat("hi")
    errors.append(auth.value)
    assert "[redacted]" in str(auth.value)  # the provider's text is kept, minus the key

    # 3. 429 (key echoed too) then success: the retry is logged
    llm_server.enqueue(
        Fail(429, body=echoed_429(provider), headers={"Retry-After": "0"}), Reply(text="ok")
    )
    assert await client.chat("hi") == "ok"
    assert sleeps.delays == [0.0]
    retry_logs = [r for r in debug_logs.records if r.name == "llmconnect" and "retry" in r.msg]
    assert retry_logs
    assert "[redacted]" in retry_logs[0].getMessage()

    # 4. connection refused
    refused = make_client(provider, "m", base_url=f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(ProviderUnavailableError) as down:
        await refused.chat("hi")
    errors.append(down.value)

    # the key was really sent, so its absence everywhere else means something
    key_headers = {"openai": "authorization", "anthropic": "x-api-key", "gemini": "x-goog-api-key"}
    assert all(KEY in r.headers[key_headers[provider]] for r in llm_server.requests)
    assert any(r.name.startswith("httpx") for r in debug_logs.records)

    for exc in errors:
        assert_no_key_in_error(exc)
    assert_no_key_in_logs(debug_logs)
    assert_no_key_in_client(client)
    assert_no_key_in_client(refused)
    if provider == "gemini":
        for request in llm_server.requests:
            assert KEY not in request.path
            assert KEY not in repr(request.query)
            assert "key" not in request.query


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("openai", f'data: {{"error":{{"message":"bad key {KEY}","type":"server_error"}}}}\n\n'),
        (
            "anthropic",
            "event: message_start\n"
            'data: {"type":"message_start","message":{"usage":{"input_tokens":1}}}\n\n'
            "event: error\n"
            f'data: {{"type":"error","error":{{"type":"overloaded_error","message":"{KEY}"}}}}\n\n',
        ),
        ("gemini", f'data: {{"error":{{"code":500,"message":"{KEY}","status":"INTERNAL"}}}}\n\n'),
    ],
)
async def test_key_echoed_in_stream_error_event_is_redacted(
    llm_server: FakeLLMServer,
    make_client: ClientMaker,
    debug_logs: pytest.LogCaptureFixture,
    provider: str,
    body: str,
) -> None:
    # three times: the error is retryable before any text, so the retry log line is covered too
    llm_server.enqueue(*[RawStream(body.encode())] * 3)
    with pytest.raises(LLMError) as info:
        await make_client(provider, "m").chat("hi")
    assert len(llm_server.requests) == 3
    assert "[redacted]" in str(info.value)
    assert_no_key_in_error(info.value)
    assert_no_key_in_logs(debug_logs)


async def test_list_models_error_redacts_key(
    llm_server: FakeLLMServer, http: httpx.AsyncClient, debug_logs: pytest.LogCaptureFixture
) -> None:
    # the key is sent to /models, and a failing call (connection refused) does not show it
    env = {"GROQ_API_KEY": KEY, "GROQ_BASE_URL": llm_server.openai_base_url}
    assert await list_models("groq", env=env, http_client=http) == ["fake-a", "fake-b"]
    assert llm_server.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    env["GROQ_BASE_URL"] = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(ProviderUnavailableError) as info:
        await list_models("groq", env=env, http_client=http)
    assert_no_key_in_error(info.value)
    assert_no_key_in_logs(debug_logs)


def test_configuration_and_repr_never_show_the_key() -> None:
    client = APIClientFactory.create(model="groq/m", api_key=KEY, env={})
    assert_no_key_in_client(client)
    client = APIClientFactory.create(model="groq/m", env={"GROQ_API_KEY": KEY})
    assert_no_key_in_client(client)


def test_a_requests_call_repr_never_shows_the_key() -> None:
    client = APIClientFactory.create(model="groq/m", api_key=KEY, env={})
    call = client._call("hi")
    assert call.api_key == KEY
    assert KEY not in repr(call)
