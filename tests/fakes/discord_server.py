"""A local Discord REST + gateway stand-in (aiohttp) for a real discord.py client.

Why: the Discord adapter must be tested with the real discord.py client end to end — login, the
gateway handshake, event parsing, app-command dispatch, interaction callbacks — and against the
rate limits that shape streaming (about 5 message edits per 5 s per channel, 50 requests/s per
bot). This server speaks enough of both protocols for that; point discord.py at it with
``DISCORD_API_URL`` / ``DISCORD_GATEWAY_URL`` (``api_url`` / ``gateway_url`` here).

Gateway (``/gateway``): HELLO → (client) heartbeats and IDENTIFY → READY, then one GUILD_CREATE per
guild; tests then dispatch MESSAGE_CREATE (:meth:`send_message`), INTERACTION_CREATE
(:meth:`slash`, :meth:`autocomplete`, and a button click: :meth:`click`, type 3) and
MESSAGE_DELETE (:meth:`delete_message`), all as TEXT frames. REST (``/api/v10``): login, command
sync, message create/edit/delete (a delete: the bot's own messages only, MESSAGE_DELETE dispatched
as Discord does), typing, interaction callbacks, webhook edits and follow-ups. Every REST answer is JSON with ``Content-Type:
application/json`` exactly (discord.py compares the header).

Shards, as Discord has them: IDENTIFY's ``shard: [id, count]`` (none: ``[0, 1]``) is kept per
connection (and per session, for RESUME); READY lists and GUILD_CREATE sends only that shard's
guilds (a guild's shard is ``(guild_id >> 22) % count``, :meth:`shard_of`), and each event goes
only to the connection(s) of the shard owning its guild (DMs: shard 0). An invalid shard is closed
with 4010. ``GET /gateway/bot`` answers ``recommended_shards`` and ``max_concurrency``;
:meth:`add_guild` takes ``shard=(id, count)`` to place a guild on a shard;
:attr:`shards_identified` and :attr:`dispatched` (:meth:`delivered`) record who connected and
which shards each event reached.

Rate limits, answered the way Discord does: per-channel buckets for message creates and edits
(``X-RateLimit-*`` headers on every answer; 429 with ``retry_after``, ``global: false``) and a
bot-wide sliding window over every bot-authenticated request except interaction endpoints (429
with ``global: true`` and ``X-RateLimit-Global``).

Message components: a message keeps the ``components`` (action rows of buttons) its create or
last edit carried (an edit without the field keeps them, ``[]`` removes them), checked as Discord
does (at most 5 rows of 5 buttons, a ``custom_id`` of 1 to 100 characters, unique in the
message: else 400 Invalid Form Body). :meth:`click` presses a button the message shows (only
one it shows: a click on a removed button is a test error); the interaction's callbacks are
recorded (type 4 with ``flags`` 64: an ephemeral answer, stored as a message; 6: deferred update;
7: the clicked message updated), and its ``@original`` is the clicked message. 429s carry a ``Via`` header (without it
discord.py assumes a Cloudflare ban). :meth:`inject_429` forces 429s for fault tests.
"""

from __future__ import annotations

import asyncio
import http
import itertools
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .base import LoopbackServer
from .journal import Journal

__all__ = [
    "ADMINISTRATOR",
    "MANAGE_GUILD",
    "Dispatched",
    "FakeDiscordServer",
    "FakeGuild",
    "FakeInteraction",
    "StoredMessage",
]

#: Permission bits, as Discord numbers them.
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
_EVERYONE_PERMISSIONS = (
    (1 << 10) | (1 << 11) | (1 << 16) | (1 << 38)
)  # view, send, history, threads

_SNOWFLAKE_START = 1_200_000_000_000_000_000
_TIMESTAMP = "2026-11-01T12:00:00.000000+00:00"
_VIA = "1.1 google"
_EPHEMERAL = 1 << 6
_LOADING = 1 << 7


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer whose Content-Type is exactly ``application/json`` (no charset)."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(obj).encode(), headers=all_headers)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"message": message, "code": code}, status)


def _valid_components(rows: Any) -> bool:
    """Discord's rules for buttons: at most 5 action rows (type 1) of at most 5 buttons (type
    2), each with a label or an emoji and a ``custom_id`` of 1 to 100 characters, unique."""
    if rows is None:
        return True
    if not isinstance(rows, list) or len(rows) > 5:
        return False
    seen: set[str] = set()
    for row in rows:
        buttons = row.get("components") if isinstance(row, dict) else None
        if row.get("type") != 1 or not isinstance(buttons, list) or not 1 <= len(buttons) <= 5:
            return False
        for button in buttons:
            custom_id = button.get("custom_id") if isinstance(button, dict) else None
            if button.get("type") != 2 or not isinstance(custom_id, str):
                return False
            if not 1 <= len(custom_id) <= 100 or custom_id in seen:
                return False
            if not (button.get("label") or button.get("emoji")):
                return False
            seen.add(custom_id)
    return True


# --------------------------------------------------------------------------- records


@dataclass
class StoredMessage:
    """A message as the stand-in keeps it; ``payloads`` holds the create body and every edit's."""

    id: str
    channel_id: str
    author_id: str
    content: str
    guild_id: str | None = None
    flags: int = 0
    reference: dict[str, Any] | None = None
    interaction_id: str | None = None
    deleted: bool = False
    edits: int = 0
    payloads: list[dict[str, Any]] = field(default_factory=list)
    #: Discord's ``attachments`` objects (``url``, ``filename``, ``content_type``, ``size``).
    attachments: list[dict[str, Any]] = field(default_factory=list)
    #: A forwarded message's snapshot (``content``, ``attachments``); its reference is the
    #: forwarded message's (``type`` 1).
    snapshot: dict[str, Any] | None = None
    #: Its action rows of buttons, as last sent.
    components: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & _EPHEMERAL)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Its buttons, row by row."""
        return [b for row in self.components for b in row.get("components", [])]

    @property
    def custom_ids(self) -> list[str]:
        return [str(b.get("custom_id")) for b in self.buttons]


@dataclass
class FakeGuild:
    id: str
    name: str
    owner_id: str
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class FakeInteraction:
    """One interaction the stand-in dispatched, and what the bot answered."""

    id: str
    token: str
    type: int  # 2: slash command, 3: a button click (name: its custom_id), 4: autocomplete
    name: str
    channel_id: str
    user_id: str
    options: dict[str, Any]
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    original_id: str | None = None
    followup_ids: list[str] = field(default_factory=list)
    #: A click's message (the one whose button was pressed).
    message_id: str | None = None

    @property
    def responded(self) -> bool:
        return bool(self.callbacks)

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        """Autocomplete choices the bot answered with, if it did."""
        for callback in self.callbacks:
            if callback.get("type") == 8:
                return list(callback.get("data", {}).get("choices", []))
        return None


@dataclass
class RateLimitEvent:
    method: str
    path: str
    is_global: bool
    retry_after: float


@dataclass
class _Recorded:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    authorization: str | None


class _Window:
    """A fixed window bucket, as Discord's per-route buckets behave."""

    __slots__ = ("limit", "per", "reset_at", "used")

    def __init__(self, limit: int, per: float) -> None:
        self.limit = limit
        self.per = per
        self.reset_at = 0.0
        self.used = 0

    def take(self, now: float) -> float | None:
        """None when the request may go; else seconds until the bucket resets."""
        if now >= self.reset_at:
            self.reset_at = now + self.per
            self.used = 0
        if self.used >= self.limit:
            return self.reset_at - now
        self.used += 1
        return None

    def headers(self, now: float, bucket: str) -> dict[str, str]:
        reset_after = max(0.0, self.reset_at - now)
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - self.used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }


class _Sliding:
    """At most ``limit`` requests in any ``per`` seconds (the bot-wide limit)."""

    __slots__ = ("limit", "log", "per")

    def __init__(self, limit: int, per: float) -> None:
        self.limit = limit
        self.per = per
        self.log: deque[float] = deque()

    def take(self, now: float) -> float | None:
        log = self.log
        while log and now - log[0] >= self.per:
            log.popleft()
        if len(log) >= self.limit:
            return self.per - (now - log[0])
        log.append(now)
        return None


@dataclass
class _Forced:
    count: int
    retry_after: float
    is_global: bool
    methods: tuple[str, ...]
    status: int = 429


@dataclass
class Dispatched:
    """One event the stand-in dispatched: its ``d.id`` (when it has one), its guild, and the
    shards (``(id, count)``) of the connections it went to (empty: none was connected)."""

    event: str
    id: str | None
    guild_id: str | None
    shards: list[tuple[int, int]]


class _Gateway:
    """One identified gateway connection."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0
        self.intents: int | None = None
        #: (shard id, shard count) from IDENTIFY; (0, 1) when the client sent none.
        self.shard: tuple[int, int] = (0, 1)
        self.lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any]) -> None:
        async with self.lock:  # one frame at a time, in order
            if not self.ws.closed:
                await self.ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        await self.send({"op": 0, "t": event, "s": self.seq, "d": data})


# --------------------------------------------------------------------------- server


class FakeDiscordServer(LoopbackServer):
    """The stand-in: build guilds, start it, point a bot at it, dispatch events, inspect results.

    ``edit_limit`` / ``post_limit``: (requests, seconds) per channel for message edits / creates;
    ``webhook_limit``: per interaction token; ``global_limit``: per bot, interaction endpoints
    exempt. ``None`` disables a limit.
    """

    def __init__(
        self,
        *,
        token: str = "fake-discord-token",
        edit_limit: tuple[int, float] | None = (5, 5.0),
        post_limit: tuple[int, float] | None = (5, 5.0),
        webhook_limit: tuple[int, float] | None = (5, 5.0),
        global_limit: tuple[int, float] | None = (50, 1.0),
        recommended_shards: int = 1,
        max_concurrency: int = 16,
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        #: ``GET /gateway/bot``: the shard count Discord recommends, and how many IDENTIFYs it
        #: allows at once (Discord gives most bots 1; the default here lets a client identify
        #: several shards without the 5 s pause between them).
        self.recommended_shards = recommended_shards
        self.max_concurrency = max_concurrency
        self.edit_limit = edit_limit
        self.post_limit = post_limit
        self.webhook_limit = webhook_limit
        self.global_limit = global_limit
        self.host = host
        self.port = 0
        self._clock = clock
        self._ids = itertools.count(_SNOWFLAKE_START)
        self.application_id = self._next_id()
        self.bot: dict[str, Any] = self._user_payload(self.application_id, "LLMConnect", bot=True)
        self.owner: dict[str, Any] = self._user_payload(self._next_id(), "owner")
        self.users: dict[str, dict[str, Any]] = {}
        self.guilds: dict[str, FakeGuild] = {}
        self.dm_channels: dict[str, str] = {}  # user id -> channel id
        self.messages: dict[str, StoredMessage] = {}
        #: Set to refuse starting threads, as Discord does without Create Public Threads.
        self.threads_forbidden = False
        self.interactions: dict[str, FakeInteraction] = {}
        self.commands: dict[str | None, list[dict[str, Any]]] = {}  # guild id (None: global)
        self.requests: list[_Recorded] = []
        #: Shared with other stand-ins: every REST request as ``("discord", "METHOD /path")``.
        self.journal: Journal | None = None
        #: path -> a gate: a REST request to that path arrives (is recorded, then answered) only
        #: once the gate is set, as if the network were slow; ``held`` counts those waiting.
        self.hold: dict[str, asyncio.Event] = {}
        self.held = 0
        self.rate_limited: list[RateLimitEvent] = []
        self.identified = 0
        #: (shard id, count) of every connection that identified, once it got READY and its
        #: GUILD_CREATEs, in that order.
        self.shards_identified: list[tuple[int, int]] = []
        #: Every event dispatched after READY, with the shards it reached.
        self.dispatched: list[Dispatched] = []
        #: The intents the last client identified with.
        self.intents: int | None = None
        self._tokens: dict[str, FakeInteraction] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._global = _Sliding(*global_limit) if global_limit else None
        self._forced: list[_Forced] = []
        self._gateways: list[_Gateway] = []
        self._sockets: set[web.WebSocketResponse] = set()
        self._sessions: dict[str, tuple[int, int]] = {}  # session id -> its shard
        self._runner: web.AppRunner | None = None
        #: While true the gateway refuses connections (503): see :meth:`drop_gateway`.
        self.gateway_refused = False
        #: The CDN's files (``/attachments/{id}/{name}``): bytes and media type, and the paths
        #: requested (no token: Discord's CDN needs none).
        self.files: dict[str, tuple[bytes, str]] = {}
        self.file_requests: list[str] = []

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> FakeDiscordServer:
        app = web.Application(middlewares=[self._middleware])
        api = "/api/v10"
        routes = [
            ("GET", "/users/@me", self._me),
            ("GET", "/oauth2/applications/@me", self._application),
            ("GET", "/gateway", self._gateway_url),
            ("GET", "/gateway/bot", self._gateway_url),
            ("PUT", "/applications/{app}/commands", self._sync),
            ("PUT", "/applications/{app}/guilds/{guild}/commands", self._sync),
            ("POST", "/channels/{channel}/messages", self._create_message),
            ("GET", "/channels/{channel}/messages/{message}", self._get_message),
            ("PATCH", "/channels/{channel}/messages/{message}", self._edit_message),
            ("DELETE", "/channels/{channel}/messages/{message}", self._delete_message),
            ("POST", "/channels/{channel}/typing", self._typing),
            ("POST", "/channels/{channel}/messages/{message}/threads", self._start_thread),
            ("POST", "/users/@me/channels", self._open_dm),
            ("POST", "/interactions/{id}/{token}/callback", self._callback),
            ("GET", "/webhooks/{app}/{token}/messages/{message}", self._webhook_get),
            ("PATCH", "/webhooks/{app}/{token}/messages/{message}", self._webhook_edit),
            ("DELETE", "/webhooks/{app}/{token}/messages/{message}", self._webhook_delete),
            ("POST", "/webhooks/{app}/{token}", self._followup),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, api + path, handler)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{id}/{name}", self._file)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def api_url(self) -> str:
        """For ``DISCORD_API_URL``."""
        return f"http://{self.host}:{self.port}/api/v10"

    @property
    def cdn_url(self) -> str:
        """For ``DISCORD_CDN_URL``: where :meth:`add_file` serves files."""
        return f"http://{self.host}:{self.port}"

    def add_file(
        self, name: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> dict[str, Any]:
        """A file on the CDN; returns the ``attachments[]`` object a message carries."""
        ident = self._next_id()
        self.files[f"/attachments/{ident}/{name}"] = (data, content_type)
        return {
            "id": ident,
            "filename": name,
            "size": len(data),
            "url": f"{self.cdn_url}/attachments/{ident}/{name}?ex=1&is=2&hm=signed",
            "proxy_url": f"{self.cdn_url}/attachments/{ident}/{name}",
            "content_type": content_type,
        }

    @property
    def gateway_url(self) -> str:
        """For ``DISCORD_GATEWAY_URL``."""
        return f"ws://{self.host}:{self.port}/gateway"

    def bot_env(self) -> dict[str, str]:
        """The environment that points a real ``llmconnect`` process's Discord bot here."""
        return {
            "DISCORD_TOKEN": self.token,
            "DISCORD_API_URL": self.api_url,
            "DISCORD_GATEWAY_URL": self.gateway_url,
        }

    @property
    def bot_id(self) -> str:
        return str(self.bot["id"])

    async def wait_ready(self, tries: int = 500, *, shards: int = 1) -> None:
        """Wait until ``shards`` connections have identified and received READY and their
        GUILD_CREATEs (bounded polling)."""
        for _ in range(tries):
            if len(self.shards_identified) >= shards:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(
            f"{len(self.shards_identified)} of {shards} shard(s) identified with the gateway"
        )

    @staticmethod
    def shard_of(guild_id: str | int | None, count: int) -> int:
        """The shard (of ``count``) that gets the events of ``guild_id``; DMs (None): shard 0."""
        return 0 if guild_id is None else (int(guild_id) >> 22) % count

    # ----------------------------------------------------------------- world building

    def _next_id(self) -> str:
        return str(next(self._ids))

    @staticmethod
    def _user_payload(user_id: str, name: str, *, bot: bool = False) -> dict[str, Any]:
        return {
            "id": user_id,
            "username": name,
            "global_name": None,
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
            "flags": 0,
            "public_flags": 0,
        }

    def add_user(self, name: str, *, bot: bool = False) -> str:
        """A user (not yet a member of any guild; ``bot``: another bot's account); returns its
        id."""
        user_id = self._next_id()
        self.users[user_id] = self._user_payload(user_id, name, bot=bot)
        return user_id

    def add_guild(
        self, name: str = "Test Guild", *, shard: tuple[int, int] | None = None
    ) -> FakeGuild:
        """A guild with its @everyone role and the bot as a member; ``shard=(id, count)`` gives
        it an id that lands on that shard (later ids continue above it)."""
        guild_id = self._next_id()
        if shard is not None:
            wanted, count = shard
            high = int(guild_id) >> 22  # a snowflake's timestamp part decides its shard
            high += (wanted - high) % count
            chosen = (high << 22) | (int(guild_id) & ((1 << 22) - 1))
            self._ids = itertools.count(chosen + 1)
            guild_id = str(chosen)
        guild = FakeGuild(guild_id, name, str(self.owner["id"]))
        guild.roles[guild.id] = self._role_payload(guild.id, "@everyone", _EVERYONE_PERMISSIONS, 0)
        guild.members[self.bot_id] = self._member_payload(self.bot, [])
        self.guilds[guild.id] = guild
        return guild

    @staticmethod
    def _role_payload(role_id: str, name: str, permissions: int, position: int) -> dict[str, Any]:
        return {
            "id": role_id,
            "name": name,
            "permissions": str(permissions),
            "position": position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }

    @staticmethod
    def _member_payload(user: dict[str, Any], roles: list[str]) -> dict[str, Any]:
        return {
            "user": user,
            "roles": list(roles),
            "joined_at": _TIMESTAMP,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "pending": False,
        }

    def add_role(self, guild: FakeGuild, name: str, permissions: int = 0) -> str:
        role_id = self._next_id()
        guild.roles[role_id] = self._role_payload(role_id, name, permissions, len(guild.roles))
        return role_id

    def add_member(
        self, guild: FakeGuild, name: str, roles: list[str] | None = None, *, bot: bool = False
    ) -> str:
        """A new user who is a member of ``guild`` with ``roles``; returns the user id."""
        user_id = self.add_user(name, bot=bot)
        guild.members[user_id] = self._member_payload(self.users[user_id], roles or [])
        return user_id

    def add_channel(self, guild: FakeGuild, name: str = "general") -> str:
        channel_id = self._next_id()
        guild.channels[channel_id] = {
            "id": channel_id,
            "type": 0,
            "guild_id": guild.id,
            "name": name,
            "position": len(guild.channels),
            "permission_overwrites": [],
            "topic": None,
            "nsfw": False,
            "parent_id": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        return channel_id

    def add_thread(
        self,
        guild: FakeGuild,
        parent_id: str,
        name: str = "thread",
        *,
        thread_id: str | None = None,
        owner_id: str | None = None,
    ) -> str:
        thread_id = thread_id or self._next_id()
        guild.threads[thread_id] = {
            "id": thread_id,
            "type": 11,
            "guild_id": guild.id,
            "parent_id": parent_id,
            "owner_id": owner_id or str(self.owner["id"]),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _TIMESTAMP,
                "locked": False,
            },
        }
        return thread_id

    def dm_channel(self, user_id: str) -> str:
        """The DM channel between ``user_id`` and the bot."""
        if user_id not in self.dm_channels:
            self.dm_channels[user_id] = self._next_id()
        return self.dm_channels[user_id]

    def _guild_of(self, channel_id: str) -> FakeGuild | None:
        for guild in self.guilds.values():
            if channel_id in guild.channels or channel_id in guild.threads:
                return guild
        return None

    def _channel_payload(self, channel_id: str) -> dict[str, Any]:
        guild = self._guild_of(channel_id)
        if guild is None:
            user_id = next(u for u, c in self.dm_channels.items() if c == channel_id)
            return {
                "id": channel_id,
                "type": 1,
                "recipients": [self.users[user_id]],
                "last_message_id": None,
                "flags": 0,
            }
        return guild.channels.get(channel_id) or guild.threads[channel_id]

    def _guild_create(self, guild: FakeGuild) -> dict[str, Any]:
        return {
            "id": guild.id,
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": guild.owner_id,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": list(guild.roles.values()),
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": _TIMESTAMP,
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),
            "voice_states": [],
            "members": list(guild.members.values()),
            "channels": list(guild.channels.values()),
            "threads": list(guild.threads.values()),
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    # ----------------------------------------------------------------- events (tests call these)

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send ``event`` to the connections of the shard owning its guild (DMs: shard 0)."""
        guild_id = data.get("guild_id")
        targets = [g for g in self._gateways if self.shard_of(guild_id, g.shard[1]) == g.shard[0]]
        ident = data.get("id")
        self.dispatched.append(
            Dispatched(
                event, None if ident is None else str(ident), guild_id, [g.shard for g in targets]
            )
        )
        for gateway in targets:
            await gateway.dispatch(event, data)

    def delivered(self, ident: str | StoredMessage | FakeInteraction) -> list[tuple[int, int]]:
        """The shards the events about ``ident`` (a message, an interaction) went to."""
        if not isinstance(ident, str):
            ident = ident.id
        return [s for d in self.dispatched if d.id == ident for s in d.shards]

    def _message_payload(self, message: StoredMessage) -> dict[str, Any]:
        author = self.bot if message.author_id == self.bot_id else self.users[message.author_id]
        forward = message.snapshot is not None
        payload: dict[str, Any] = {
            "id": message.id,
            "type": 19 if message.reference and not forward else 0,
            "channel_id": message.channel_id,
            "author": author,
            "content": message.content,
            "timestamp": _TIMESTAMP,
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": list(message.attachments),
            "embeds": [],
            "pinned": False,
            "flags": message.flags,
            "components": list(message.components),
        }
        if message.reference:
            payload["message_reference"] = message.reference
        if message.snapshot is not None:
            snapshot = {"type": 0, "content": "", "attachments": [], "embeds": [], "flags": 0}
            snapshot |= {"timestamp": _TIMESTAMP, "edited_timestamp": None, "mentions": []}
            payload["message_snapshots"] = [{"message": snapshot | message.snapshot}]
        if message.interaction_id:
            payload["webhook_id"] = self.application_id
            payload["application_id"] = self.application_id
        if message.guild_id:
            payload["guild_id"] = message.guild_id
        return payload

    async def send_message(
        self,
        channel_id: str,
        user_id: str,
        content: str,
        *,
        mention_bot: bool = True,
        attachments: list[dict[str, Any]] | None = None,
        reply_to: StoredMessage | None = None,
        forward: StoredMessage | None = None,
    ) -> StoredMessage:
        """A user posts ``content`` in ``channel_id``; dispatched as MESSAGE_CREATE.

        With ``mention_bot`` the bot's mention is prepended (and listed in ``mentions``, which is
        how Discord lets a bot without the message-content intent read the message).
        ``attachments``: :meth:`add_file`'s objects. ``reply_to``: a reply to that message (its
        ``message_reference``, and the ``referenced_message`` Discord includes). ``forward``:
        a forward of that message (its snapshot: its content and attachments).
        """
        guild = self._guild_of(channel_id)
        if mention_bot:
            content = f"<@{self.bot_id}> {content}"
        message = StoredMessage(
            self._next_id(), channel_id, user_id, content, guild_id=guild.id if guild else None
        )
        message.attachments = list(attachments or [])
        target = reply_to or forward
        if target is not None:
            message.reference = {
                "type": 1 if forward is not None else 0,
                "message_id": target.id,
                "channel_id": target.channel_id,
            }
            if target.guild_id:
                message.reference["guild_id"] = target.guild_id
        if forward is not None:
            message.snapshot = {"content": forward.content, "attachments": forward.attachments}
        self.messages[message.id] = message
        payload = self._message_payload(message)
        if reply_to is not None:
            payload["referenced_message"] = self._message_payload(reply_to)
        if mention_bot:
            mention = dict(self.bot)
            if guild is not None:
                member = dict(guild.members[self.bot_id])
                member.pop("user")
                mention["member"] = member
            payload["mentions"] = [mention]
        if guild is not None:
            member = dict(guild.members[user_id])
            member.pop("user")
            payload["member"] = member
        await self._dispatch("MESSAGE_CREATE", payload)
        return message

    async def delete_message(self, message_id: str) -> None:
        """Someone deleted the message: later edits answer 404 Unknown Message."""
        message = self.messages[message_id]
        message.deleted = True
        data = {"id": message_id, "channel_id": message.channel_id}
        if message.guild_id:
            data["guild_id"] = message.guild_id
        await self._dispatch("MESSAGE_DELETE", data)

    def _command_id(self, name: str, guild_id: str | None) -> tuple[str, str | None]:
        for scope in (guild_id, None):
            for command in self.commands.get(scope, []):
                if command["name"] == name:
                    return command["id"], scope
        raise AssertionError(f"command /{name} was never synced")

    async def _interaction(
        self,
        kind: int,
        channel_id: str,
        user_id: str,
        name: str,
        options: dict[str, Any],
        focused: str | None = None,
    ) -> FakeInteraction:
        guild = self._guild_of(channel_id)
        command_id, scope = self._command_id(name, guild.id if guild else None)
        interaction = FakeInteraction(
            self._next_id(), secrets.token_urlsafe(24), kind, name, channel_id, user_id, options
        )
        data: dict[str, Any] = {
            "id": command_id,
            "name": name,
            "type": 1,
            "options": [
                {"name": k, "type": 3, "value": v, **({"focused": True} if k == focused else {})}
                for k, v in options.items()
            ],
        }
        if scope is not None:
            data["guild_id"] = scope
        await self._dispatch_interaction(interaction, data)
        return interaction

    async def click(self, message: StoredMessage, user_id: str, custom_id: str) -> FakeInteraction:
        """``user_id`` presses the button ``custom_id`` on ``message`` (INTERACTION_CREATE type
        3, ``MESSAGE_COMPONENT``, with the message as Discord sends it)."""
        message = self.messages[message.id]
        assert not message.deleted, "a deleted message has no buttons to press"
        assert custom_id in message.custom_ids, f"{custom_id!r} is not on the message"
        interaction = FakeInteraction(
            self._next_id(),
            secrets.token_urlsafe(24),
            3,
            custom_id,
            message.channel_id,
            user_id,
            {},
            message_id=message.id,
        )
        data = {"custom_id": custom_id, "component_type": 2}
        await self._dispatch_interaction(interaction, data, self._message_payload(message))
        return interaction

    async def _dispatch_interaction(
        self,
        interaction: FakeInteraction,
        data: dict[str, Any],
        message: dict[str, Any] | None = None,
    ) -> None:
        channel_id, user_id, kind = interaction.channel_id, interaction.user_id, interaction.type
        guild = self._guild_of(channel_id)
        self.interactions[interaction.id] = interaction
        self._tokens[interaction.token] = interaction
        payload: dict[str, Any] = {
            "id": interaction.id,
            "application_id": self.application_id,
            "type": kind,
            "data": data,
            "channel": self._channel_payload(channel_id),
            "channel_id": channel_id,
            "token": interaction.token,
            "version": 1,
            "app_permissions": str((1 << 53) - 1),
            "locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": guild.id if guild else user_id},
            "context": 0 if guild else 1,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild is not None:
            member = dict(guild.members[user_id])
            member["permissions"] = str(self._permissions(guild, user_id))
            payload["guild_id"] = guild.id
            payload["guild_locale"] = "en-US"
            payload["member"] = member
        else:
            payload["user"] = self.users[user_id]
        if message is not None:
            payload["message"] = message
        await self._dispatch("INTERACTION_CREATE", payload)

    def _permissions(self, guild: FakeGuild, user_id: str) -> int:
        if user_id == guild.owner_id:
            return (1 << 53) - 1
        value = int(guild.roles[guild.id]["permissions"])
        for role_id in guild.members[user_id]["roles"]:
            value |= int(guild.roles[role_id]["permissions"])
        return (1 << 53) - 1 if value & ADMINISTRATOR else value

    async def slash(
        self, channel_id: str, user_id: str, command: str, /, **options: Any
    ) -> FakeInteraction:
        """``user_id`` runs ``/command options`` in ``channel_id`` (INTERACTION_CREATE type 2)."""
        return await self._interaction(2, channel_id, user_id, command, options)

    async def autocomplete(
        self, channel_id: str, user_id: str, command: str, option: str, value: str, tries: int = 500
    ) -> list[dict[str, Any]]:
        """Type ``value`` into ``option`` of ``/command``; returns the choices the bot offered."""
        interaction = await self._interaction(
            4, channel_id, user_id, command, {option: value}, focused=option
        )
        for _ in range(tries):
            if interaction.choices is not None:
                return interaction.choices
            await asyncio.sleep(0.01)
        raise AssertionError("the bot never answered the autocomplete")

    def inject_429(
        self,
        count: int = 1,
        *,
        retry_after: float = 0.05,
        is_global: bool = False,
        methods: tuple[str, ...] = ("PATCH",),
    ) -> None:
        """Answer the next ``count`` bot requests with these methods with a 429."""
        self._forced.append(_Forced(count, retry_after, is_global, methods))

    def inject_error(
        self, status: int, count: int = 1, *, methods: tuple[str, ...] = ("PATCH",)
    ) -> None:
        """Answer the next ``count`` message creates/edits/deletes with these methods with
        ``status``."""
        self._forced.append(_Forced(count, 0.0, False, methods, status))

    # ----------------------------------------------------------------- inspection

    def channel_messages(self, channel_id: str) -> list[StoredMessage]:
        """Messages in ``channel_id``, oldest first (deleted ones included)."""
        return [m for m in self.messages.values() if m.channel_id == channel_id]

    def bot_messages(self, channel_id: str | None = None) -> list[StoredMessage]:
        return [
            m
            for m in self.messages.values()
            if m.author_id == self.bot_id and (channel_id is None or m.channel_id == channel_id)
        ]

    def replies_to(self, message: StoredMessage) -> list[StoredMessage]:
        """The bot's messages answering ``message``: the reply, then its continuations."""
        bot = self.bot_messages(message.channel_id)
        first = next(
            (m for m in bot if m.reference and m.reference.get("message_id") == message.id),
            None,
        )
        if first is None:
            return []
        later = [m for m in bot if int(m.id) > int(first.id) and not m.reference]
        return [first, *later]

    def interaction_messages(self, interaction: FakeInteraction) -> list[StoredMessage]:
        ids = [interaction.original_id, *interaction.followup_ids]
        return [self.messages[i] for i in ids if i is not None]

    # ----------------------------------------------------------------- middleware, limits

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if request.path == "/gateway" or request.path.startswith("/attachments/"):
            response: web.StreamResponse = await handler(request)
            return response
        gate = self.hold.get(request.path)
        if gate is not None:  # a slow network: the request arrives once the gate is set
            self.held += 1
            try:
                await gate.wait()
            finally:
                self.held -= 1
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        auth = request.headers.get("Authorization")
        self.requests.append(
            _Recorded(request.method, request.path, dict(request.query), body, auth)
        )
        if self.journal is not None:
            self.journal.record("discord", f"{request.method} {request.path}")
        exempt = "/interactions/" in request.path or "/webhooks/" in request.path
        if not exempt:
            if auth != f"Bot {self.token}":
                return _error(401, 0, "401: Unauthorized")
            limited = self._limit_global(request)
            if limited is not None:
                return limited
        response = await handler(request)
        return response

    def _too_many(
        self, request: web.Request, retry_after: float, *, is_global: bool, headers: dict[str, str]
    ) -> web.Response:
        self.rate_limited.append(
            RateLimitEvent(request.method, request.path, is_global, retry_after)
        )
        headers = {
            **headers,
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "Via": _VIA,
            "X-RateLimit-Scope": "global" if is_global else "user",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": round(retry_after, 3),
            "global": is_global,
        }
        return _json(body, 429, headers)

    def _limit_global(self, request: web.Request) -> web.Response | None:
        for forced in self._forced:
            if forced.count > 0 and forced.is_global and request.method in forced.methods:
                forced.count -= 1
                return self._too_many(request, forced.retry_after, is_global=True, headers={})
        if self._global is None:
            return None
        wait = self._global.take(self._clock())
        if wait is None:
            return None
        return self._too_many(request, wait, is_global=True, headers={})

    def _limit_route(
        self, request: web.Request, kind: str, major: str, limit: tuple[int, float] | None
    ) -> tuple[web.Response | None, dict[str, str]]:
        """(a 429 answer or None, the X-RateLimit headers to send with the answer)."""
        for forced in self._forced:
            if forced.count > 0 and not forced.is_global and request.method in forced.methods:
                forced.count -= 1
                if forced.status != 429:
                    return _error(forced.status, 0, http.HTTPStatus(forced.status).phrase), {}
                return self._too_many(request, forced.retry_after, is_global=False, headers={}), {}
        if limit is None:
            return None, {}
        window = self._windows.get((kind, major))
        if window is None:
            window = self._windows[(kind, major)] = _Window(*limit)
        now = self._clock()
        wait = window.take(now)
        headers = window.headers(now, f"{kind}-bucket")
        if wait is not None:
            return self._too_many(request, wait, is_global=False, headers=headers), headers
        return None, headers

    # ----------------------------------------------------------------- REST handlers

    async def _me(self, request: web.Request) -> web.Response:
        return _json(self.bot)

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": self.application_id,
                "name": "LLMConnect",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.owner,
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
                "summary": "",
            }
        )

    async def _gateway_url(self, request: web.Request) -> web.Response:
        return _json(
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": self.max_concurrency,
                },
            }
        )

    async def _sync(self, request: web.Request) -> web.Response:
        guild_id = request.match_info.get("guild")
        payload = await request.json()
        commands = []
        for command in payload:
            synced = {
                "id": self._next_id(),
                "application_id": self.application_id,
                "version": self._next_id(),
                "type": command.get("type", 1),
                "name": command["name"],
                "description": command.get("description", ""),
                "options": command.get("options", []),
                "default_member_permissions": command.get("default_member_permissions"),
                "dm_permission": command.get("dm_permission", True),
                "nsfw": command.get("nsfw", False),
            }
            if guild_id is not None:
                synced["guild_id"] = guild_id
            commands.append(synced)
        self.commands[guild_id] = commands
        return _json(commands)

    def _store(
        self,
        channel_id: str,
        body: dict[str, Any],
        *,
        interaction: FakeInteraction | None = None,
        flags: int = 0,
    ) -> StoredMessage:
        guild = self._guild_of(channel_id)
        message = StoredMessage(
            self._next_id(),
            channel_id,
            self.bot_id,
            str(body.get("content") or ""),
            guild_id=guild.id if guild else None,
            flags=flags | int(body.get("flags") or 0),
            reference=body.get("message_reference"),
            interaction_id=interaction.id if interaction else None,
            payloads=[body],
            components=list(body.get("components") or []),
        )
        self.messages[message.id] = message
        return message

    def _edit(self, message: StoredMessage, body: dict[str, Any]) -> None:
        if "content" in body:
            message.content = str(body["content"] or "")
        if "components" in body:
            message.components = list(body["components"] or [])
        message.flags &= ~_LOADING
        message.edits += 1
        message.payloads.append(body)

    @staticmethod
    def _too_long(body: dict[str, Any]) -> web.Response | None:
        """400 Invalid Form Body for content over 2,000 characters or components Discord
        refuses (see the module doc)."""
        if not _valid_components(body.get("components")):
            return _json({"message": "Invalid Form Body", "code": 50035}, 400)
        if len(str(body.get("content") or "")) > 2000:
            return _json(
                {
                    "message": "Invalid Form Body",
                    "code": 50035,
                    "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}},
                },
                400,
            )
        return None

    async def _create_message(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel"]
        if self._guild_of(channel_id) is None and channel_id not in self.dm_channels.values():
            return _error(404, 10003, "Unknown Channel")
        limited, headers = self._limit_route(request, "post", channel_id, self.post_limit)
        if limited is not None:
            return limited
        body = await request.json()
        if (error := self._too_long(body)) is not None:
            return error
        message = self._store(channel_id, body)
        payload = self._message_payload(message)
        await self._dispatch("MESSAGE_CREATE", payload)
        return _json(payload, headers=headers)

    async def _get_message(self, request: web.Request) -> web.Response:
        """``GET /channels/{channel}/messages/{message}``: as Discord, with the message it
        replies to as ``referenced_message``."""
        message = self._live(request)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        payload = self._message_payload(message)
        target = self.messages.get(str((message.reference or {}).get("message_id")))
        if target is not None and message.snapshot is None and not target.deleted:
            payload["referenced_message"] = self._message_payload(target)
        return _json(payload)

    async def _file(self, request: web.Request) -> web.Response:
        """The CDN: a file :meth:`add_file` stored (its signed query string is not checked)."""
        path = request.path
        self.file_requests.append(path)
        stored = self.files.get(path)
        if stored is None:
            return web.Response(status=404, text="Not Found")
        data, content_type = stored
        return web.Response(body=data, headers={"Content-Type": content_type})

    def _live(self, request: web.Request) -> StoredMessage | None:
        message = self.messages.get(request.match_info["message"])
        if message is None or message.deleted:
            return None
        if message.channel_id != request.match_info["channel"]:
            return None
        return message

    async def _edit_message(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel"]
        limited, headers = self._limit_route(request, "edit", channel_id, self.edit_limit)
        if limited is not None:
            return limited
        message = self._live(request)
        return await self._apply_edit(request, message, headers)

    async def _apply_edit(
        self, request: web.Request, message: StoredMessage | None, headers: dict[str, str]
    ) -> web.Response:
        """A PATCH of a channel or webhook message: same checks, same answer."""
        if message is None:
            return _error(404, 10008, "Unknown Message")
        body = await request.json()
        if (error := self._too_long(body)) is not None:
            return error
        self._edit(message, body)
        return _json(self._message_payload(message), headers=headers)

    async def _delete_message(self, request: web.Request) -> web.Response:
        """As Discord: the author may delete its own message (anyone else's needs Manage
        Messages, which the bot is not given); MESSAGE_DELETE goes out on the gateway. Its own
        bucket, unlimited here (faults from :meth:`inject_error`/:meth:`inject_429` apply)."""
        limited, _ = self._limit_route(request, "delete", request.match_info["channel"], None)
        if limited is not None:
            return limited
        message = self._live(request)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        if message.author_id != self.bot_id:
            return _error(403, 50013, "Missing Permissions")
        await self.delete_message(message.id)
        return web.Response(status=204)

    async def _start_thread(self, request: web.Request) -> web.Response:
        """``POST /channels/{channel}/messages/{message}/threads``: the bot starts a public
        thread from a message; like Discord, the thread's id is the message's, one thread per
        message, a name of 1 to 100 characters. Dispatched as THREAD_CREATE."""
        channel_id = request.match_info["channel"]
        message_id = request.match_info["message"]
        guild = self._guild_of(channel_id)
        if guild is None or channel_id not in guild.channels:
            return _error(404, 10003, "Unknown Channel")
        message = self.messages.get(message_id)
        if message is None or message.channel_id != channel_id or message.deleted:
            return _error(404, 10008, "Unknown Message")
        if self.threads_forbidden:
            return _error(403, 50013, "Missing Permissions")
        if message_id in guild.threads:
            return _error(400, 160004, "A thread has already been created for this message")
        body = await request.json()
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            return _json({"message": "Invalid Form Body", "code": 50035}, 400)
        self.add_thread(guild, channel_id, name, thread_id=message_id, owner_id=self.bot_id)
        payload = dict(guild.threads[message_id])
        await self._dispatch("THREAD_CREATE", {**payload, "newly_created": True})
        return _json(payload, 201)

    async def _typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _open_dm(self, request: web.Request) -> web.Response:
        body = await request.json()
        return _json(self._channel_payload(self.dm_channel(str(body["recipient_id"]))))

    async def _callback(self, request: web.Request) -> web.Response:
        interaction = self.interactions.get(request.match_info["id"])
        if interaction is None or interaction.token != request.match_info["token"]:
            return _error(404, 10062, "Unknown interaction")
        if interaction.responded:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        body = await request.json()
        kind = body.get("type")
        data = body.get("data") or {}
        if (error := self._too_long(data)) is not None:
            return error
        interaction.callbacks.append(body)
        resource: dict[str, Any] = {"type": kind}
        if kind in (6, 7) and interaction.message_id is not None:
            # A click's deferred update or update: the clicked message is the response.
            interaction.original_id = interaction.message_id
            if kind == 7:
                self._edit(self.messages[interaction.message_id], data)
        if kind in (4, 5):
            flags = int(data.get("flags") or 0) | (_LOADING if kind == 5 else 0)
            message = self._store(
                interaction.channel_id, data, interaction=interaction, flags=flags
            )
            interaction.original_id = message.id
            resource["message"] = self._message_payload(message)
        answer: dict[str, Any] = {
            "interaction": {
                "id": interaction.id,
                "type": interaction.type,
                "response_message_id": interaction.original_id,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(int(data.get("flags") or 0) & _EPHEMERAL),
            }
        }
        if kind in (4, 5):
            answer["resource"] = resource
        if request.query.get("with_response") in ("1", "true"):
            return _json(answer)
        return web.Response(status=204)

    def _webhook(self, request: web.Request) -> FakeInteraction | None:
        interaction = self._tokens.get(request.match_info["token"])
        if interaction is None or request.match_info["app"] != self.application_id:
            return None
        return interaction

    def _webhook_message(
        self, request: web.Request, interaction: FakeInteraction
    ) -> StoredMessage | None:
        ref = request.match_info["message"]
        message_id = interaction.original_id if ref == "@original" else ref
        if message_id is None or (
            message_id != interaction.original_id and message_id not in interaction.followup_ids
        ):
            return None
        message = self.messages.get(message_id)
        return None if message is None or message.deleted else message

    def _webhook_target(self, request: web.Request) -> StoredMessage | web.Response:
        """The message a webhook GET/DELETE names, or the 404 Discord answers."""
        interaction = self._webhook(request)
        if interaction is None:
            return _error(404, 10015, "Unknown Webhook")
        message = self._webhook_message(request, interaction)
        return _error(404, 10008, "Unknown Message") if message is None else message

    async def _webhook_get(self, request: web.Request) -> web.Response:
        message = self._webhook_target(request)
        if isinstance(message, web.Response):
            return message
        return _json(self._message_payload(message))

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        interaction = self._webhook(request)
        if interaction is None:
            return _error(404, 10015, "Unknown Webhook")
        limited, headers = self._limit_route(
            request, "webhook", interaction.token, self.webhook_limit
        )
        if limited is not None:
            return limited
        message = self._webhook_message(request, interaction)
        return await self._apply_edit(request, message, headers)

    async def _webhook_delete(self, request: web.Request) -> web.Response:
        message = self._webhook_target(request)
        if isinstance(message, web.Response):
            return message
        message.deleted = True
        return web.Response(status=204)

    async def _followup(self, request: web.Request) -> web.Response:
        interaction = self._webhook(request)
        if interaction is None:
            return _error(404, 10015, "Unknown Webhook")
        if not interaction.responded:
            return _error(404, 10015, "Unknown Webhook")
        limited, headers = self._limit_route(
            request, "webhook", interaction.token, self.webhook_limit
        )
        if limited is not None:
            return limited
        body = await request.json()
        if (error := self._too_long(body)) is not None:
            return error
        message = self._store(interaction.channel_id, body, interaction=interaction)
        interaction.followup_ids.append(message.id)
        return _json(self._message_payload(message), headers=headers)

    # ----------------------------------------------------------------- gateway

    async def drop_gateway(self) -> None:
        """The gateway goes away and stays away (REST is unaffected): every connection closes
        and new ones are refused until ``gateway_refused`` is set false again."""
        self.gateway_refused = True
        for ws in list(self._sockets):
            await ws.close(code=1001)

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if self.gateway_refused:
            return web.Response(status=503, text="gateway unavailable")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        gateway = _Gateway(ws)
        try:
            await gateway.send({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    break
                payload = json.loads(msg.data)
                op = payload.get("op")
                if op == 1:
                    await gateway.send({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    await self._identify(gateway, payload.get("d") or {})
                elif op == 6:
                    await self._resume(gateway, payload.get("d") or {})
        finally:
            self._sockets.discard(ws)
            if gateway in self._gateways:
                self._gateways.remove(gateway)
        return ws

    @staticmethod
    def _valid_shard(shard: Any) -> tuple[int, int] | None:
        if not isinstance(shard, list) or len(shard) != 2:
            return None
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in shard):
            return None
        shard_id, count = shard
        return (shard_id, count) if 0 <= shard_id < count else None

    async def _identify(self, gateway: _Gateway, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await gateway.ws.close(code=4004, message=b"Authentication failed.")
            return
        shard = self._valid_shard(data["shard"]) if "shard" in data else (0, 1)
        if shard is None:
            await gateway.ws.close(code=4010, message=b"Invalid shard.")
            return
        gateway.shard = shard
        gateway.intents = self.intents = data.get("intents")
        self.identified += 1
        self._gateways.append(gateway)
        guilds = [g for g in self.guilds.values() if self.shard_of(g.id, shard[1]) == shard[0]]
        session_id = secrets.token_hex(16)
        self._sessions[session_id] = shard
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**self.bot, "verified": True, "mfa_enabled": False},
            "guilds": [{"id": g.id, "unavailable": True} for g in guilds],
            "session_id": session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": self.application_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "_trace": ["fake-discord"],
        }
        if "shard" in data:
            ready["shard"] = list(shard)
        await gateway.dispatch("READY", ready)
        for guild in guilds:
            await gateway.dispatch("GUILD_CREATE", self._guild_create(guild))
        self.shards_identified.append(shard)

    async def _resume(self, gateway: _Gateway, data: dict[str, Any]) -> None:
        """RESUME continues a session on its shard; an unknown one must identify anew (op 9)."""
        if data.get("token") != self.token:
            await gateway.ws.close(code=4004, message=b"Authentication failed.")
            return
        shard = self._sessions.get(str(data.get("session_id")))
        if shard is None:
            await gateway.send({"op": 9, "d": False, "s": None, "t": None})
            return
        gateway.shard = shard
        self._gateways.append(gateway)
        await gateway.dispatch("RESUMED", {})
