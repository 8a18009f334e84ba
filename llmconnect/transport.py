"""HTTP transport: the shared connection pool, timeouts, retries and error translation.

This is the one place where httpx exceptions and HTTP error statuses become :mod:`llmconnect.errors`
— for opening a request *and* for iterating its body, so a protocol module never sees an httpx
exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from .errors import (
    AuthenticationError,
    ContextLengthError,
    InvalidRequestError,
    LLMError,
    LLMTimeoutError,
    ModelNotFoundError,
    ProviderUnavailableError,
    RateLimitError,
    StreamInterruptedError,
)

__all__ = [
    "RetryPolicy",
    "Timeouts",
    "aclose_shared_clients",
    "error_from_response",
    "open_stream",
    "parse_retry_after",
    "pool_transport",
    "shared_http_client",
    "translate_transport_errors",
]

log = logging.getLogger("llmconnect")


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    #: Longest time a reply may go without a content event, counted from the request: keep-alive
    #: comments and partial lines do not count (a provider trickling them is silent); this also
    #: bounds the wait for a stream's response head. The read timeout of requests that are not
    #: streamed (model lists).
    idle: float = 60.0
    write: float = 30.0
    #: Longest a whole reply may take, retries included (``None``: no limit). Past it the reply
    #: ends with :class:`~llmconnect.errors.TimeLimitError`; the deltas already yielded stay.
    max_duration: float | None = 600.0

    def to_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.idle, write=self.write, pool=None)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """openai-python's rule: 2 retries, ``0.5 * 2**n`` s capped at 8 s with jitter, honouring
    ``retry-after-ms`` then ``Retry-After`` (up to 60 s). Used only before the first delta."""

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    #: Injected so tests can record the waits instead of sleeping.
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and 0 <= retry_after <= self.max_retry_after:
            return retry_after
        backoff = min(self.base_delay * 2.0**attempt, self.max_delay)  # int ** int is Any
        return backoff * (1 - 0.25 * random.random())


# One pool per event loop: an httpx.AsyncClient is bound to the loop that first used it. No cap on
# connections, because every live conversation holds one streaming connection.
_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def pool_transport() -> httpx.AsyncBaseTransport:
    """The transport of :func:`shared_http_client`: aiohttp's pool, unlimited connections."""
    return AiohttpTransport(client=_aiohttp_session)


def _aiohttp_session() -> aiohttp.ClientSession:
    # Made on the first request, inside the loop that uses it.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=0,  # unlimited (aiohttp's default caps at 100 connections)
            keepalive_timeout=30.0,
            ssl=httpx.create_ssl_context(),
        ),
        trust_env=True,  # HTTP(S)_PROXY / NO_PROXY, as httpx honours them
        cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies
    )


def shared_http_client() -> httpx.AsyncClient:
    """The process-wide (per event loop) client, so every conversation reuses connections.

    httpx's API over aiohttp's connection pool (``httpx-aiohttp``): httpx's own transport costs
    about twice the CPU per streamed event (httpcore arms an anyio cancel scope and a timer and
    h11 parses in Python on every socket read), which is what lagged the event loop with
    hundreds of live streams (``benchmarks/load.py --llm-transport``, ``docs/benchmarks.md``).
    aiohttp's errors reach :func:`translate_transport_errors` as httpx's. A client passed in
    (``http_client=``) is used as it is.
    """
    loop = asyncio.get_running_loop()
    client = _shared.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            transport=pool_transport(),
            timeout=Timeouts().to_httpx(),
            follow_redirects=False,
        )
        _shared[loop] = client
    return client


async def aclose_shared_clients() -> None:
    loop = asyncio.get_running_loop()
    client = _shared.pop(loop, None)
    if client is not None:
        await client.aclose()


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            return max(float(raw_ms) / 1000, 0.0)
    raw = headers.get("retry-after")
    if not raw:
        return None
    with contextlib.suppress(ValueError):
        return max(float(raw), 0.0)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(raw).timestamp()
        return max(when - (time.time() if now is None else now), 0.0)
    return None


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


#: Longest provider error text kept in a message (cut *after* the key is redacted: cutting first
#: could leave the start of a key where the cut falls).
_MAX_ERROR_TEXT = 300


def _error_text(body: Any) -> tuple[str, str]:
    """(message, type-or-code) from the error shapes of OpenAI, Anthropic and Gemini; uncut."""
    if isinstance(body, list) and body:  # Gemini without alt=sse wraps errors in a list
        body = body[0]
    if not isinstance(body, dict):
        return (str(body) if body else "", "")
    err = body.get("error", body)
    if isinstance(err, str):
        return err, ""
    if not isinstance(err, dict):
        return str(err), ""
    message = str(err.get("message") or "")
    kind = " ".join(
        str(err.get(k) or "") for k in ("type", "code", "status") if err.get(k) is not None
    )
    return message, kind


_CONTEXT_HINTS = (
    "context_length",
    "context length",
    "maximum context",
    "too many tokens",
    "too long",
)


def error_from_body(
    provider: str,
    status: int | None,
    body: Any,
    *,
    retry_after: float | None = None,
    secrets: tuple[str, ...] = (),
) -> LLMError:
    """Map an error status and/or error body to the right :class:`LLMError` subclass."""
    message, kind = _error_text(body)
    message = _redact(message, secrets)[:_MAX_ERROR_TEXT]
    detail = f"{provider}: HTTP {status}" if status else f"{provider}: error in stream"
    text = f"{detail}: {message}" if message else detail
    low = f"{message} {kind}".lower()
    kw: dict[str, Any] = {"provider": provider, "status": status}
    if status in (401, 403) or "authentication" in low or "permission" in low:
        return AuthenticationError(text, **kw)
    if status == 429 or "rate_limit" in low or "resource_exhausted" in low:
        return RateLimitError(text, retry_after=retry_after, **kw)
    if any(h in low for h in _CONTEXT_HINTS):
        return ContextLengthError(text, **kw)
    if status == 404 or "model_not_found" in low:
        return ModelNotFoundError(text, **kw)
    if status in (408, 409) or (status is not None and status >= 500):
        return ProviderUnavailableError(text, retry_after=retry_after, **kw)
    if "overloaded" in low or "server_error" in low or "unavailable" in low or "internal" in low:
        return ProviderUnavailableError(text, **kw)
    if status is not None and 400 <= status < 500:
        return InvalidRequestError(text, **kw)
    return StreamInterruptedError(text, **kw)


async def error_from_response(
    provider: str, response: httpx.Response, secrets: tuple[str, ...] = ()
) -> LLMError:
    try:
        raw = await response.aread()
        body: Any = json.loads(raw) if raw else None
    except (ValueError, httpx.HTTPError):
        body = None
    return error_from_body(
        provider,
        response.status_code,
        body,
        retry_after=parse_retry_after(response.headers),
        secrets=secrets,
    )


@contextlib.contextmanager
def translate_transport_errors(provider: str, *, started: bool) -> Iterator[None]:
    """httpx exceptions → llmconnect errors. ``started``: the response head has arrived."""
    try:
        yield
    except httpx.TransportError as exc:
        # httpx-aiohttp (the shared pool's transport) maps aiohttp's errors too coarsely (a
        # refused connection arrives as httpx.ConnectTimeout): classify the original instead.
        cause = exc.__cause__
        error = cause if isinstance(cause, aiohttp.ClientError) else exc
        kind, name = _failure_kind(error), type(error).__name__
        if kind == "timeout":
            what = "went silent" if started else "did not answer in time"
            raise LLMTimeoutError(
                f"{provider}: the stream {what} ({name})", provider=provider
            ) from None
        if kind == "dropped":
            if started:
                raise StreamInterruptedError(
                    f"{provider}: connection dropped mid-reply ({name})", provider=provider
                ) from None
            raise ProviderUnavailableError(
                f"{provider}: connection failed ({name})", provider=provider
            ) from None
        raise ProviderUnavailableError(
            f"{provider}: cannot reach the provider ({name})", provider=provider
        ) from None


#: What a transport error means, first match wins (httpx's own and aiohttp's exceptions);
#: anything else: the provider could not be reached.
_FAILURE_KINDS: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((httpx.TimeoutException, aiohttp.ServerTimeoutError), "timeout"),
    ((aiohttp.ClientConnectorError,), "unreachable"),  # before ClientOSError, its base
    (
        (
            httpx.RemoteProtocolError,
            httpx.ReadError,
            aiohttp.ClientPayloadError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
        ),
        "dropped",  # the connection broke
    ),
)


def _failure_kind(error: BaseException) -> str:
    for types, kind in _FAILURE_KINDS:
        if isinstance(error, types):
            return kind
    return "unreachable"


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    json_body: Any,
    timeouts: Timeouts,
    secrets: tuple[str, ...] = (),
    watched: bool = False,
) -> AsyncIterator[httpx.Response]:
    """Send the request and yield the (2xx) response, its body not read yet; errors met while
    reading it (``response.aiter_bytes()``) inside the context are translated too.

    ``watched``: the caller bounds the wait for the response head and for every read itself
    (``stream_sse`` does, with its idle timer), so the transport gets no read timeout. Why: a
    transport read timeout is a timer re-armed on every socket read (aiohttp's ``sock_read``:
    one timer handle made and one cancelled per read), which with hundreds of paced streams
    cost about a tenth of the bots' CPU (``docs/benchmarks.md``).

    Leaving the context (normally, by error, or by cancellation) closes the response at once, so
    a cancelled reply never keeps a connection busy.
    """
    timeout = timeouts.to_httpx()
    if watched:
        timeout = httpx.Timeout(
            connect=timeout.connect, read=None, write=timeout.write, pool=timeout.pool
        )
    request = client.build_request(method, url, headers=headers, json=json_body, timeout=timeout)
    with translate_transport_errors(provider, started=False):
        response = await client.send(request, stream=True)
    try:
        if response.status_code >= 400:
            with translate_transport_errors(provider, started=False):
                raise await error_from_response(provider, response, secrets)
        # Errors raised while the caller iterates surface here, at the yield, and are translated
        # by this one block: no wrapper generator per read (it would cost on every chunk).
        with translate_transport_errors(provider, started=True):
            yield response
    finally:
        await response.aclose()
