"""The model catalogue: provider lists behind ``available_models``, cached on the engine clock,
refreshed in the background, filtered by the allowed list; ranking and "did you mean"."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from core.catalogue import RETRY_AFTER_FAILURE, best_matches, closest
from core.clock import FakeClock
from core.commands import Command, execute
from core.engine import Refused
from core.settings import SettingsError, load_settings
from tests.fakes.llm_server import FakeLLMServer

from .conftest import KEY, EngineMaker, wait_for


def list_requests(server: FakeLLMServer) -> int:
    return sum(1 for r in server.requests if r.method == "GET" and r.path == "/v1/models")


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    closed = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    closed.close()
    return url


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback URL that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    server.close()


async def test_a_model_only_the_provider_lists_is_offered_once_the_list_is_in(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    llm_server.models = ["fake", "only-listed"]
    engine = local_engine(clock=FakeClock())

    # The first look answers at once from the defaults and starts one refresh in the background.
    assert engine.available_models() == ["echo/echo", "local/fake"]
    assert engine.available_models() == ["echo/echo", "local/fake"]
    assert engine.catalogue.refreshing() == ["echo", "local"]
    await wait_for(lambda: not engine.catalogue.refreshing())

    assert engine.available_models() == ["echo/echo", "local/fake", "local/only-listed"]
    assert list_requests(llm_server) == 1  # one refresh per provider, however many looks


async def test_the_list_is_kept_for_the_ttl_then_refreshed_on_the_engine_clock(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock()
    engine = local_engine(clock=clock, model_list_ttl=3600)
    engine.available_models()
    await wait_for(lambda: not engine.catalogue.refreshing())
    llm_server.models = ["fake", "newer"]

    await clock.advance(3599.0)
    assert "local/newer" not in engine.available_models()
    assert not engine.catalogue.refreshing()
    assert list_requests(llm_server) == 1

    await clock.advance(1.0)
    # Expired: this look still answers with the old list, and refreshes it.
    assert "local/newer" not in engine.available_models()
    await wait_for(lambda: not engine.catalogue.refreshing())
    assert engine.available_models() == ["echo/echo", "local/fake", "local/newer"]
    assert list_requests(llm_server) == 2


async def test_ttl_zero_never_asks_a_provider(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(model_list_ttl=0)
    assert engine.available_models() == ["echo/echo", "local/fake"]
    assert engine.catalogue.refreshing() == []
    await (await engine.submit(KEY, "hi"))
    assert list_requests(llm_server) == 0


def test_a_negative_ttl_is_refused() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(model_list_ttl=-1)
    assert info.value.problems[0].startswith("MODEL_LIST_TTL:")


async def test_a_failing_list_falls_back_to_the_default_and_is_asked_again_later(
    make_engine: EngineMaker, dead_url: str
) -> None:
    clock = FakeClock()
    engine = make_engine(
        env={"DOWN_BASE_URL": dead_url}, clock=clock, llmconnect_model="down/some-model"
    )
    assert engine.available_models() == ["echo/echo", "down/some-model"]
    await wait_for(lambda: not engine.catalogue.refreshing())

    entry = engine.catalogue.cached("down")
    assert entry is not None
    assert entry.error is not None
    assert "unavailable" in entry.error
    assert "127.0.0.1" not in entry.error
    assert engine.available_models() == ["echo/echo", "down/some-model"]  # still usable
    assert engine.validate_model("down/other") == "down/other"

    await clock.advance(RETRY_AFTER_FAILURE - 1)
    engine.available_models()
    assert engine.catalogue.refreshing() == []
    await clock.advance(1)
    engine.available_models()
    assert engine.catalogue.refreshing() == ["down"]


async def test_offline_echo_only_works_on_defaults(make_engine: EngineMaker) -> None:
    engine = make_engine()
    assert engine.available_models() == ["echo/echo"]
    await wait_for(lambda: not engine.catalogue.refreshing())
    assert engine.available_models() == ["echo/echo"]
    reply = await (await engine.submit(KEY, "hello"))
    assert reply.model == "echo/echo"
    assert reply.message.model == "echo/echo"


async def test_the_allowed_list_filters_the_catalogue_by_prefix(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    llm_server.models = ["meta/llama-1", "meta/llama-2", "mistral/small", "fake"]
    engine = local_engine(llmconnect_allowed_models="local/meta/*, local/fake, echo")
    engine.available_models()
    await wait_for(lambda: not engine.catalogue.refreshing())
    assert engine.available_models() == [
        "local/meta/llama-1",
        "local/meta/llama-2",
        "local/fake",
        "echo/echo",
    ]
    with pytest.raises(Refused) as info:
        engine.validate_model("local/mistral/small")
    assert "local/mistral/small is not allowed here." in info.value.user_message


async def test_a_refresh_under_way_is_cancelled_when_the_engine_closes(
    make_engine: EngineMaker, silent_url: str
) -> None:
    engine = make_engine(env={"SILENT_BASE_URL": silent_url}, llmconnect_model="silent/m")
    assert engine.available_models() == ["echo/echo", "silent/m"]  # at once, not waiting
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == "model list silent"]
    await asyncio.sleep(0.05)
    assert not task.done()  # the provider never answers

    await engine.aclose()
    assert task.cancelled()
    engine.available_models()
    assert engine.catalogue.refreshing() == []  # none starts after close


# -- did you mean ----------------------------------------------------------------------------------


async def test_an_unknown_provider_gets_the_closest_names(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    llm_server.models = ["fake", "gpt-4o", "gpt-4o-mini", "llama-3"]
    engine = local_engine()
    engine.available_models()
    await wait_for(lambda: not engine.catalogue.refreshing())

    with pytest.raises(Refused) as info:
        engine.validate_model("lcoal/gpt-4o")
    message = info.value.user_message
    assert message.startswith("Unknown provider 'lcoal'")
    assert "Did you mean local/gpt-4o, local/gpt-4o-mini?" in message
    assert message.endswith(
        "Available: echo/echo, local/fake, local/gpt-4o, local/gpt-4o-mini, local/llama-3."
    )


async def test_a_long_catalogue_is_not_listed_whole_in_a_refusal(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    llm_server.models = [f"model-{n:02d}" for n in range(30)]
    engine = local_engine()
    engine.available_models()
    await wait_for(lambda: not engine.catalogue.refreshing())
    with pytest.raises(Refused) as info:
        engine.validate_model("nosuch/model-07")
    message = info.value.user_message
    assert "Did you mean local/model-07" in message
    assert message.endswith("and 21 more (the models command lists them).")


async def test_a_name_the_list_lacks_is_accepted_with_a_did_you_mean_note(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    llm_server.models = ["fake", "gpt-4o-mini", "llama3.2:latest"]
    engine = local_engine()
    engine.available_models()
    await wait_for(lambda: not engine.catalogue.refreshing())

    result = await execute(engine, KEY, Command("model", "local/gpt-4o-mni"))
    assert result.text == (
        "Model for this conversation is now local/gpt-4o-mni. "
        "Note: local does not list gpt-4o-mni; did you mean local/gpt-4o-mini?"
    )
    assert engine.model_hint("local/gpt-4o-mini") is None
    assert engine.model_hint("local/llama3.2") is None  # ollama's tag: llama3.2:latest


async def test_models_command_filters_and_caps_its_list(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    llm_server.models = [f"m-{n:03d}" for n in range(60)] + ["gpt-4o"]
    engine = local_engine()
    engine.available_models()
    await wait_for(lambda: not engine.catalogue.refreshing())

    whole = (await execute(engine, KEY, Command("models"))).text.splitlines()
    assert whole[0] == "Available models:"
    assert len(whole) == 1 + 50 + 1
    assert whole[-1] == "… and 12 more: models <part of a name> narrows the list."
    found = (await execute(engine, KEY, Command("models", "gpt"))).text
    assert found == "Models matching 'gpt':\n• local/gpt-4o"
    none = (await execute(engine, KEY, Command("models", "zzz"))).text
    assert none == "No available model matches 'zzz'."
    short = (await execute(engine, KEY, Command("model"))).text
    assert short.startswith("Model here: local/fake. Available: echo/echo, local/gpt-4o, local/m-0")
    assert short.endswith(" and 52 more (models lists them).")


# -- ranking ---------------------------------------------------------------------------------------

NAMES = [
    "openai/gpt-4o",
    "openai/gpt-4o-mini",
    "openai/gpt-4.1",
    "openai/o3",
    "groq/llama-3.3-70b-versatile",
    "openrouter/openai/gpt-4o",
]


def test_best_matches_rank_exact_then_prefix_then_substring_then_in_order_then_close() -> None:
    assert best_matches("gpt-4o", NAMES) == [
        "openai/gpt-4o",  # exact model part
        "openai/gpt-4o-mini",  # prefix of the model part
        "openrouter/openai/gpt-4o",  # inside the name
        "openai/gpt-4.1",  # close by spelling
    ]
    assert best_matches("GROQ", NAMES) == ["groq/llama-3.3-70b-versatile"]  # case ignored
    assert best_matches("versatile", NAMES) == ["groq/llama-3.3-70b-versatile"]
    assert best_matches("gpt41", NAMES)[0] == "openai/gpt-4.1"  # characters in order
    assert best_matches("lama-3.3-70b-versatil", NAMES) == ["groq/llama-3.3-70b-versatile"]
    assert best_matches("", NAMES, 2) == NAMES[:2]
    assert best_matches("zzzz", NAMES) == []
    assert len(best_matches("o", [f"p/o{n}" for n in range(40)])) == 25


def test_closest_names_are_the_five_nearest_by_spelling() -> None:
    assert closest("openai/gpt-4o-mni", NAMES)[0] == "openai/gpt-4o-mini"
    assert closest("gpt-4o", NAMES)[:2] == ["openai/gpt-4o", "openrouter/openai/gpt-4o"]
    many = [f"openai/gpt-4o-{n}" for n in range(9)]
    assert len(closest("openai/gpt-4o", many)) == 5
    assert closest("something/else-entirely", NAMES) == []
