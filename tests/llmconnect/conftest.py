"""Shared fixtures for the llmconnect scenario tests.

Every test talks to a real :class:`FakeLLMServer` over loopback through the public API. Retries
never sleep for real (``sleeps`` records the requested delays), and the httpx client the tests use
goes through :class:`TrackingTransport` (over httpx's own transport and over the shared pool's
aiohttp one, each test once per transport), which counts responses still open so a test can prove a
cancelled or failed reply released its connection — and teardown fails any test that leaks one.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

import llmconnect
from llmconnect import PROVIDERS, APIClientFactory, AsyncAPIClient, RetryPolicy
from llmconnect.transport import pool_transport
from tests.fakes.llm_server import FakeLLMServer

#: A recognisable fake key: any occurrence of it in a log line, error or repr is a leak.
KEY = "sk-test-SECRET-1234567890"


class SleepRecorder:
    """An async ``sleep`` for :class:`RetryPolicy` that records the delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class _TrackedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, tracker: TrackingTransport) -> None:
        self._inner = inner
        self._tracker = tracker
        self._iter: Any = None
        self._closed = False

    def __aiter__(self) -> _TrackedStream:
        self._iter = self._inner.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        return await self._iter.__anext__()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._tracker.open -= 1
        await self._inner.aclose()


class TrackingTransport(httpx.AsyncBaseTransport):
    """A real ``AsyncHTTPTransport`` that counts responses not yet closed."""

    def __init__(self, kind: str = "httpx") -> None:
        #: "aiohttp": the shared pool's transport (production); "httpx": httpx's own, which a
        #: caller's ``http_client=`` usually has. Every test using ``http`` runs on both.
        self._inner = (
            pool_transport()
            if kind == "aiohttp"
            else httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100)
            )
        )
        self.open = 0
        self.opened = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        self.open += 1
        self.opened += 1
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_TrackedStream(response.stream, self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


async def wait_until(predicate: Callable[[], bool], tries: int = 300) -> bool:
    """Poll ``predicate`` every 10 ms, at most ``tries`` times; True once it holds."""
    for _ in range(tries):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


def closed_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_url_for(server: FakeLLMServer, provider: str) -> str:
    """The fake server's base URL for ``provider``'s wire protocol."""
    protocol = PROVIDERS[provider].protocol if provider in PROVIDERS else "openai"
    return {
        "openai": server.openai_base_url,
        "anthropic": server.anthropic_base_url,
        "gemini": server.gemini_base_url,
    }[protocol]


async def collect(client: AsyncAPIClient, msg: str) -> list[str]:
    """Stream a reply to the end and return its deltas."""
    return [delta async for delta in await client.chat(msg, stream=True)]


async def reply(client: AsyncAPIClient, msg: str, stream: bool, received: list[str]) -> str:
    """One reply, streamed (deltas appended to ``received`` as they arrive) or whole."""
    if not stream:
        return await client.chat(msg)
    async for delta in await client.chat(msg, stream=True):
        received.append(delta)
    return "".join(received)


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(models=["fake-b", "fake-a"]) as server:
        yield server
        # Close the library's shared pool (used by tests that pass no http_client) before the
        # server goes away.
        await llmconnect.aclose_shared_clients()


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request: pytest.FixtureRequest) -> TrackingTransport:
    return TrackingTransport(request.param)


@pytest.fixture
async def http(
    llm_server: FakeLLMServer, transport: TrackingTransport
) -> AsyncIterator[httpx.AsyncClient]:
    # Depends on llm_server so it is torn down first: no connection outlives the server.
    async with httpx.AsyncClient(transport=transport) as client:
        yield client
    assert transport.open == 0, f"{transport.open} response(s) left open by the test"


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


ClientMaker = Callable[..., AsyncAPIClient]


@pytest.fixture
def make_client(
    llm_server: FakeLLMServer, http: httpx.AsyncClient, sleeps: SleepRecorder
) -> ClientMaker:
    """``make_client("anthropic", "claude-x", system=..., max_tokens=...)``: a client on the fake.

    Defaults: the fake server's URL for the provider's protocol, :data:`KEY`, an empty ``env``,
    the tracked http client and ``RetryPolicy(max_retries=2, sleep=sleeps)``.
    """

    def make(provider: str = "openai", model: str = "fake", **kwargs: Any) -> AsyncAPIClient:
        kwargs.setdefault("base_url", base_url_for(llm_server, provider))
        kwargs.setdefault("api_key", KEY)
        kwargs.setdefault("env", {})
        kwargs.setdefault("http_client", http)
        kwargs.setdefault("retry", RetryPolicy(max_retries=2, sleep=sleeps))
        return APIClientFactory.create(model=f"{provider}/{model}", **kwargs)

    return make
