"""Bounds on what one web client may send and hold open: request bodies
(``WEB_MAX_BODY_BYTES``) and reply streams (``WEB_MAX_STREAMS``).

Why plain ASGI middleware: a Server-Sent Events response lasts as long as the reply (or the
tab), and only around the whole ASGI call is "open" and "closed" known; Starlette's
``BaseHTTPMiddleware`` would buffer the stream.

Bodies are counted by FastAPI's own ``max_body_size`` (Starlette's ``RequestBodyLimitMiddleware``:
413 once more than the limit has been read, chunked or not). It counts lazily, so a route that
never reads its body (``/reset``) would still run under its 413: :class:`DeclaredBodyLimit`
refuses a declared ``Content-Length`` past the limit before anything runs.
"""

from __future__ import annotations

from collections import Counter

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DeclaredBodyLimit", "StreamLimit", "is_stream", "too_large"]


def too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": f"The request body is larger than WEB_MAX_BODY_BYTES ({limit:,} bytes)."},
        status_code=413,
    )


class DeclaredBodyLimit:
    """ASGI middleware: a request whose ``Content-Length`` is past ``limit`` gets 413 at once."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.limit:
                await too_large(self.limit)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_stream(scope: Scope) -> bool:
    """``GET /chat/{conv_id}/bot-stream``: a request that stays open while a reply streams."""
    path: str = scope["path"]
    return scope["method"] == "GET" and path.startswith("/chat/") and path.endswith("/bot-stream")


class StreamLimit:
    """ASGI middleware: at most ``limit`` open reply streams per client address (per process);
    the next one gets 429 until one closes."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        #: Open streams per client address; an address with none has no entry.
        self.open: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_stream(scope):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("?", 0))[0]
        if self.open[client] >= self.limit:
            message = (
                f"Too many open reply streams from this address (WEB_MAX_STREAMS={self.limit}); "
                "close another tab of the chat and try again."
            )
            await JSONResponse({"error": message}, status_code=429)(scope, receive, send)
            return
        self.open[client] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open[client] -= 1
            if self.open[client] <= 0:
                del self.open[client]
