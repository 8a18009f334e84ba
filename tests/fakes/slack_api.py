"""A local Slack Web API stand-in (aiohttp) for slack-sdk/slack-bolt pointed at it with ``base_url``.

It records every call, keeps every message's visible text (``chat.postMessage`` / ``chat.update``
text, and streamed messages whose text arrives as ``markdown_text`` or as ``chunks``), answers
``chat.update`` with 429 + ``Retry-After`` when one message is updated too often, enforces
Slack's per-method limits when given them (``limits=SLACK_LIMITS``: 429 + ``Retry-After`` in whole
seconds, as Slack answers), serves
``response_url`` posts, and speaks Socket Mode: ``apps.connections.open`` returns a ``ws://`` URL
where the server says ``hello`` and delivers envelopes, and records the client's acks.

Real wire behaviour it imitates (checked against slack-sdk 3.48 / slack-bolt 1.30): methods are
``POST /api/<method>`` with a form or JSON body (or query parameters), the token in
``Authorization: Bearer``; answers are JSON ``{"ok": ...}``; ``chat.startStream`` needs
``thread_ts`` and, outside DMs, ``recipient_user_id`` + ``recipient_team_id``; ``markdown_text``
is at most 12,000 characters per call; a text over 40,000 characters is ``msg_too_long``.
The streaming methods' ``chunks`` are checked as Slack documents them (``markdown_text`` with
``text``; ``task_update`` with ``id``, ``title`` and ``status`` one of ``pending``,
``in_progress``, ``complete``, ``error``, optional ``details``/``output`` strings; ``plan_update``
with ``title``; ``blocks`` with ``blocks``): anything else is refused with ``invalid_arguments``
and changes nothing. A message keeps its task cards (``tasks``: the latest of each id, in the
order they first came; ``task_updates``: every one; ``task_at``: how much text was before each
card, timeline order). ``assistant.threads.setStatus`` needs ``channel_id`` and ``thread_ts``; the stand-in keeps each
thread's status (``statuses``, every value in ``status_history``) and, unlike Slack, does not clear
it when the app replies, so a test sees whether the bot cleared it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSMsgType, web

from .base import LoopbackServer
from .journal import Journal

__all__ = [
    "MAX_SUGGESTED_PROMPTS",
    "SLACK_LIMITS",
    "Call",
    "FakeSlackAPI",
    "Message",
    "MethodLimit",
    "SharedFile",
]

MAX_TEXT = 40_000
MAX_MARKDOWN_PER_CALL = 12_000
#: Block Kit limits Slack enforces on what the bot sends (``invalid_blocks`` past them).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3_000
MAX_ACTIONS_ELEMENTS = 25
MAX_ACTION_ID = 255
MAX_BUTTON_TEXT = 75
#: Suggested prompts one ``assistant.threads.setSuggestedPrompts`` call may set.
MAX_SUGGESTED_PROMPTS = 4
_GONE = "channel_not_found"
#: A ``task_update`` chunk's statuses.
TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})


@dataclass(frozen=True)
class MethodLimit:
    """At most ``calls`` accepted calls of a method in any ``per`` seconds, counted per
    workspace or per channel (the call's ``channel``)."""

    calls: int
    per: float
    scope: Literal["workspace", "channel"] = "workspace"


#: The limits Slack documents for what a streaming reply sends: ``chat.postMessage`` about one
#: per second per channel with short bursts (3 in 3 s here) and several hundred per minute per
#: workspace (300); ``chat.update`` Tier 3 (50 per minute per workspace, bursts within the minute
#: allowed); the native streaming methods taken as Tier 4 (100 per minute each).
SLACK_LIMITS: Mapping[str, tuple[MethodLimit, ...]] = {
    "chat.postMessage": (MethodLimit(3, 3.0, "channel"), MethodLimit(300, 60.0)),
    "chat.update": (MethodLimit(50, 60.0),),
    "chat.startStream": (MethodLimit(100, 60.0),),
    "chat.appendStream": (MethodLimit(100, 60.0),),
    "chat.stopStream": (MethodLimit(100, 60.0),),
    "assistant.threads.setStatus": (MethodLimit(50, 60.0),),
}


@dataclass
class Call:
    """One Web API call as received."""

    method: str
    args: dict[str, Any]
    token: str | None
    status: int = 200
    error: str | None = None


@dataclass
class Message:
    """A message as a Slack client would show it now."""

    channel: str
    ts: str
    text: str
    thread_ts: str | None = None
    streaming: bool = False  # a native stream still open
    streamed: bool = False  # created by chat.startStream
    updates: int = 0
    appends: int = 0
    history: list[str] = field(default_factory=list)  # every visible text, in order
    last_update: float = -1e9
    #: The message's Block Kit blocks (``None``: none; ``chat.stopStream`` blocks go under the
    #: streamed text) and every set of button action ids it showed, in order.
    blocks: list[dict[str, Any]] | None = None
    button_history: list[list[str]] = field(default_factory=list)
    #: Its task cards (streamed ``task_update`` chunks): the latest of each id, in the order they
    #: first came; every update in order; the length of the text before each card came.
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_updates: list[dict[str, Any]] = field(default_factory=list)
    task_at: dict[str, int] = field(default_factory=dict)

    @property
    def buttons(self) -> list[str]:
        """The action ids of the buttons it shows now."""
        return [
            element["action_id"]
            for block in self.blocks or []
            if block.get("type") == "actions"
            for element in block.get("elements", [])
            if element.get("type") == "button"
        ]

    @property
    def block_text(self) -> str:
        """The text of its section blocks, joined by line breaks."""
        return "\n".join(
            block["text"]["text"] for block in self.blocks or [] if block.get("type") == "section"
        )


#: What Slack's file host answers a download without the right token: a sign-in page, 200.
SIGN_IN_PAGE = b"<!DOCTYPE html><html><body>Sign in to Slack</body></html>"


@dataclass
class SharedFile:
    """A file shared in a message: its bytes and media type, and how many ``files.info`` calls
    answer that it is still being processed (no ``url_private_download``, no ``mimetype``)."""

    id: str
    name: str
    data: bytes
    mimetype: str
    processing: int = 0


class FakeSlackAPI(LoopbackServer):
    """``async with FakeSlackAPI() as slack:`` then point a client at ``slack.api_url``."""

    def __init__(
        self,
        *,
        team_id: str = "T0001",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        bot_token: str = "xoxb-fake-bot-token",
        app_token: str = "xapp-fake-app-token",
        admins: tuple[str, ...] = (),
        limits: Mapping[str, tuple[MethodLimit, ...]] | None = None,
    ) -> None:
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_token = bot_token
        self.app_token = app_token
        self.admins = set(admins)
        #: method -> limits enforced on it (none by default: tests of other things stay fast).
        self.limits: dict[str, tuple[MethodLimit, ...]] = dict(limits or {})
        self._accepted: dict[tuple[str, int, str], deque[float]] = {}
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemeral: list[dict[str, Any]] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}
        #: Seconds that must pass between two accepted ``chat.update`` calls of one message;
        #: a faster update gets 429 with ``Retry-After`` (the time left, or ``retry_after``).
        self.update_interval = 0.0
        self.retry_after: str | None = None
        #: After this many ``chat.appendStream`` calls a stream stops being in streaming state
        #: (Slack expires a stream that pauses too long): the next append or stop fails.
        self.expire_streams_after: int | None = None
        #: method -> error string, answered (``ok: false``) instead of doing the call.
        self.fail: dict[str, str] = {}
        self.acks: dict[str, dict[str, Any]] = {}
        #: (channel, thread_ts) -> the thread's status now ("": none), and every status set.
        self.statuses: dict[tuple[str, str], str] = {}
        self.status_history: dict[tuple[str, str], list[str]] = {}
        #: (channel, thread_ts) -> the prompts ``assistant.threads.setSuggestedPrompts`` set last
        #: (``[{"title", "message"}]``) and every title ``assistant.threads.setTitle`` set.
        self.suggested_prompts: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.titles: dict[tuple[str, str], list[str]] = {}
        #: Shared with other stand-ins: every Web API call, as ``("slack", method)``, on arrival.
        self.journal: Journal | None = None
        #: method -> a gate: a call of that method arrives (is recorded, then answered) only once
        #: the gate is set, as if the network to Slack were slow; ``held`` counts those waiting.
        self.hold: dict[str, asyncio.Event] = {}
        self.held = 0
        self._ts = itertools.count(1)
        self._envelopes = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._connected = asyncio.Event()
        self._acked = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        #: Files shared in messages (:meth:`add_file`): id -> record; and every download's path
        #: with whether it carried the bot token.
        self.files: dict[str, SharedFile] = {}
        self.downloads: list[tuple[str, bool]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeSlackAPI:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/respond/{rid}", self._respond)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._download)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}api/"

    def response_url(self, rid: str) -> str:
        return f"{self.base_url}respond/{rid}"

    # ------------------------------------------------------------------ what tests read

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def thread(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """Messages at the top level of ``channel`` (or in one thread), oldest first."""
        found = [
            m for m in self.messages.values() if m.channel == channel and m.thread_ts == thread_ts
        ]
        return sorted(found, key=lambda m: float(m.ts))

    def texts(self, channel: str, thread_ts: str | None = None) -> list[str]:
        return [m.text for m in self.thread(channel, thread_ts)]

    def bot_messages(self) -> list[Message]:
        return sorted(self.messages.values(), key=lambda m: float(m.ts))

    # ------------------------------------------------------------------ Socket Mode

    async def wait_connected(self) -> None:
        await asyncio.wait_for(self._connected.wait(), 10)

    async def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        """Deliver one envelope (``events_api``, ``slash_commands``...) on the open socket."""
        envelope_id = f"env-{next(self._envelopes)}"
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": 0,
            "retry_reason": "",
        }
        await self._sockets[-1].send_str(json.dumps(envelope))
        return envelope_id

    async def wait_ack(self, envelope_id: str) -> dict[str, Any]:
        async with self._acked:
            await asyncio.wait_for(self._acked.wait_for(lambda: envelope_id in self.acks), 10)
        return self.acks[envelope_id]

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": "A0001"},
                }
            )
        )
        self._connected.set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if "envelope_id" in data:
                        async with self._acked:
                            self.acks[data["envelope_id"]] = data
                            self._acked.notify_all()
        finally:
            self._sockets.remove(ws)
        return ws

    # ------------------------------------------------------------------ response_url

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.setdefault(request.match_info["rid"], []).append(body)
        return web.Response(text="ok")

    # ------------------------------------------------------------------ Web API

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        gate = self.hold.get(method)
        if gate is not None:
            self.held += 1
            try:
                await gate.wait()
            finally:
                self.held -= 1
        args: dict[str, Any] = dict(request.query)
        raw = await request.read()
        if raw:
            if request.content_type == "application/json":
                args.update(json.loads(raw))
            else:
                args.update((await request.post()).items())
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.get("token")
        call = Call(method, args, token)
        self.calls.append(call)
        if self.journal is not None:
            self.journal.record("slack", method)
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return self._error(call, "invalid_auth")
        if method in self.fail:
            return self._error(call, self.fail[method])
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return self._error(call, "unknown_method")
        limited = self._over_limit(call)
        if limited is not None:
            return limited
        result = handler(call)
        if isinstance(result, web.Response):
            return result
        return web.json_response({"ok": True, **result})

    def _over_limit(self, call: Call) -> web.Response | None:
        """429 when the call would exceed one of its method's limits; else it counts."""
        limits = self.limits.get(call.method)
        if not limits:
            return None
        now = time.monotonic()
        windows = []
        for n, limit in enumerate(limits):
            scope = str(call.args.get("channel", "")) if limit.scope == "channel" else ""
            window = self._accepted.setdefault((call.method, n, scope), deque())
            while window and window[0] <= now - limit.per:
                window.popleft()
            if len(window) >= limit.calls:
                response = self._error(call, "ratelimited", status=429)
                response.headers["Retry-After"] = str(
                    max(1, math.ceil(window[0] + limit.per - now))
                )
                return response
            windows.append(window)
        for window in windows:
            window.append(now)
        return None

    def _error(self, call: Call, error: str, status: int = 200) -> web.Response:
        call.status, call.error = status, error
        return web.json_response({"ok": False, "error": error}, status=status)

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def _store(self, message: Message) -> None:
        message.history.append(message.text)
        self.messages[(message.channel, message.ts)] = message

    @staticmethod
    def _chunks(args: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The call's ``chunks`` (``[]``: none), or ``None`` when one is malformed."""
        chunks = args.get("chunks")
        if chunks is None:
            return []
        if isinstance(chunks, str):
            try:
                chunks = json.loads(chunks)
            except ValueError:
                return None
        if not isinstance(chunks, list):
            return None
        for chunk in chunks:
            if not isinstance(chunk, dict):
                return None
            kind = chunk.get("type")
            if kind == "markdown_text":
                ok = isinstance(chunk.get("text"), str)
            elif kind == "task_update":
                ok = (
                    all(isinstance(chunk.get(k), str) and chunk[k] for k in ("id", "title"))
                    and chunk.get("status") in TASK_STATUSES
                    and all(isinstance(chunk[k], str) for k in ("details", "output") if k in chunk)
                )
            elif kind == "plan_update":
                ok = isinstance(chunk.get("title"), str)
            elif kind == "blocks":
                ok = isinstance(chunk.get("blocks"), list)
            else:
                ok = False
            if not ok:
                return None
        return chunks

    @classmethod
    def _stream_text(cls, args: dict[str, Any]) -> str:
        text = args.get("markdown_text") or ""
        for chunk in cls._chunks(args) or []:
            if chunk.get("type") == "markdown_text":
                text += chunk.get("text", "")
        return text

    def _stream_into(self, message: Message, args: dict[str, Any]) -> None:
        """Add a checked call's text and task cards to ``message``, in their order."""
        message.text += args.get("markdown_text") or ""
        for chunk in self._chunks(args) or []:
            if chunk["type"] == "markdown_text":
                message.text += chunk["text"]
            elif chunk["type"] == "task_update":
                card = {k: v for k, v in chunk.items() if k != "type"}
                message.task_updates.append(card)
                message.task_at.setdefault(card["id"], len(message.text))
                message.tasks[card["id"]] = {**message.tasks.get(card["id"], {}), **card}

    def _m_auth_test(self, call: Call) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.test/",
            "team": "Fake Team",
            "user": "llmconnect",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _m_apps_connections_open(self, call: Call) -> dict[str, Any]:
        return {"url": f"ws://127.0.0.1:{self.port}/socket?ticket=fake"}

    def _m_users_info(self, call: Call) -> dict[str, Any]:
        user = call.args.get("user", "")
        admin = user in self.admins
        return {"user": {"id": user, "team_id": self.team_id, "is_admin": admin, "is_owner": False}}

    @staticmethod
    def _blocks(args: dict[str, Any]) -> list[dict[str, Any]] | bool | None:
        """The call's ``blocks`` (``None`` when absent), or False when Slack would refuse them
        (``invalid_blocks``): too many, a section text empty or too long, a button without an
        ``action_id``, one too long or repeated, a button text too long."""
        blocks = args.get("blocks")
        if blocks is None:
            return None
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
            return False
        seen: set[str] = set()
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "section":
                text = (block.get("text") or {}).get("text")
                if not isinstance(text, str) or not 1 <= len(text) <= MAX_SECTION_TEXT:
                    return False
            elif kind == "actions":
                elements = block.get("elements")
                if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTIONS_ELEMENTS:
                    return False
                for element in elements:
                    action_id = element.get("action_id")
                    label = (element.get("text") or {}).get("text")
                    if (
                        element.get("type") != "button"
                        or not isinstance(action_id, str)
                        or not 1 <= len(action_id) <= MAX_ACTION_ID
                        or action_id in seen
                        or not isinstance(label, str)
                        or not 1 <= len(label) <= MAX_BUTTON_TEXT
                    ):
                        return False
                    seen.add(action_id)
            else:
                return False
        return blocks

    def _set_blocks(self, message: Message, blocks: list[dict[str, Any]] | None) -> None:
        message.blocks = blocks
        message.button_history.append(message.buttons)

    def _m_chat_postMessage(self, call: Call) -> dict[str, Any] | web.Response:
        text = call.args.get("text") or ""
        channel = call.args.get("channel", "")
        if channel.startswith("CGONE"):
            return self._error(call, _GONE)
        if len(text) > MAX_TEXT:
            return self._error(call, "msg_too_long")
        blocks = self._blocks(call.args)
        if blocks is False:
            return self._error(call, "invalid_blocks")
        message = Message(channel, self._next_ts(), text, call.args.get("thread_ts") or None)
        if isinstance(blocks, list):
            self._set_blocks(message, blocks)
        self._store(message)
        return {"channel": channel, "ts": message.ts, "message": {"text": text, "ts": message.ts}}

    def _m_chat_postEphemeral(self, call: Call) -> dict[str, Any]:
        self.ephemeral.append(dict(call.args))
        return {"message_ts": self._next_ts()}

    def _m_chat_update(self, call: Call) -> dict[str, Any] | web.Response:
        message = self.messages.get((call.args.get("channel", ""), call.args.get("ts", "")))
        if message is None:
            return self._error(call, "message_not_found")
        text = call.args.get("text") or ""
        if len(text) > MAX_TEXT:
            return self._error(call, "msg_too_long")
        blocks = self._blocks(call.args)
        if blocks is False:
            return self._error(call, "invalid_blocks")
        now = time.monotonic()
        wait = message.last_update + self.update_interval - now
        if wait > 0:
            response = self._error(call, "ratelimited", status=429)
            response.headers["Retry-After"] = self.retry_after or f"{wait:.3f}"
            return response
        message.last_update = now
        message.text = text
        message.streaming = False
        message.updates += 1
        message.history.append(text)
        if isinstance(blocks, list):  # absent: the message keeps the blocks it had
            self._set_blocks(message, blocks)
        return {"channel": message.channel, "ts": message.ts, "text": text}

    def _m_chat_delete(self, call: Call) -> dict[str, Any] | web.Response:
        """Delete a message: here every stored message is the bot's own (people's messages
        arrive as events and are not kept), so any known ``ts`` may go."""
        key = (call.args.get("channel", ""), call.args.get("ts", ""))
        if self.messages.pop(key, None) is None:
            return self._error(call, "message_not_found")
        return {"channel": key[0], "ts": key[1]}

    def _m_chat_startStream(self, call: Call) -> dict[str, Any] | web.Response:
        args = call.args
        channel = args.get("channel", "")
        if channel.startswith("CGONE"):
            return self._error(call, _GONE)
        if not args.get("thread_ts"):
            return self._error(call, "invalid_arguments")
        if not channel.startswith("D") and not (
            args.get("recipient_user_id") and args.get("recipient_team_id")
        ):
            return self._error(call, "missing_recipient_user_id")
        if self._chunks(args) is None:
            return self._error(call, "invalid_arguments")
        text = self._stream_text(args)
        if len(text) > MAX_MARKDOWN_PER_CALL:
            return self._error(call, "msg_too_long")
        message = Message(channel, self._next_ts(), "", args["thread_ts"])
        self._stream_into(message, args)
        message.streaming = message.streamed = True
        self._store(message)
        return {"channel": channel, "ts": message.ts}

    def _streaming(self, call: Call) -> Message | web.Response:
        message = self.messages.get((call.args.get("channel", ""), call.args.get("ts", "")))
        if message is None:
            return self._error(call, "message_not_found")
        limit = self.expire_streams_after
        if message.streaming and limit is not None and message.appends >= limit:
            message.streaming = False  # the stream expired, as Slack's do after a while
        if not message.streaming:
            return self._error(call, "message_not_in_streaming_state")
        if self._chunks(call.args) is None:
            return self._error(call, "invalid_arguments")
        text = self._stream_text(call.args)
        if len(text) > MAX_MARKDOWN_PER_CALL or len(message.text) + len(text) > MAX_TEXT:
            return self._error(call, "msg_too_long")
        return message

    def _m_chat_appendStream(self, call: Call) -> dict[str, Any] | web.Response:
        message = self._streaming(call)
        if isinstance(message, web.Response):
            return message
        message.appends += 1
        self._stream_into(message, call.args)
        message.history.append(message.text)
        return {"channel": message.channel, "ts": message.ts}

    def _m_chat_stopStream(self, call: Call) -> dict[str, Any] | web.Response:
        message = self._streaming(call)
        if isinstance(message, web.Response):
            return message
        blocks = self._blocks(call.args)
        if blocks is False:
            return self._error(call, "invalid_blocks")
        if isinstance(blocks, list):  # shown under the streamed text
            self._set_blocks(message, blocks)
        self._stream_into(message, call.args)
        message.streaming = False
        message.history.append(message.text)
        return {"channel": message.channel, "ts": message.ts, "message": {"text": message.text}}

    def _m_assistant_threads_setStatus(self, call: Call) -> dict[str, Any] | web.Response:
        channel, thread_ts = call.args.get("channel_id"), call.args.get("thread_ts")
        status = call.args.get("status")
        if not channel or not thread_ts or not isinstance(status, str):
            return self._error(call, "invalid_arguments")
        if channel.startswith("CGONE"):
            return self._error(call, _GONE)
        self.statuses[(channel, thread_ts)] = status
        self.status_history.setdefault((channel, thread_ts), []).append(status)
        return {}

    def _assistant_thread(self, call: Call) -> tuple[str, str] | web.Response:
        channel, thread_ts = call.args.get("channel_id"), call.args.get("thread_ts")
        if not isinstance(channel, str) or not channel or not isinstance(thread_ts, str):
            return self._error(call, "invalid_arguments")
        if not thread_ts:
            return self._error(call, "invalid_arguments")
        if channel.startswith("CGONE"):
            return self._error(call, _GONE)
        return channel, thread_ts

    def _m_assistant_threads_setSuggestedPrompts(self, call: Call) -> dict[str, Any] | web.Response:
        """Slack's rules: 1 to :data:`MAX_SUGGESTED_PROMPTS` prompts, each with a ``title`` and
        a ``message``."""
        thread = self._assistant_thread(call)
        if isinstance(thread, web.Response):
            return thread
        prompts = call.args.get("prompts")
        if isinstance(prompts, str):
            prompts = json.loads(prompts)
        if (
            not isinstance(prompts, list)
            or not 1 <= len(prompts) <= MAX_SUGGESTED_PROMPTS
            or not all(
                isinstance(p, dict)
                and isinstance(p.get("title"), str)
                and isinstance(p.get("message"), str)
                and p["title"]
                and p["message"]
                for p in prompts
            )
        ):
            return self._error(call, "invalid_arguments")
        self.suggested_prompts[thread] = prompts
        return {}

    def _m_assistant_threads_setTitle(self, call: Call) -> dict[str, Any] | web.Response:
        thread = self._assistant_thread(call)
        if isinstance(thread, web.Response):
            return thread
        title = call.args.get("title")
        if not isinstance(title, str) or not title:
            return self._error(call, "invalid_arguments")
        self.titles.setdefault(thread, []).append(title)
        return {}

    # ------------------------------------------------------------------ files

    @property
    def files_url(self) -> str:
        """For ``SLACK_FILES_URL``: where this stand-in serves ``url_private_download``."""
        return f"http://127.0.0.1:{self.port}"

    def add_file(
        self, name: str, data: bytes, mimetype: str = "text/plain", *, processing: int = 0
    ) -> dict[str, Any]:
        """A file shared in a message; returns the file object its event carries. While
        ``processing`` (that many ``files.info`` calls), the event has only the id and
        ``file_access: check_file_info``, as Slack sends a file that is not ready yet."""
        file = SharedFile(f"F{len(self.files) + 1:08d}", name, data, mimetype, processing)
        self.files[file.id] = file
        if processing:
            return {"id": file.id, "file_access": "check_file_info"}
        return self._file_object(file)

    def _file_object(self, file: SharedFile) -> dict[str, Any]:
        url = f"{self.files_url}/files-pri/{self.team_id}-{file.id}/download/{file.name}"
        return {
            "id": file.id,
            "name": file.name,
            "title": file.name,
            "mimetype": file.mimetype,
            "filetype": file.name.rpartition(".")[2],
            "size": len(file.data),
            "mode": "hosted",
            "url_private": url.replace("/download/", "/"),
            "url_private_download": url,
        }

    def _m_files_info(self, call: Call) -> dict[str, Any] | web.Response:
        file = self.files.get(str(call.args.get("file", "")))
        if file is None:
            return self._error(call, "file_not_found")
        if file.processing > 0:
            file.processing -= 1
            return {"file": {"id": file.id, "name": file.name, "mimetype": "", "filetype": ""}}
        return {"file": self._file_object(file)}

    async def _download(self, request: web.Request) -> web.Response:
        """``url_private_download``: the file with the bot token, else Slack's sign-in page."""
        authorized = request.headers.get("Authorization") == f"Bearer {self.bot_token}"
        self.downloads.append((request.path, authorized))
        _, _, file_id = request.match_info["team_file"].partition("-")
        file = self.files.get(file_id)
        if not authorized:
            return web.Response(body=SIGN_IN_PAGE, content_type="text/html")
        if file is None or request.match_info["name"] != file.name:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=file.data, headers={"Content-Type": file.mimetype})
