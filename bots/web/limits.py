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

__all__ = [
    "UPLOAD_LIMIT",
    "DeclaredBodyLimit",
    "StreamLimit",
    "is_stream",
    "is_upload",
    "too_large",
    "upload_limit",
]


def too_large(limit: int, what: str = "WEB_MAX_BODY_BYTES") -> JSONResponse:
    return JSONResponse(
        {"error": f"The request body is larger than {what} ({limit:,} bytes)."},
        status_code=413,
    )


#: What bounds an upload, as its 413 names it.
UPLOAD_LIMIT = "WEB_MAX_BODY_BYTES + MAX_ATTACHMENTS * MAX_ATTACHMENT_BYTES"


def upload_limit(max_body_bytes: int, max_attachments: int, max_attachment_bytes: int) -> int:
    """The largest ``multipart/form-data`` ``send-message`` body: ``WEB_MAX_BODY_BYTES`` plus
    ``MAX_ATTACHMENTS`` files of ``MAX_ATTACHMENT_BYTES`` (about 51 MB with the defaults; as
    configured at start-up). Every other body keeps ``WEB_MAX_BODY_BYTES``."""
    return max_body_bytes + max_attachments * max_attachment_bytes


def is_upload(scope: Scope) -> bool:
    """``POST /chat/{conv_id}/send-message`` as ``multipart/form-data`` (files)."""
    path: str = scope["path"]
    if scope["method"] != "POST" or not path.startswith("/chat/"):
        return False
    if not path.endswith("/send-message"):
        return False
    media = Headers(scope=scope).get("content-type", "").partition(";")[0].strip().lower()
    return media == "multipart/form-data"


class DeclaredBodyLimit:
    """ASGI middleware: a request whose ``Content-Length`` is past ``limit`` (an upload:
    ``uploads``) gets 413 at once."""

    def __init__(self, app: ASGIApp, *, limit: int, uploads: int | None = None) -> None:
        self.app = app
        self.limit = limit
        self.uploads = limit if uploads is None else uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length", "")
            upload = is_upload(scope)
            limit = self.uploads if upload else self.limit
            if declared.isdigit() and int(declared) > limit:
                what = UPLOAD_LIMIT if upload else "WEB_MAX_BODY_BYTES"
                await too_large(limit, what)(scope, receive, send)
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
