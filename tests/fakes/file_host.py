"""A local file host stand-in (aiohttp): Discord's CDN or Slack's ``files.slack.com``.

It serves the files it is given at their paths, and can behave as the real hosts and as a hostile
or broken one does:

- ``token=...``: every file needs ``Authorization: Bearer <token>``, as Slack's file host does;
  without it the answer is what Slack sends then, a 200 HTML sign-in page, not the file;
- ``length=``: the ``Content-Length`` sent: the body's (default), ``None`` (chunked: no length
  announced, the body streamed in pieces), or any number (a lie: the body is what it is);
- ``redirect=``: a 302 to that URL instead of a body;
- ``hang="headers"``: never answer; ``hang="body"``: send the headers and half the body, then
  stall (both until the server closes).

It records every request (path and ``Authorization`` header) in :attr:`FakeFileHost.requests`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from .base import LoopbackServer

__all__ = ["FakeFileHost", "HostedFile", "SeenRequest"]

SIGN_IN_PAGE = b"<!DOCTYPE html><html><body>Sign in to Slack</body></html>"


@dataclass
class HostedFile:
    body: bytes
    content_type: str = "application/octet-stream"
    length: int | Literal["body"] | None = "body"
    redirect: str | None = None
    hang: Literal["headers", "body"] | None = None


@dataclass(frozen=True)
class SeenRequest:
    path: str
    authorization: str | None


class FakeFileHost(LoopbackServer):
    def __init__(self, *, token: str | None = None, host: str = "127.0.0.1") -> None:
        self.token = token
        self.host = host
        self.port = 0
        self.files: dict[str, HostedFile] = {}
        self.requests: list[SeenRequest] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/octet-stream",
        *,
        length: int | Literal["body"] | None = "body",
        redirect: str | None = None,
        hang: Literal["headers", "body"] | None = None,
    ) -> str:
        """Serve ``body`` at ``path``; returns its URL."""
        path = "/" + path.lstrip("/")
        self.files[path] = HostedFile(body, content_type, length, redirect, hang)
        return self.base_url + path

    async def start(self) -> FakeFileHost:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._serve)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def close(self) -> None:
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(SeenRequest(request.path, request.headers.get("Authorization")))
        hosted = self.files.get(request.path)
        if hosted is None:
            return web.Response(status=404, text="not found")
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return web.Response(body=SIGN_IN_PAGE, content_type="text/html")
        if hosted.redirect is not None:
            raise web.HTTPFound(hosted.redirect)
        if hosted.hang == "headers":
            await self._closing.wait()
            return web.Response(status=503)
        response = web.StreamResponse(headers={"Content-Type": hosted.content_type})
        length = len(hosted.body) if hosted.length == "body" else hosted.length
        if length is None:
            response.enable_chunked_encoding()
        else:
            response.content_length = length
        await response.prepare(request)
        body = hosted.body
        if hosted.hang == "body":
            await response.write(body[: len(body) // 2])
            await self._closing.wait()
            return response
        if length is not None and length < len(body):
            body = body[:length]  # a header that says less than there is: the client reads that
        for start in range(0, len(body), 4096):
            await response.write(body[start : start + 4096])
        if length is not None and length > len(body):
            return response  # a header that says more: the connection ends short
        await response.write_eof()
        return response
