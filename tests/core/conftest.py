"""Shared fixtures for the core tests.

Settings never come from the developer's machine: every variable ``Settings`` knows is removed from
the environment and the tests run in an empty directory (so no ``.env`` is read). Engines always get
an explicit ``env`` mapping. Where a real HTTP provider matters, a :class:`FakeLLMServer` on loopback
is reachable as the custom OpenAI-compatible provider ``local`` (models ``local/<name>``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import pytest

from core.clock import Clock
from core.conversations import ConversationKey, Status
from core.engine import ChatEngine
from core.settings import load_settings
from llmconnect import aclose_shared_clients
from tests.fakes.llm_server import FakeLLMServer

KEY = ConversationKey("test", "general")
OTHER = ConversationKey("test", "random")


@pytest.fixture(autouse=True)
def no_machine_settings(clean_settings_env: None) -> None:
    """Every test here: no setting from this machine, no ``.env`` (tests/conftest.py)."""


async def wait_for(predicate: Callable[[], bool], tries: int = 500) -> None:
    """Poll ``predicate``: first on every loop iteration (in-process work such as the echo
    provider gets there within a few), then every 10 ms (loopback I/O), at most ``tries`` times."""
    for n in range(tries):
        if predicate():
            return
        await asyncio.sleep(0 if n < 50 else 0.01)
    assert predicate(), "condition never became true"


def final(status: Status) -> bool:
    return status in (Status.COMPLETE, Status.ERROR, Status.CANCELLED)


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(models=["fake"]) as server:
        yield server


@pytest.fixture
async def http(llm_server: FakeLLMServer) -> AsyncIterator[httpx.AsyncClient]:
    # Depends on llm_server so it is closed first: no connection outlives the server.
    async with httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=20)
    ) as client:
        yield client


@pytest.fixture
def local_env(llm_server: FakeLLMServer) -> dict[str, str]:
    return {"LOCAL_BASE_URL": llm_server.openai_base_url}


EngineMaker = Callable[..., ChatEngine]


@pytest.fixture
async def make_engine() -> AsyncIterator[EngineMaker]:
    """``make_engine(env={...}, clock=..., http_client=..., options=..., **settings_overrides)``.

    ``env`` defaults to ``{}``; every engine made is shut down at teardown (before the server).
    """
    engines: list[ChatEngine] = []

    def make(
        *,
        env: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        http_client: httpx.AsyncClient | None = None,
        options: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> ChatEngine:
        engine = ChatEngine(
            load_settings(**overrides),
            env=dict(env or {}),
            clock=clock,
            http_client=http_client,
            options=options,
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()
    await aclose_shared_clients()  # the pool an engine without http_client used, if any


@pytest.fixture
def local_engine(
    local_env: dict[str, str], http: httpx.AsyncClient, make_engine: EngineMaker
) -> EngineMaker:
    """Engines whose default model is ``local/fake`` on the fake server.

    ``make_engine`` is set up last so its engines are shut down before the client and server.
    """

    def make(**overrides: Any) -> ChatEngine:
        overrides.setdefault("llmconnect_model", "local/fake")
        overrides.setdefault("env", local_env)
        overrides.setdefault("http_client", http)
        return make_engine(**overrides)

    return make
