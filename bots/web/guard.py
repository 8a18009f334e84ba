"""Every web chat request passes here first: the Host check, the token, the cross-site rule,
the security headers.

Why a plain ASGI middleware: it also guards the static files and the SSE stream, and it does not
buffer streamed responses (Starlette's ``BaseHTTPMiddleware`` wraps them).

- ``WEB_AUTH_TOKEN``, when set, is required by every endpoint: as ``Authorization: Bearer
  <token>`` (scripts), or as the session cookie that the login form (``POST /login``) sets for a
  browser (``EventSource`` cannot send headers). The cookie holds an HMAC of the token, not the
  token; it is ``HttpOnly`` and ``SameSite=Strict`` (no cross-site request carries it).
- ``allowed_hosts`` (set when bound to loopback): a page on another site that rebinds its DNS name
  to 127.0.0.1 sends its own ``Host`` and is turned away.
- Cross-site requests change nothing: a POST (PUT, PATCH, DELETE) must come from the chat's own
  page (``Sec-Fetch-Site: same-origin``, or an ``Origin`` equal to the served origin), else 403.
  ``SameSite=Strict`` alone is not enough: another port of 127.0.0.1 is the *same site*, and
  without a token there is no cookie at all. A request with neither header is not from a
  browser (every browser sends ``Origin`` on a cross-origin POST): a script may change state with
  the bearer token, or, when no token is set, with a JSON body (a page cannot send JSON to another
  origin without a CORS preflight, which this app never grants).
- Guessing is throttled: after :data:`SIGN_IN_FAILURES` wrong tokens (form or bearer) from one
  client address within :data:`SIGN_IN_WINDOW` seconds, every sign-in attempt from it gets a 429
  with ``Retry-After`` until the oldest failure leaves the window, right token or not. The
  address is the connecting one: uvicorn believes ``X-Forwarded-For`` only from
  ``WEB_TRUSTED_PROXIES`` (``bots/web/frontend.py``).
- A strict Content-Security-Policy: scripts only from ``/static``, no inline script or event
  handler, so even a rendering mistake could not run HTML from a reply.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from urllib.parse import parse_qs

from pydantic import SecretStr
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.clock import Clock
from core.policy import SlidingLog

from .settings import LOOPBACK_HOSTS, is_loopback

__all__ = [
    "COOKIE",
    "CSP",
    "LOOPBACK_HOSTS",
    "SIGN_IN_FAILURES",
    "SIGN_IN_WINDOW",
    "Guard",
    "cross_site_refusal",
    "is_loopback",
    "session_value",
]

COOKIE = "llmconnect_session"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)
_MAX_LOGIN_BODY = 4096
#: Methods that change state: only from the chat's own page (or a script, see the module doc).
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_SITE = "Cross-site request refused: changes are only taken from the chat's own page."
NEEDS_BEARER = (
    "Request refused: a change sent without the browser's Origin header needs "
    "Authorization: Bearer <WEB_AUTH_TOKEN>."
)
NEEDS_JSON = (
    "Request refused: a change sent without the browser's Origin header must be JSON "
    "(Content-Type: application/json)."
)
#: Wrong tokens one client address may send per window before it must wait.
SIGN_IN_FAILURES = 5
SIGN_IN_WINDOW = 60.0

_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>LLMConnect — sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>LLMConnect</h1>
<p>This web chat needs its access token (<code>WEB_AUTH_TOKEN</code>).</p>{note}
<form method="post" action="/login">
<label>Token <input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit">Open the chat</button></form></main></body></html>
"""


def session_value(token: str) -> str:
    """The cookie value for ``token``: proves the token was given without being it."""
    return hmac.new(token.encode(), b"llmconnect web session", hashlib.sha256).hexdigest()


def _hostname(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_json(headers: Headers) -> bool:
    media = headers.get("content-type", "").partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def cross_site_refusal(
    scope: Scope, headers: Headers, *, token_set: bool, bearer: bool
) -> str | None:
    """Why a state-changing request is refused (the cross-site rule above), or ``None``.

    ``bearer``: the request carries the right token as ``Authorization: Bearer``.
    """
    site = headers.get("sec-fetch-site")
    if site is not None:  # sent by every current browser; trusted over Origin
        return None if site.strip().lower() == "same-origin" else CROSS_SITE
    origin = headers.get("origin")
    if origin is not None:  # "null" (a sandboxed frame, a file) never matches
        served = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
        return None if origin.strip().lower() == served else CROSS_SITE
    if token_set:
        return None if bearer else NEEDS_BEARER
    return None if _is_json(headers) else NEEDS_JSON


def _refuse(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=403)


class Guard:
    """ASGI middleware: Host check, token check, sign-in throttle, cross-site rule, security
    headers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: SecretStr | None = None,
        allowed_hosts: Sequence[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.app = app
        #: Wrong tokens per client address.
        self.throttle = SlidingLog(SIGN_IN_FAILURES, SIGN_IN_WINDOW, clock)
        # A SecretStr, so that no repr (Starlette's middleware list shows its arguments) shows it.
        value = token.get_secret_value() if token is not None else ""
        self._token = value.encode() if value else None
        self._session = session_value(value).encode() if value else None
        self._hosts = frozenset(h.strip("[]").lower() for h in allowed_hosts or ()) or None

    def __repr__(self) -> str:
        return f"Guard(token={'set' if self._token else 'none'}, hosts={sorted(self._hosts or ())})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                headers = MutableHeaders(raw=raw)
                for name, value in _SECURITY_HEADERS:
                    headers.setdefault(name, value)
                message["headers"] = headers.raw
            await send(message)

        headers = Headers(scope=scope)
        if self._hosts is not None and _hostname(headers.get("host", "")) not in self._hosts:
            await PlainTextResponse("Invalid host header.", 400)(scope, receive, send_secure)
            return
        token_set = self._token is not None
        unsafe = scope["method"] in UNSAFE_METHODS
        via: str | None = None
        if self._token is not None:
            client = (scope.get("client") or ("?", 0))[0]
            login = scope["method"] == "POST" and scope["path"] == "/login"
            bearer = "authorization" in headers
            wait = self.throttle.wait(client) if login or bearer else 0.0
            if wait > 0:
                await self._too_many(wait)(scope, receive, send_secure)
                return
            via = self._authorized(headers)
            if via is None:
                if bearer:
                    self.throttle.record(client)
                refusal = (
                    cross_site_refusal(scope, headers, token_set=True, bearer=False)
                    if login
                    else None
                )
                response: Response
                if refusal is not None:  # no signing in from another page (login CSRF)
                    response = _refuse(refusal)
                elif login:
                    response = await self._login(receive, client)
                else:
                    response = self._challenge(scope, headers)
                await response(scope, receive, send_secure)
                return
        if unsafe:
            refusal = cross_site_refusal(
                scope, headers, token_set=token_set, bearer=via == "bearer"
            )
            if refusal is not None:
                await _refuse(refusal)(scope, receive, send_secure)
                return
        await self.app(scope, receive, send_secure)

    def _authorized(self, headers: Headers) -> str | None:
        """How the request proves the token: ``"bearer"``, ``"cookie"``, or ``None``."""
        assert self._token is not None
        assert self._session is not None
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token):
            return "bearer"
        cookie = cookie_parser(headers.get("cookie", "")).get(COOKIE)
        if cookie is not None and hmac.compare_digest(cookie.encode(), self._session):
            return "cookie"
        return None

    @staticmethod
    def _too_many(wait: float) -> PlainTextResponse:
        seconds = math.ceil(wait)
        return PlainTextResponse(
            f"Too many wrong tokens from this address; try again in {seconds} s.",
            status_code=429,
            headers={"Retry-After": str(seconds)},
        )

    @staticmethod
    def _challenge(scope: Scope, headers: Headers) -> HTMLResponse | JSONResponse:
        if scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
            return HTMLResponse(_LOGIN_PAGE.format(note=""), status_code=401)
        return JSONResponse(
            {"error": "Authentication required (WEB_AUTH_TOKEN)."},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def _login(self, receive: Receive, client: str) -> HTMLResponse | RedirectResponse:
        assert self._token is not None
        assert self._session is not None
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > _MAX_LOGIN_BODY:
                return HTMLResponse(_LOGIN_PAGE.format(note=""), status_code=413)
            if not message.get("more_body"):
                break
        given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0].strip()
        if not hmac.compare_digest(given.encode(), self._token):
            self.throttle.record(client)
            note = "<p role=alert>That token is not right.</p>"
            return HTMLResponse(_LOGIN_PAGE.format(note=note), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE, self._session.decode(), httponly=True, samesite="strict", path="/"
        )
        return response
