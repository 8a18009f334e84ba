"""``list_models`` for every protocol against the stand-in's model lists (paged where the
provider pages), and its errors through the one translation path, never with the key."""

from __future__ import annotations

import httpx
import pytest

from llmconnect import AuthenticationError, LLMError, ProviderUnavailableError, list_models
from tests.fakes.llm_server import Fail, FakeLLMServer, error_body

from .conftest import KEY

MODELS = ["claude-b", "claude-a", "claude-c", "claude-e", "claude-d"]


def _env(server: FakeLLMServer, provider: str) -> dict[str, str]:
    if provider == "anthropic":
        return {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.anthropic_base_url}
    return {"GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": server.gemini_base_url}


@pytest.mark.parametrize("page_size", [None, 1, 2])
async def test_anthropic_list_follows_every_page(
    llm_server: FakeLLMServer, http: httpx.AsyncClient, page_size: int | None
) -> None:
    llm_server.models = list(MODELS)
    llm_server.page_size = page_size
    models = await list_models("anthropic", _env(llm_server, "anthropic"), http_client=http)
    assert models == sorted(MODELS)
    requests = llm_server.requests
    pages = -(-len(MODELS) // (page_size or len(MODELS)))
    assert len(requests) == pages
    for request in requests:
        assert (request.method, request.path) == ("GET", "/v1/models")
        assert request.headers["x-api-key"] == KEY
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in request.headers
    if page_size == 2:
        assert [r.query.get("after_id") for r in requests] == [None, "claude-a", "claude-e"]


@pytest.mark.parametrize("page_size", [None, 1, 3])
async def test_gemini_list_keeps_generate_content_models_of_every_page(
    llm_server: FakeLLMServer, http: httpx.AsyncClient, page_size: int | None
) -> None:
    llm_server.models = ["gemini-2.5-pro", "gemini-2.5-flash"]
    llm_server.embedding_models = ["text-embedding-004", "embedding-001"]
    llm_server.page_size = page_size
    models = await list_models("gemini", _env(llm_server, "gemini"), http_client=http)
    assert models == ["gemini-2.5-flash", "gemini-2.5-pro"]  # no models/ prefix, no embeddings
    requests = llm_server.requests
    assert len(requests) == (-(-4 // page_size) if page_size else 1)
    for request in requests:
        assert (request.method, request.path) == ("GET", "/v1beta/models")
        assert request.headers["x-goog-api-key"] == KEY
        assert "key" not in request.query  # never in the URL
    if page_size == 1:
        assert [r.query.get("pageToken") for r in requests] == [None, "1", "2", "3"]


async def test_openai_compatible_list(llm_server: FakeLLMServer, http: httpx.AsyncClient) -> None:
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": llm_server.openai_base_url}
    assert await list_models("openai", env, http_client=http) == ["fake-a", "fake-b"]
    assert llm_server.requests[-1].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthenticationError), (503, ProviderUnavailableError)]
)
async def test_list_errors_are_translated_without_the_key(
    llm_server: FakeLLMServer,
    http: httpx.AsyncClient,
    provider: str,
    status: int,
    error: type[LLMError],
) -> None:
    # an error body that echoes the key (as some proxies do) must not carry it into the message
    body = error_body(provider, status, f"key {KEY} refused")  # type: ignore[arg-type]
    llm_server.list_failure = Fail(status, body=body)
    with pytest.raises(error) as info:
        await list_models(provider, _env(llm_server, provider), http_client=http)
    assert info.value.provider == provider
    assert info.value.status == status
    assert "refused" in str(info.value)
    assert KEY not in str(info.value)
    assert KEY not in info.value.user_message
    assert KEY not in repr(info.value)


async def test_list_unreadable_body_is_an_llm_error(
    llm_server: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    env = {"FOO_BASE_URL": llm_server.base_url + "/v1beta"}  # Gemini's shape for an OpenAI list
    assert await list_models("foo", env, http_client=http) == []  # no "data": nothing listed
    env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": llm_server.base_url + "/v1beta"}
    with pytest.raises(LLMError):  # no such route: 404 translated
        await list_models("anthropic", env, http_client=http)
