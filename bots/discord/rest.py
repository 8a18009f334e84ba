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
from typing import Any

import aiohttp
from pydantic import SecretStr

from core.clock import Clock, MonotonicClock
from core.render import SinkRateLimited

__all__ = ["NO_MENTIONS", "DiscordRest", "DiscordRestError"]

log = logging.getLogger("llmconnect.discord.rest")

#: ``allowed_mentions`` for every message the bot sends or edits: nobody is pinged, not even the
#: author replied to (Discord re-parses mentions on every edit, so edits carry it too).
NO_MENTIONS: dict[str, Any] = {"parse": [], "replied_user": False}

_MAX_BUCKETS = 4096


class DiscordRestError(Exception):
    """Discord refused a request (or could not be reached: ``status`` 0).

    Carries Discord's own error code and message; never the token.
    """

    def __init__(self, status: int, code: int = 0, message: str = "") -> None:
        super().__init__(f"Discord answered {status}: {message or 'no message'} (code {code})")
        self.status = status
        self.code = code
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying: Discord had a server-side problem or could not be reached."""
        return self.status == 0 or self.status >= 500


class DiscordRest:
    """A small REST client for message create/edit, interaction webhooks and typing."""

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
        route = "POST /channels/{channel_id}/messages"
        path = f"/channels/{channel_id}/messages"
        return await self.request(route, path, channel_id, payload=payload)

    async def edit_message(
        self, channel_id: str, message_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        route = "PATCH /channels/{channel_id}/messages/{message_id}"
        path = f"/channels/{channel_id}/messages/{message_id}"
        return await self.request(route, path, channel_id, payload=payload)

    async def trigger_typing(self, channel_id: str) -> None:
        route = "POST /channels/{channel_id}/typing"
        await self.request(route, f"/channels/{channel_id}/typing", channel_id)

    async def edit_webhook_message(
        self, application_id: str, token: str, message_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Edit an interaction response (``message_id`` may be ``@original``)."""
        route = "PATCH /webhooks/{application_id}/{token}/messages/{message_id}"
        path = f"/webhooks/{application_id}/{token}/messages/{message_id}"
        return await self.request(route, path, token, payload=payload, auth=False)

    async def create_followup(
        self, application_id: str, token: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        route = "POST /webhooks/{application_id}/{token}"
        path = f"/webhooks/{application_id}/{token}"
        return await self.request(
            route, path, token, payload=payload, params={"wait": "true"}, auth=False
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
        route: str,
        path: str,
        major: str,
        *,
        payload: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Any:
        """One request; raises :class:`SinkRateLimited` or :class:`DiscordRestError`.

        ``route`` names the endpoint (for bucket tracking), ``major`` its top-level resource
        (channel id, interaction token), as Discord's buckets are per route and resource.
        """
        session = self._session
        if session is None or self._token is None:
            raise RuntimeError("DiscordRest.open() was not called")
        key = self._key(route, major)
        self._check_blocked(key, self.clock.now())
        headers = {"User-Agent": self.user_agent}
        if auth:
            headers["Authorization"] = f"Bot {self._token.get_secret_value()}"
        method = route.split(" ", 1)[0]
        self.requests += 1
        try:
            async with session.request(
                method, self.api_url + path, json=payload, params=params, headers=headers
            ) as response:
                data = await _body(response)
                self._learn(route, major, response)
                if response.status < 300:
                    return data
                if response.status == 429:
                    self.rate_limited += 1
                    raise self._rate_limited(key, response, data)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The URL holds an interaction token: name only the error's type.
            raise DiscordRestError(0, 0, f"request failed ({type(exc).__name__})") from None
        code = data.get("code", 0) if isinstance(data, dict) else 0
        message = data.get("message", "") if isinstance(data, dict) else ""
        raise DiscordRestError(response.status, int(code or 0), str(message))

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
