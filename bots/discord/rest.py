"""The few Discord REST calls a streamed reply makes, with rate limits surfaced, never slept on.

Why not discord.py's own HTTP client for these: it sleeps pre-emptively when a bucket is empty,
retries a 429 after ``retry_after`` (giving up after 5 tries) and blocks every request during a
global limit, so an awaited ``message.edit()`` can take seconds and, under load, fail and lose a
reply. Its ``max_ratelimit_timeout`` cannot go below 30 s. The renderer (``core.render``) already
coalesces and paces edits; what it needs is to *know* when to wait. So these calls raise
:class:`~core.render.SinkRateLimited` instead: ``retry_after`` from the 429 body (``shared=True``
for a global limit, so the whole bot's :class:`~core.budget.EditBudget` backs off), or at once,
without a request, while Discord's ``X-RateLimit-*`` headers say the route's bucket is empty.
Everything else (gateway, commands, interaction callbacks) stays with discord.py.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from core.clock import Clock, MonotonicClock
from core.render import SinkRateLimited

__all__ = [
    "NO_MENTIONS",
    "DiscordNotFound",
    "DiscordRest",
    "DiscordRestError",
    "DiscordServerError",
    "DiscordUnreachable",
    "Route",
]

log = logging.getLogger("llmconnect.discord.rest")

#: ``allowed_mentions`` for every message the bot sends or edits: nobody is pinged, not even the
#: author replied to (Discord re-parses mentions on every edit, so edits carry it too).
NO_MENTIONS: dict[str, Any] = {"parse": [], "replied_user": False}

_MAX_BUCKETS = 4096


class DiscordRestError(Exception):
    """Discord refused a request (or could not be reached: ``status`` 0).

    Carries Discord's own error code and message; never the token. What callers tell apart has
    its own subclass (:class:`DiscordNotFound`, :class:`DiscordServerError`,
    :class:`DiscordUnreachable`), so nobody compares ``status`` numbers.
    """

    #: Worth retrying: Discord had a server-side problem or could not be reached.
    transient = False

    def __init__(self, status: int, code: int = 0, message: str = "") -> None:
        super().__init__(f"Discord answered {status}: {message or 'no message'} (code {code})")
        self.status = status
        self.code = code
        self.message = message

    @staticmethod
    def of(status: int, code: int = 0, message: str = "") -> DiscordRestError:
        """The error class that fits Discord's answer ``status``."""
        if status == 404:
            return DiscordNotFound(status, code, message)
        if status >= 500:
            return DiscordServerError(status, code, message)
        return DiscordRestError(status, code, message)


class DiscordNotFound(DiscordRestError):
    """404: the message (or the interaction's webhook) no longer exists."""


class DiscordServerError(DiscordRestError):
    """A 5xx: Discord failed, the request was not carried out; safe to repeat."""

    transient = True


class DiscordUnreachable(DiscordRestError):
    """No answer (timeout, connection refused or dropped; ``status`` 0). Whether the request
    was carried out is unknown: repeating a create could post twice."""

    transient = True

    def __init__(self, message: str) -> None:
        super().__init__(0, 0, message)


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint, spelled once: method, path template and what selects its rate-limit bucket.

    Discord's buckets are per route *and* top-level resource (``major``: the channel, or the
    interaction's token), as in discord.py's own ``Route``.
    """

    method: str
    path: str  #: template, e.g. ``/channels/{channel_id}/messages``
    major: str  #: the path parameter naming the resource the bucket is per
    auth: bool = True  #: interaction webhooks are authorised by their token, not the bot's

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def format(self, params: dict[str, str]) -> str:
        """The path with ``params`` filled in, each quoted to stay within its path segment."""
        return self.path.format_map({k: quote(str(v), safe="@") for k, v in params.items()})


CREATE_MESSAGE = Route("POST", "/channels/{channel_id}/messages", "channel_id")
EDIT_MESSAGE = Route("PATCH", "/channels/{channel_id}/messages/{message_id}", "channel_id")
DELETE_MESSAGE = Route("DELETE", "/channels/{channel_id}/messages/{message_id}", "channel_id")
TRIGGER_TYPING = Route("POST", "/channels/{channel_id}/typing", "channel_id")
EDIT_WEBHOOK_MESSAGE = Route(
    "PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}", "token", auth=False
)
CREATE_FOLLOWUP = Route("POST", "/webhooks/{application_id}/{token}", "token", auth=False)


class DiscordRest:
    """A small REST client for message create/edit/delete, interaction webhooks and typing."""

    def __init__(
        self,
        api_url: str,
        *,
        clock: Clock | None = None,
        timeout: float = 15.0,
        user_agent: str = "DiscordBot (https://github.com/llmconnect, 0.1) llmconnect",
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.clock = clock or MonotonicClock()
        self.timeout = timeout
        self.user_agent = user_agent
        self._token: SecretStr | None = None
        self._session: aiohttp.ClientSession | None = None
        self._hashes: dict[str, str] = {}  # route -> Discord's bucket hash
        self._blocked: dict[str, float] = {}  # bucket key -> time its window resets
        self._global_until = 0.0
        self.requests = 0
        self.rate_limited = 0

    def __repr__(self) -> str:
        return f"DiscordRest({self.api_url!r})"

    def open(self, token: SecretStr) -> None:
        """Start the HTTP session (inside the running loop) with the bot token."""
        self._token = token
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ----------------------------------------------------------------- the calls

    async def create_message(self, channel_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        return cast(
            "dict[str, Any]",
            await self.request(CREATE_MESSAGE, payload=payload, channel_id=channel_id),
        )

    async def edit_message(
        self, channel_id: str, message_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        return cast(
            "dict[str, Any]",
            await self.request(
                EDIT_MESSAGE, payload=payload, channel_id=channel_id, message_id=message_id
            ),
        )

    async def delete_message(self, channel_id: str, message_id: str) -> None:
        """Delete one of the bot's own messages (no permission needed for that)."""
        await self.request(DELETE_MESSAGE, channel_id=channel_id, message_id=message_id)

    async def trigger_typing(self, channel_id: str) -> None:
        await self.request(TRIGGER_TYPING, channel_id=channel_id)

    async def edit_webhook_message(
        self, application_id: str, token: str, message_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Edit an interaction response (``message_id`` may be ``@original``)."""
        return cast(
            "dict[str, Any]",
            await self.request(
                EDIT_WEBHOOK_MESSAGE,
                payload=payload,
                application_id=application_id,
                token=token,
                message_id=message_id,
            ),
        )

    async def create_followup(
        self, application_id: str, token: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        return cast(
            "dict[str, Any]",
            await self.request(
                CREATE_FOLLOWUP,
                payload=payload,
                query={"wait": "true"},
                application_id=application_id,
                token=token,
            ),
        )

    # ----------------------------------------------------------------- machinery

    def _key(self, route: str, major: str) -> str:
        return f"{self._hashes.get(route, route)}:{major}"

    def _check_blocked(self, key: str, now: float) -> None:
        if now < self._global_until:
            raise SinkRateLimited(self._global_until - now, shared=True)
        until = self._blocked.get(key)
        if until is not None:
            if now < until:
                raise SinkRateLimited(until - now)
            del self._blocked[key]

    def _block(self, key: str, until: float) -> None:
        if len(self._blocked) >= _MAX_BUCKETS:
            now = self.clock.now()
            for stale in [k for k, t in self._blocked.items() if t <= now]:
                del self._blocked[stale]
        self._blocked[key] = until

    async def request(
        self,
        route: Route,
        *,
        payload: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        **params: str,
    ) -> Any:
        """One request to ``route`` with its path ``params``; raises :class:`SinkRateLimited`
        or a :class:`DiscordRestError` (the subclass that fits Discord's answer)."""
        session = self._session
        if session is None or self._token is None:
            raise RuntimeError("DiscordRest.open() was not called")
        name, major = str(route), params[route.major]
        key = self._key(name, major)
        self._check_blocked(key, self.clock.now())
        headers = {"User-Agent": self.user_agent}
        if route.auth:
            headers["Authorization"] = f"Bot {self._token.get_secret_value()}"
        self.requests += 1
        try:
            async with session.request(
                route.method,
                self.api_url + route.format(params),
                json=payload,
                params=query,
                headers=headers,
            ) as response:
                data = await _body(response)
                self._learn(name, major, response)
                if response.status < 300:
                    return data
                if response.status == 429:
                    self.rate_limited += 1
                    raise self._rate_limited(key, response, data)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The URL holds an interaction token: name only the error's type.
            raise DiscordUnreachable(f"request failed ({type(exc).__name__})") from None
        code = data.get("code", 0) if isinstance(data, dict) else 0
        message = data.get("message", "") if isinstance(data, dict) else ""
        raise DiscordRestError.of(response.status, int(code or 0), str(message))

    def _learn(self, route: str, major: str, response: aiohttp.ClientResponse) -> None:
        """Remember an emptied bucket from Discord's headers, so we wait instead of asking."""
        headers = response.headers
        bucket = headers.get("X-RateLimit-Bucket")
        if bucket:
            self._hashes[route] = bucket
        if response.status != 429 and headers.get("X-RateLimit-Remaining") == "0":
            try:
                reset_after = float(headers.get("X-RateLimit-Reset-After", "0"))
            except ValueError:
                return
            if reset_after > 0:
                self._block(self._key(route, major), self.clock.now() + reset_after)

    def _rate_limited(
        self, key: str, response: aiohttp.ClientResponse, data: Any
    ) -> SinkRateLimited:
        headers = response.headers
        if isinstance(data, dict) and "retry_after" in data:
            retry_after = float(data["retry_after"])
            shared = bool(data.get("global")) or headers.get("X-RateLimit-Global") == "true"
        else:
            # Not Discord's JSON (a proxy or Cloudflare): back off everything, by Retry-After.
            try:
                retry_after = float(headers.get("Retry-After", "1"))
            except ValueError:
                retry_after = 1.0
            shared = True
        until = self.clock.now() + retry_after
        if shared:
            self._global_until = max(self._global_until, until)
            log.warning("Discord global rate limit: pausing for %.2f s", retry_after)
        else:
            self._block(key, until)
        return SinkRateLimited(retry_after, shared=shared)


async def _body(response: aiohttp.ClientResponse) -> Any:
    text = await response.text()
    if response.headers.get("Content-Type", "").startswith("application/json") and text:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text
