"""Shared fixtures for the web chat tests: the real app on a real uvicorn server on loopback.

Settings never come from the developer's machine: every variable ``Settings`` knows is removed
from the environment and the tests run in an empty directory. Engines get an explicit ``env``.
Slow, observable replies come from the ``echo`` provider with its ``delay`` option; a
:class:`FakeLLMServer` is reachable as the OpenAI-compatible provider ``local`` (``local/fake``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI

from bots.web import WebChat, WebSettings, create_app
from core.clock import Clock
from core.engine import ChatEngine
from core.settings import load_settings
from llmconnect import aclose_shared_clients
from tests.fakes.llm_server import FakeLLMServer

__all__ = ["WebServer", "echo_text", "serve_web"]


@pytest.fixture(autouse=True)
def no_machine_settings(clean_settings_env: None) -> None:
    """Every test here: no setting from this machine, no ``.env`` (tests/conftest.py)."""


def echo_text(prompt: str) -> str:
    """What the echo model answers to ``prompt``."""
    return "[echo] You said: " + " ".join(prompt.split())


@dataclass
class WebServer:
    url: str
    engine: ChatEngine
    app: FastAPI

    @property
    def web(self) -> WebChat:
        return self.app.state.web  # type: ignore[no-any-return]


class _Server(uvicorn.Server):
    """No signal handlers: the test runner owns the process's signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_web(
    *,
    env: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    auth_token: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
    edit_interval: float | None = None,
    guard_clock: Clock | None = None,
    clock: Clock | None = None,
    **settings: Any,
) -> AsyncIterator[WebServer]:
    """The web chat on a free loopback port; the engine (on ``clock``, if given) is shut down
    before the server."""
    engine = ChatEngine(
        load_settings(**settings), env=dict(env or {}), options=options, clock=clock
    )
    app = create_app(
        engine,
        load_settings(WebSettings, **settings),
        auth_token=auth_token,
        allowed_hosts=allowed_hosts,
        edit_interval=edit_interval,
        clock=guard_clock,
    )
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # As `llmconnect run` serves it without WEB_TRUSTED_PROXIES: no forwarded headers believed.
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, proxy_headers=False
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "the web server did not start"
    try:
        yield WebServer(f"http://127.0.0.1:{port}", engine, app)
    finally:
        await engine.aclose()
        await aclose_shared_clients()  # the engine's LLM pool (no http_client here)
        server.should_exit = True
        await asyncio.wait_for(task, 15)


ServeWeb = Callable[..., Awaitable[WebServer]]


@pytest_asyncio.fixture(loop_scope="module")
async def llm_server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(models=["fake"]) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def make_web() -> AsyncIterator[ServeWeb]:
    """``await make_web(env=..., options=..., auth_token=..., **settings)``; all closed at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(**kwargs: Any) -> WebServer:
            return await stack.enter_async_context(serve_web(**kwargs))

        yield make
