"""MODEL_OPTIONS: which patterns apply to a model, that they reach the request (a fallback's own),
and that a wrong value stops start-up with one line."""

from __future__ import annotations

import pytest

from core.conversations import Status
from core.model_options import options_for, parse_model_options
from core.settings import SettingsError, load_settings
from tests.fakes.llm_server import Fail, FakeLLMServer

from .conftest import KEY, EngineMaker

TABLE = parse_model_options(
    """{
        "*": {"temperature": 0.7, "top_p": 0.9},
        "groq": {"temperature": 0.3},
        "openrouter/meta-llama/*": {"max_tokens": 100},
        "openrouter/*": {"max_tokens": 50, "top_p": 0.5},
        "openai/o3": {"reasoning_effort": "high", "temperature": null}
    }"""
)


def test_the_most_specific_pattern_wins_option_by_option() -> None:
    assert options_for("groq/llama", TABLE) == {"temperature": 0.3, "top_p": 0.9}
    assert options_for("openrouter/meta-llama/x", TABLE) == {
        "temperature": 0.7,
        "top_p": 0.5,
        "max_tokens": 100,  # the longer prefix beats openrouter/*
    }
    assert options_for("openrouter/mistral/x", TABLE)["max_tokens"] == 50
    # The exact name last; null removes what * set.
    assert options_for("openai/o3", TABLE) == {"top_p": 0.9, "reasoning_effort": "high"}
    assert options_for("openai/o3-mini", TABLE) == {"temperature": 0.7, "top_p": 0.9}
    # The engine's own options come first, under every pattern.
    assert options_for("openai/o3", TABLE, {"temperature": 1.0, "stop": ["x"]}) == {
        "stop": ["x"],
        "top_p": 0.9,
        "reasoning_effort": "high",
    }
    assert options_for("echo/echo", {}) == {}


def test_a_bare_provider_is_its_wildcard() -> None:
    assert parse_model_options('{"groq": {"a": 1}}') == {"groq/*": {"a": 1}}
    assert parse_model_options("") == {}


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ('{"groq/*": {"temperature": 0.3}', "not valid JSON"),
        ('["groq"]', "expected a JSON object"),
        ('{"groq/*": 0.3}', "the options of 'groq/*' must be a JSON object"),
        ('{"gr*q": {}}', "'gr*q' is not a model pattern"),
        ('{"groq/*": {"model": "x"}}', "model in 'groq/*' is not a request option"),
    ],
)
def test_a_bad_value_is_refused_at_start_up_in_one_line(value: str, said: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(model_options=value)
    [line] = info.value.problems
    assert line.startswith("MODEL_OPTIONS: ")
    assert said in line


def test_the_environment_variable_is_read_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_OPTIONS", '{"openai/o3": {"reasoning_effort": "high"}}')
    assert load_settings().model_options == {"openai/o3": {"reasoning_effort": "high"}}


async def test_options_reach_the_request_and_a_fallback_gets_its_own(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(
        llmconnect_model="local/down",
        llmconnect_fallback_models="local/fake",
        llm_max_retries=0,
        model_options='{"local/*": {"temperature": 0.5}, "local/down": {"reasoning_effort": '
        '"high"}, "local/fake": {"temperature": 0.1}}',
    )
    llm_server.enqueue(Fail(503))

    reply = await (await engine.submit(KEY, "hi"))

    assert reply.status is Status.COMPLETE
    down, fake = (r.json for r in llm_server.requests if r.method == "POST")
    assert (down["temperature"], down["reasoning_effort"]) == (0.5, "high")
    assert fake["temperature"] == 0.1
    assert "reasoning_effort" not in fake


async def test_an_option_the_provider_rejects_is_an_error_line(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(model_options='{"local/fake": {"reasoning_effort": "extreme"}}')
    llm_server.enqueue(
        Fail(400, {"error": {"message": "Unsupported value: 'reasoning_effort'", "code": None}})
    )

    reply = await (await engine.submit(KEY, "hi"))

    assert reply.status is Status.ERROR
    assert reply.error
    assert "refused the request" in reply.error
    [sent] = [r.json for r in llm_server.requests if r.method == "POST"]
    assert sent["reasoning_effort"] == "extreme"


async def test_options_change_live(local_engine: EngineMaker, llm_server: FakeLLMServer) -> None:
    engine = local_engine()
    await (await engine.submit(KEY, "one"))
    engine.update_settings(
        load_settings(llmconnect_model="local/fake", model_options='{"local": {"top_p": 0.2}}')
    )
    await (await engine.submit(KEY, "two"))
    first, second = (r.json for r in llm_server.requests if r.method == "POST")
    assert "top_p" not in first
    assert second["top_p"] == 0.2
