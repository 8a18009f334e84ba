"""A real MCP server for the tests, written with the ``mcp`` SDK (``MCPServer``, FastMCP's
successor in mcp 2): stdio when run as ``python -m tests.fakes.mcp_server``, streamable HTTP on
loopback through :func:`http_app`.

Tools: ``add(a, b)``, ``echo(text)`` (``text`` repeated ``times`` times: long results),
``slow(seconds)`` (sleeps, then says so), ``fail(message)`` (raises: the call is an error
result), ``env(name)`` (an environment variable's value as the server sees it) and ``die()``
(the process exits at once: a stdio server that dies mid-call).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer

__all__ = ["SCRIPT", "HttpMcpServer", "build_server", "main", "serve_http", "stdio_servers"]

#: This file: run as a script, it is a stdio MCP server (the tests run in empty directories,
#: where ``-m tests.fakes.mcp_server`` would not be found).
SCRIPT = os.path.abspath(__file__)


def stdio_servers(*names: str, **extra: Any) -> str:
    """``MCP_SERVERS`` with one stdio server of this file per name (each entry with ``extra``)."""
    import json

    return json.dumps({name: {"command": [sys.executable, SCRIPT], **extra} for name in names})


def build_server(name: str = "fake") -> MCPServer:
    server = MCPServer(name)

    @server.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return str(a + b)

    @server.tool()
    def echo(text: str, times: int = 1) -> str:
        """The text, repeated."""
        return text * times

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool()
    def fail(message: str) -> str:
        """Always fails."""
        raise RuntimeError(message)

    @server.tool()
    def env(name: str) -> str:
        """An environment variable's value."""
        return os.environ.get(name, "")

    @server.tool()
    def die() -> str:
        """Exit the process at once."""
        os._exit(3)

    return server


@dataclass
class HttpMcpServer:
    """A streamable-HTTP server running on loopback: its ``url``, and the ``authorization``
    headers its requests carried (it answers 401 without ``Bearer <token>``, when set)."""

    url: str
    authorization: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def serve_http(name: str = "web", token: str = "") -> AsyncIterator[HttpMcpServer]:
    """:func:`build_server` over streamable HTTP on ``127.0.0.1`` (a free port), in this
    process; closed on exit."""
    app = build_server(name).streamable_http_app(host="127.0.0.1")
    seen: list[str] = []

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"").decode()
            seen.append(auth)
            if token and auth != f"Bearer {token}":
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await app(scope, receive, send)

    config = uvicorn.Config(guarded, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield HttpMcpServer(f"http://127.0.0.1:{port}/mcp", seen)
    finally:
        server.should_exit = True
        await task


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "fake"
    build_server(name).run("stdio")


if __name__ == "__main__":
    main()
