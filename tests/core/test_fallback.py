"""Fallback models: the next model answers when the conversation's is unavailable before its first
token, says so in the note, and is recorded in the history; never on 401/400, never mid-reply."""

from __future__ import annotations

import socket

import pytest

from core.conversations import Status
from core.delivery import final_note
from core.fallback import falls_back
from core.settings import SettingsError, load_settings
from llmconnect import (
    AuthenticationError,
    InvalidRequestError,
    LLMError,
    LLMTimeoutError,
    ModelNotFoundError,
    ProviderUnavailableError,
    RateLimitError,
    StreamInterruptedError,
    TimeLimitError,
)
from tests.fakes.llm_server import Fail, FakeLLMServer, Reply

from .conftest import KEY, EngineMaker


def chat_models(server: FakeLLMServer) -> list[str]:
    return [r.json["model"] for r in server.requests if r.path == "/v1/chat/completions"]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 404])
async def test_an_unavailable_model_is_answered_by_the_fallback_and_the_note_says_so(
    local_engine: EngineMaker, llm_server: FakeLLMServer, status: int
) -> None:
    engine = local_engine(
        llmconnect_model="local/down",
        llmconnect_fallback_models="local/fake",
        llm_max_retries=0,
    )
    llm_server.enqueue(Fail(status))

    reply = await (await engine.submit(KEY, "hi"))

    assert reply.status is Status.COMPLETE
    assert reply.text == "You said: hi"
    assert chat_models(llm_server) == ["down", "fake"]
    assert (reply.model, reply.unavailable) == ("local/fake", ("local/down",))
    assert final_note(reply) == "answered by local/fake — local/down was unavailable"
    # The history records which model answered, and the note survives a reload.
    stored = (await engine.store.get(KEY)).messages[-1]  # type: ignore[union-attr]
    assert (stored.model, stored.unavailable) == ("local/fake", ("local/down",))
    assert final_note(stored) == final_note(reply)


async def test_after_llmconnects_own_retries_and_through_a_connection_refused(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    closed.close()
    engine = local_engine(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url, "GONE_BASE_URL": dead},
        llmconnect_model="local/busy",
        llmconnect_fallback_models="gone/x, local/fake",
        llm_max_retries=1,
    )
    llm_server.enqueue(Fail(503, headers={"Retry-After": "0"}), Fail(503))

    reply = await (await engine.submit(KEY, "hi"))

    assert chat_models(llm_server) == ["busy", "busy", "fake"]  # one retry, then the chain
    assert reply.text == "You said: hi"
    assert final_note(reply) == "answered by local/fake — local/busy, gone/x were unavailable"


@pytest.mark.parametrize(("status", "said"), [(401, "rejected the API key"), (400, "refused")])
async def test_a_rejected_key_or_a_bad_request_does_not_fall_back(
    local_engine: EngineMaker, llm_server: FakeLLMServer, status: int, said: str
) -> None:
    engine = local_engine(
        llmconnect_model="local/down", llmconnect_fallback_models="local/fake", llm_max_retries=0
    )
    llm_server.enqueue(Fail(status))

    reply = await (await engine.submit(KEY, "hi"))

    assert reply.status is Status.ERROR
    assert said in (reply.error or "")
    assert chat_models(llm_server) == ["down"]
    assert reply.unavailable == ()
    assert final_note(reply) == f"⚠️ {reply.error}"  # as before: no fallback line


async def test_never_after_the_first_token(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(
        llmconnect_model="local/down", llmconnect_fallback_models="local/fake", llm_max_retries=0
    )
    llm_server.enqueue(Reply(text="one two three four", drop_after=2))

    reply = await (await engine.submit(KEY, "hi"))

    assert reply.status is Status.ERROR
    assert reply.text == "one two "
    assert chat_models(llm_server) == ["down"]
    assert reply.model == "local/down"


async def test_when_every_model_is_unavailable_the_last_error_is_shown_with_the_others(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(
        llmconnect_model="local/down",
        llmconnect_fallback_models="local/also-down, local/down",  # the model itself: skipped
        llm_max_retries=0,
    )
    llm_server.enqueue(Fail(503), Fail(429))

    reply = await (await engine.submit(KEY, "hi"))

    assert reply.status is Status.ERROR
    assert chat_models(llm_server) == ["down", "also-down"]
    assert final_note(reply) == (
        "local/down was unavailable\n⚠️ The provider is rate limiting requests; try again "
        "shortly. (local)"
    )
    history = (await engine.conversation(KEY)).llm_history()
    assert history == []  # the failed turn is not sent again


async def test_a_fallback_whose_provider_has_no_key_is_skipped(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(
        llmconnect_model="local/down",
        llmconnect_fallback_models="groq/llama-3.3-70b-versatile, local/fake",
        llm_max_retries=0,
    )
    llm_server.enqueue(Fail(503))
    reply = await (await engine.submit(KEY, "hi"))
    assert reply.model == "local/fake"
    assert final_note(reply) == "answered by local/fake — local/down was unavailable"


async def test_no_fallback_list_means_the_error_as_before(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(llm_max_retries=0)
    llm_server.enqueue(Fail(503))
    reply = await (await engine.submit(KEY, "hi"))
    assert reply.status is Status.ERROR
    assert final_note(reply) == "⚠️ The provider is unavailable right now. (local)"


def test_which_errors_fall_back() -> None:
    for exc in (
        RateLimitError("x"),
        ProviderUnavailableError("x"),
        LLMTimeoutError("x"),
        ModelNotFoundError("x"),
    ):
        assert falls_back(exc), exc
    for exc in (
        TimeLimitError("x"),
        AuthenticationError("x"),
        InvalidRequestError("x"),
        StreamInterruptedError("x"),
        LLMError("x"),
    ):
        assert not falls_back(exc), exc


async def test_fallback_models_change_live_and_an_unknown_provider_is_refused(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(llmconnect_model="local/down", llm_max_retries=0)
    assert engine.fallback_models == []
    live = {"llmconnect_model": "local/down", "llm_max_retries": 0}
    engine.update_settings(load_settings(llmconnect_fallback_models="local/fake", **live))
    assert engine.fallback_models == ["local/fake"]
    with pytest.raises(LLMError):
        engine.update_settings(load_settings(llmconnect_fallback_models="nosuch/model", **live))
    assert engine.fallback_models == ["local/fake"]  # a refused reload changes nothing

    llm_server.enqueue(Fail(503))
    reply = await (await engine.submit(KEY, "hi"))
    assert reply.model == "local/fake"


def test_a_fallback_that_is_not_a_model_name_is_refused_at_start_up() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(llmconnect_fallback_models="openai/gpt-4o, groq/../admin")
    [line] = info.value.problems
    assert line.startswith("LLMCONNECT_FALLBACK_MODELS: ")
    assert "'groq/../admin' is not a provider/model name" in line


async def test_a_provider_silent_before_its_first_token_times_out_into_the_fallback(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(
        llmconnect_model="local/slow",
        llmconnect_fallback_models="local/fake",
        llm_max_retries=0,
        llm_idle_timeout=0.3,
    )
    llm_server.enqueue(Reply(text="never shown", hang_after=0))

    reply = await (await engine.submit(KEY, "hi"))

    assert reply.text == "You said: hi"
    assert final_note(reply) == "answered by local/fake — local/slow was unavailable"
