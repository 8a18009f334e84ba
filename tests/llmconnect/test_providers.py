"""Provider registry: model strings, environment, base URL overrides, custom providers, catalog."""

from __future__ import annotations

import httpx
import pytest

import llmconnect
from llmconnect import (
    PROVIDERS,
    APIClientFactory,
    AuthenticationError,
    ConfigurationError,
    ModelRef,
    ProviderUnavailableError,
    ResolvedProvider,
    RetryPolicy,
    list_models,
    parse_model,
    provider_status,
    resolve,
)
from tests.fakes.llm_server import Fail, FakeLLMServer, Reply

from .conftest import SleepRecorder, closed_port, collect

# --------------------------------------------------------------------------- model strings


def test_provider_slash_model() -> None:
    client = APIClientFactory.create(
        model="groq/llama-3.3-70b-versatile", env={"GROQ_API_KEY": "x"}
    )
    assert client.ref == ModelRef("groq", "llama-3.3-70b-versatile")
    assert client.model == "groq/llama-3.3-70b-versatile"
    assert client.base_url == "https://api.groq.com/openai/v1"


def test_provider_and_model_given_separately() -> None:
    client = APIClientFactory.create(
        provider="groq", model="llama-3.1-8b-instant", env={"GROQ_API_KEY": "x"}
    )
    assert client.ref == ModelRef("groq", "llama-3.1-8b-instant")


def test_bare_provider_picks_its_default_model() -> None:
    client = APIClientFactory.create(model="groq", env={"GROQ_API_KEY": "x"})
    assert client.ref == ModelRef("groq", PROVIDERS["groq"].default_model)
    assert client.ref.model == "llama-3.3-70b-versatile"
    only_provider = APIClientFactory.create(provider="groq", env={"GROQ_API_KEY": "x"})
    assert only_provider.ref == client.ref


def test_split_on_first_slash_only() -> None:
    client = APIClientFactory.create(
        model="openrouter/meta-llama/llama-3.1-8b-instruct", env={"OPENROUTER_API_KEY": "x"}
    )
    assert client.ref == ModelRef("openrouter", "meta-llama/llama-3.1-8b-instruct")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GROQ/llama", ModelRef("groq", "llama")),
        ("  anthropic/claude-x  ", ModelRef("anthropic", "claude-x")),
        ("gemini/", ModelRef("gemini", "gemini-2.5-flash")),
        ("echo", ModelRef("echo", "echo")),
    ],
)
def test_parse_model_normalises(text: str, expected: ModelRef) -> None:
    assert parse_model(text, env={}) == expected


def test_empty_model_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="provider/model"):
        APIClientFactory.create(model="", env={})


def test_unknown_provider_lists_known_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        APIClientFactory.create(model="nosuch/model", env={})
    exc = info.value
    for name in ("groq", "openai", "anthropic", "gemini", "echo", "ollama"):
        assert name in str(exc)
        assert name in exc.user_message
    assert "NOSUCH_BASE_URL" in str(exc)  # tells how to add it


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        APIClientFactory.create(model="groq/llama-3.3-70b-versatile", env={})
    exc = info.value
    assert "GROQ_API_KEY" in str(exc)
    assert "GROQ_API_KEY" in exc.user_message
    assert exc.provider == "groq"


def test_empty_key_counts_as_missing() -> None:
    with pytest.raises(ConfigurationError, match="GROQ_API_KEY"):
        APIClientFactory.create(model="groq/x", env={"GROQ_API_KEY": ""})


def test_explicit_api_key_needs_no_env() -> None:
    client = APIClientFactory.create(model="anthropic/claude-x", api_key="k", env={})
    assert client.provider == "anthropic"


def test_real_environment_is_used_when_env_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "from-os-environ")
    monkeypatch.delenv("DEEPSEEK_BASE_URL", raising=False)
    client = APIClientFactory.create(model="deepseek/deepseek-chat")
    assert client.base_url == "https://api.deepseek.com/v1"
    monkeypatch.delenv("DEEPSEEK_API_KEY")
    with pytest.raises(ConfigurationError, match="DEEPSEEK_API_KEY"):
        APIClientFactory.create(model="deepseek/deepseek-chat")


# --------------------------------------------------------------------------- resolve


def test_resolve_provider_slash_model() -> None:
    r = resolve("groq/llama-x", {"GROQ_API_KEY": "gsk_SECRET_value"})
    assert isinstance(r, ResolvedProvider)
    assert (r.spec, r.model, r.ref) == (PROVIDERS["groq"], "llama-x", ModelRef("groq", "llama-x"))
    assert (r.base_url, r.base_url_overridden) == ("https://api.groq.com/openai/v1", False)
    assert (r.key_var, r.has_key, r.configured) == ("GROQ_API_KEY", True, True)
    assert "SECRET" not in repr(r)  # holds whether a key is set, never the key


def test_resolve_bare_name_and_provider_argument() -> None:
    assert resolve("anthropic", {}).ref == ModelRef("anthropic", "claude-sonnet-4-5")
    assert resolve("", {}, provider="gemini").model == "gemini-2.5-flash"
    assert resolve("a/b", {}, provider="openrouter").ref == ModelRef("openrouter", "a/b")


def test_resolve_reads_the_environment() -> None:
    env = {"AIMLAPI_API_KEY": "k", "AIMLAPI_BASE_URL": "http://127.0.0.1:9/v1/"}
    r = resolve("aimlapi/m", env)
    assert (r.key_var, r.has_key) == ("AIMLAPI_API_KEY", True)
    assert (r.base_url, r.base_url_overridden) == ("http://127.0.0.1:9/v1", True)
    missing = resolve("openai/m", {"OPENAI_API_KEY": ""})
    assert (missing.key_var, missing.has_key, missing.configured) == (
        "OPENAI_API_KEY",
        False,
        False,
    )
    assert resolve("ollama", {}).configured is True  # keyless


def test_resolve_custom_provider_without_a_model() -> None:
    r = resolve("foo", {"FOO_BASE_URL": "http://127.0.0.1:1/v1"})
    assert (r.spec.protocol, r.model, r.configured) == ("openai", "", True)
    with pytest.raises(ConfigurationError, match="no default model"):
        r.ref  # noqa: B018
    with pytest.raises(ConfigurationError, match="no default model"):
        parse_model("foo", env={"FOO_BASE_URL": "http://127.0.0.1:1/v1"})


@pytest.mark.parametrize("bad", ["", "nosuch/model", "groq/../x", "groq/a?b"])
def test_resolve_refuses_what_parse_model_refuses(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        resolve(bad, {})


def test_provider_facts_are_spec_fields() -> None:
    assert PROVIDERS["mistral"].stream_options is False
    assert all(s.stream_options for name, s in PROVIDERS.items() if name != "mistral")
    assert PROVIDERS["groq"].key_prefixes == ("gsk_",)
    assert PROVIDERS["anthropic"].key_prefixes == ("sk-ant-",)
    suggested = sorted((s for s in PROVIDERS.values() if s.suggested), key=lambda s: s.suggested)
    assert [s.name for s in suggested] == ["groq", "openai", "anthropic", "gemini"]
    assert all(s.label for s in PROVIDERS.values())


def test_resolve_is_public() -> None:
    for name in ("resolve", "ResolvedProvider", "ReplyStream", "base_url_variable"):
        assert name in llmconnect.__all__
        assert hasattr(llmconnect, name)


# --------------------------------------------------------------------------- over the wire


@pytest.mark.parametrize("var", ["AIMLAPI_API", "AIMLAPI_API_KEY"])
async def test_aimlapi_key_from_either_variable(
    llm_server: FakeLLMServer, http: httpx.AsyncClient, var: str
) -> None:
    env = {var: "aiml-key", "AIMLAPI_BASE_URL": llm_server.openai_base_url}
    client = APIClientFactory.create(model="aimlapi/gpt-4o-mini", env=env, http_client=http)
    assert await client.chat("hi") == "You said: hi"
    request = llm_server.requests[-1]
    assert request.headers["authorization"] == "Bearer aiml-key"
    assert request.json["model"] == "gpt-4o-mini"


async def test_aimlapi_first_variable_wins(
    llm_server: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    env = {
        "AIMLAPI_API": "first",
        "AIMLAPI_API_KEY": "second",
        "AIMLAPI_BASE_URL": llm_server.openai_base_url,
    }
    await APIClientFactory.create(model="aimlapi", env=env, http_client=http).chat("hi")
    assert llm_server.requests[-1].headers["authorization"] == "Bearer first"


async def test_base_url_override_from_env(
    llm_server: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    env = {"GROQ_API_KEY": "gk", "GROQ_BASE_URL": llm_server.openai_base_url + "/"}
    client = APIClientFactory.create(
        model="groq/llama-3.3-70b-versatile", env=env, http_client=http
    )
    assert client.base_url == llm_server.openai_base_url
    llm_server.enqueue(Reply(text="from the override"))
    assert await client.chat("hi") == "from the override"
    request = llm_server.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.json["model"] == "llama-3.3-70b-versatile"
    assert request.headers["authorization"] == "Bearer gk"


async def test_base_url_argument_beats_env(
    llm_server: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    env = {"GROQ_API_KEY": "gk", "GROQ_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1"}
    client = APIClientFactory.create(
        model="groq/m", env=env, base_url=llm_server.openai_base_url, http_client=http
    )
    assert await client.chat("hi") == "You said: hi"


async def test_custom_provider_from_base_url_variable(
    llm_server: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    client = APIClientFactory.create(
        model="foo/bar", env={"FOO_BASE_URL": llm_server.openai_base_url}, http_client=http
    )
    assert client.provider == "foo"
    llm_server.enqueue(Reply(deltas=["custom ", "works"]))
    assert await collect(client, "hi") == ["custom ", "works"]
    request = llm_server.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.json["model"] == "bar"
    assert "authorization" not in request.headers  # keyless unless FOO_API_KEY is set


async def test_custom_provider_key_from_its_variable(
    llm_server: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    env = {"MY_LLM_BASE_URL": llm_server.openai_base_url, "MY_LLM_API_KEY": "mine"}
    client = APIClientFactory.create(model="my-llm/some/model", env=env, http_client=http)
    await client.chat("hi")
    request = llm_server.requests[-1]
    assert request.json["model"] == "some/model"
    assert request.headers["authorization"] == "Bearer mine"


def test_custom_provider_needs_its_base_url() -> None:
    with pytest.raises(ConfigurationError, match="FOO_BASE_URL"):
        APIClientFactory.create(model="foo/bar", env={"BAR_BASE_URL": "http://x"})


async def test_keyless_ollama(llm_server: FakeLLMServer, http: httpx.AsyncClient) -> None:
    env = {"OLLAMA_BASE_URL": llm_server.openai_base_url}
    client = APIClientFactory.create(model="ollama/llama3.2", env=env, http_client=http)
    assert await client.chat("hi") == "You said: hi"
    assert "authorization" not in llm_server.requests[-1].headers


async def test_keyless_ollama_default_url_is_local() -> None:
    client = APIClientFactory.create(model="ollama", env={})
    assert client.base_url == "http://localhost:11434/v1"
    assert client.ref.model == "llama3.2"


async def test_shared_http_client_is_used_without_http_client(
    llm_server: FakeLLMServer,
) -> None:
    env = {"GROQ_API_KEY": "gk", "GROQ_BASE_URL": llm_server.openai_base_url}
    clients = [APIClientFactory.create(model="groq/m", env=env) for _ in range(3)]
    for i, client in enumerate(clients):
        assert await client.chat(f"n{i}") == f"You said: n{i}"
    assert len(llm_server.requests) == 3
    await llmconnect.aclose_shared_clients()
    # a new pool is opened on demand after closing
    assert await clients[0].chat("again") == "You said: again"


async def test_echo_works_offline_and_is_labelled(llm_server: FakeLLMServer) -> None:
    client = APIClientFactory.create(model="echo", env={})
    deltas = await collect(client, "hello  there world")
    assert deltas[0] == "[echo] "
    reply = "".join(deltas)
    assert reply == "[echo] You said: hello  there world"
    assert client.messages == [
        {"role": "user", "content": "hello  there world"},
        {"role": "assistant", "content": reply},
    ]
    assert client.finish_reason == "stop"
    assert client.usage is not None
    assert client.usage.input_tokens == 3
    assert llm_server.requests == []  # no network
    assert (await client.chat("again")).startswith("[echo] ")


# --------------------------------------------------------------------------- catalog


async def test_list_models_from_custom_server(llm_server: FakeLLMServer) -> None:
    models = await list_models("foo", env={"FOO_BASE_URL": llm_server.openai_base_url})
    assert models == ["fake-a", "fake-b"]
    request = llm_server.requests[-1]
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert "authorization" not in request.headers


async def test_list_models_sends_the_key(
    llm_server: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    env = {"GROQ_API_KEY": "gk", "GROQ_BASE_URL": llm_server.openai_base_url}
    assert await list_models("groq", env=env, http_client=http) == ["fake-a", "fake-b"]
    assert llm_server.requests[-1].headers["authorization"] == "Bearer gk"


async def test_list_models_errors_are_translated(
    llm_server: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    env = {"GROQ_API_KEY": "gk", "GROQ_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1"}
    with pytest.raises(ProviderUnavailableError):
        await list_models("groq", env=env, http_client=http)
    # a base URL pointing at a route the server does not have: an HTTP error, classified
    env = {"GROQ_API_KEY": "gk", "GROQ_BASE_URL": llm_server.base_url + "/nope"}
    with pytest.raises(llmconnect.LLMError) as info:
        await list_models("groq", env=env, http_client=http)
    assert isinstance(info.value, llmconnect.ModelNotFoundError)
    assert info.value.status == 404
    assert info.value.provider == "groq"


async def test_list_models_without_a_needed_key_sends_nothing() -> None:
    assert await list_models("echo", env={}) == ["echo"]
    for provider in ("anthropic", "gemini", "openai"):
        with pytest.raises(ConfigurationError, match="needs an API key"):
            await list_models(provider, env={})


async def test_list_models_unknown_provider() -> None:
    with pytest.raises(ConfigurationError):
        await list_models("nosuch", env={})


def test_provider_status_reports_configured_flags() -> None:
    env = {
        "GROQ_API_KEY": "gk",
        "AIMLAPI_API_KEY": "ak",
        "FOO_BASE_URL": "http://127.0.0.1:1/v1",
        "MY_LLM_BASE_URL": "http://127.0.0.1:2/v1",
        "OPENAI_BASE_URL": "http://127.0.0.1:3/v1",
    }
    status = {r.spec.name: r for r in provider_status(env)}
    assert set(PROVIDERS) <= set(status)
    assert status["groq"].configured is True
    assert status["groq"].key_var == "GROQ_API_KEY"
    assert status["aimlapi"].configured is True
    assert status["aimlapi"].key_var == "AIMLAPI_API_KEY"
    assert status["openai"].configured is False
    assert status["openai"].key_var == "OPENAI_API_KEY"
    assert status["openai"].base_url == "http://127.0.0.1:3/v1"
    assert status["anthropic"].configured is False
    assert status["echo"].configured is True
    assert status["ollama"].configured is True
    assert status["foo"].configured is True
    assert status["foo"].base_url == "http://127.0.0.1:1/v1"
    assert status["my-llm"].spec.protocol == "openai"


def test_provider_status_with_empty_env() -> None:
    status = {r.spec.name: r for r in provider_status({})}
    assert set(status) == set(PROVIDERS)
    configured = {name for name, r in status.items() if r.configured}
    assert configured == {"echo", "ollama", "lmstudio"}


async def test_custom_provider_retries_and_errors_name_it(
    llm_server: FakeLLMServer, http: httpx.AsyncClient, sleeps: SleepRecorder
) -> None:
    client = APIClientFactory.create(
        model="foo/bar",
        env={"FOO_BASE_URL": llm_server.openai_base_url},
        http_client=http,
        retry=RetryPolicy(max_retries=2, sleep=sleeps),
    )
    llm_server.enqueue(Fail(401))
    with pytest.raises(AuthenticationError) as info:
        await client.chat("hi")
    assert info.value.provider == "foo"
