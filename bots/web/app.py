"""The web chat: a FastAPI app over the shared engine.

One page (``/``) and a few JSON endpoints. ``POST
/chat/{conv_id}/send-message`` appends the user turn and starts the generation in the background
(:meth:`ChatEngine.submit`), ``GET /chat/{conv_id}/bot-stream`` streams the reply as Server-Sent
Events, and a finished reply's status is ``complete``. Streaming is event-driven: the SSE
generator iterates the engine's :class:`~core.engine.Reply`, which wakes it per delta, so a
reloaded page or a second tab (a late observer) gets the text so far, then the rest.

Why the conversation state lives in the engine and not here: Discord, Slack and the web share one
engine under ``llmconnect run``. This module only keeps which replies it submitted that have not
ended (a stream opened right after ``send-message`` must find a reply that is still queued); the
sidebar lists the store's ``web`` conversations, so it survives a restart (SQLite, Redis).

Safety: :mod:`bots.web.guard` checks the token (``WEB_AUTH_TOKEN``) on every request, the Host
header when bound to loopback, refuses state changes from other origins, and sets a strict
Content-Security-Policy; the page renders LLM output as Markdown from escaped text
(``static/app.js``), so HTML in a reply is shown, never run. Bounds: request bodies
(``WEB_MAX_BODY_BYTES``, FastAPI's ``max_body_size``: 413, counted while reading, chunked or
not) and open reply streams per client address (``WEB_MAX_STREAMS``, :mod:`bots.web.limits`).
Reply buttons (``REPLY_BUTTONS``, :mod:`core.controls`): ``POST
/chat/{conv_id}/replies/{reply_id}/{stop|regenerate|up|down}``, behind the same guard as every
change; the page shows Stop on the reply being written and Regenerate, 👍 and 👎 on the latest
one. A regeneration is followed like a new prompt (``bot-stream``). Every JSON answer is valid UTF-8 (a lone surrogate is sent as U+FFFD), a validation error names
fields, never echoes the input, and a store that cannot be reached is a 503, on every route.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import weakref
from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

# FastAPI's own SSE support (``fastapi.sse``, FastAPI >= 0.135): maintained with FastAPI, encodes
# each event, sends keep-alive comments and stops the generator when the client goes away.
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, SecretStr, ValidationError
from starlette.datastructures import UploadFile

from bots.health import Health, health_routes
from core.attachments import Attachment, AttachmentLimits, prepare_all_async
from core.clock import Clock
from core.commands import Command, execute
from core.controls import OPERATOR, Action, Press, key_hash, press
from core.conversations import Conversation, ConversationKey, Message, clean_text
from core.delivery import REASONING, STATUS, TEXT, TOOLS, final_note, shown_events
from core.engine import ChatEngine, Refused, Reply, StoreUnavailable
from core.usage import usage_json

from .guard import Guard
from .limits import DeclaredBodyLimit, StreamLimit, is_upload, too_large, upload_limit
from .settings import WebSettings

__all__ = ["PLATFORM", "STATIC_DIR", "WebChat", "WebJSON", "create_app"]

#: ``ConversationKey("web", conv_id)``.
PLATFORM = "web"
STATIC_DIR = Path(__file__).resolve().parent / "static"
_TITLE_CHARS = 60

ConvId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
ReplyId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{1,32}$")]
#: The buttons' names in the URL.
ACTIONS = {
    "stop": Action.STOP,
    "regenerate": Action.REGENERATE,
    "up": Action.UP,
    "down": Action.DOWN,
    "approve": Action.APPROVE,
    "deny": Action.DENY,
}
ActionName = Literal["stop", "regenerate", "up", "down", "approve", "deny"]


class WebJSON(JSONResponse):
    """JSON that is always valid UTF-8: text that is not valid Unicode (a lone surrogate from a
    prompt, a model or an older store) goes out as U+FFFD instead of failing the answer (500)."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        )
        return clean_text(text).encode("utf-8")


class SendMessage(BaseModel):
    text: str


class SetModel(BaseModel):
    model: str


class SetToolServer(BaseModel):
    server: str
    enabled: bool


class WebChat:
    """What the web front end keeps besides the engine: its conversations and its live replies."""

    def __init__(self, engine: ChatEngine, *, edit_interval: float) -> None:
        self.engine = engine
        self.edit_interval = edit_interval
        #: Set at shutdown: new prompts are refused, running streams end with their reply.
        self.closing = False
        #: Replies this app submitted that have not ended, per conversation, in order.
        self._live: dict[ConversationKey, deque[Reply]] = {}
        #: Replies whose end a page has been sent (their final-lag observation is made).
        self._ended: weakref.WeakSet[Reply] = weakref.WeakSet()

    @staticmethod
    def key(conv_id: str) -> ConversationKey:
        return ConversationKey(PLATFORM, conv_id)

    async def submit(
        self, conv_id: str, text: str, attachments: Sequence[Attachment] = ()
    ) -> Reply:
        """Queue a prompt (and its files). No actor: whoever reaches the page (loopback, or the
        token holder) is the operator, so per-user rate limits and admin lists do not apply;
        channel lists do."""
        key = self.key(conv_id)
        reply = await self.engine.submit(key, text, attachments=attachments)
        self._follow(key, reply)
        return reply

    async def press(
        self, conv_id: str, reply_id: str, action: Action, call: int | None = None
    ) -> dict[str, Any]:
        """A reply button (:func:`core.controls.press`, as the operator: no actor; Approve and
        Deny name the ``call`` waiting for approval). A regeneration is followed like a prompt
        (``bot-stream`` shows it). :class:`Refused` (:class:`StoreUnavailable`) when the core
        refuses."""
        key = self.key(conv_id)
        pressed = Press(action, reply_id, key_hash(key), call)
        result = await press(self.engine, key, pressed, None)
        if not result.ok:
            raise StoreUnavailable(result.text) if result.unavailable else Refused(result.text)
        if result.reply is not None:
            self._follow(key, result.reply)
        return {
            "id": conv_id,
            "reply_id": reply_id,
            "text": result.text,
            "vote": result.vote,
            "regenerating": result.reply is not None,
        }

    def _follow(self, key: ConversationKey, reply: Reply) -> None:
        self._live.setdefault(key, deque()).append(reply)
        if reply.task is not None:
            reply.task.add_done_callback(lambda _: self._forget(key, reply))

    def _forget(self, key: ConversationKey, reply: Reply) -> None:
        live = self._live.get(key)
        if live is None:
            return
        with contextlib.suppress(ValueError):
            live.remove(reply)
        if not live:
            del self._live[key]

    def follow(self, key: ConversationKey) -> Reply | None:
        """The reply a stream shows: the first one not ended (even if still queued), else the
        latest one, else ``None``."""
        for reply in self._live.get(key, ()):
            if not reply.done:
                return reply
        return self.engine.reply_for(key)

    def first_end(self, reply: Reply) -> bool:
        """True the first time it is asked for ``reply``: the first page sent its end."""
        if reply in self._ended:
            return False
        self._ended.add(reply)
        return True

    def busy(self, key: ConversationKey) -> bool:
        return any(not reply.done for reply in self._live.get(key, ()))

    async def stop_all(self) -> None:
        """Shutdown: stop every reply this chat submitted, running or queued; each ends in a
        final state, so every open stream sends its ``end``."""
        stopped = [reply for live in self._live.values() for reply in live if reply.cancel()]
        for reply in stopped:
            await reply

    async def paced(self, reply: Reply) -> AsyncIterator[tuple[str, str]]:
        """What the page shows of the reply (:func:`core.delivery.shown_events`: text deltas, and
        the thinking status or the reasoning per ``SHOW_REASONING``), at most one event per
        ``WEB_EDIT_INTERVAL`` (deltas that arrive meanwhile are joined into the next; nothing is
        dropped)."""
        interval = self.edit_interval
        events = shown_events(self.engine, reply)
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                yield event
                if interval > 0 and not reply.done:
                    await self.engine.clock.sleep(interval)

    # ----------------------------------------------------------------- JSON views

    async def conversation_json(self, conv_id: str) -> dict[str, Any]:
        key = self.key(conv_id)
        conversation = await self.engine.get(key)
        messages = (
            [_message_json(m, conv_id, i) for i, m in enumerate(conversation.messages)]
            if conversation
            else []
        )
        # The latest reply's buttons: which vote the page has given it.
        latest = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
        if latest is not None and latest.get("id"):
            latest["vote"] = await self.engine.vote_of(key, str(latest["id"]), OPERATOR)
        return {
            "id": conv_id,
            "title": _title(conversation),
            "model": self.engine.model_of(conversation)
            if conversation
            else self.engine.default_model,
            "busy": self.busy(key),
            "buttons": self.engine.settings.reply_buttons,
            "messages": messages,
        }

    async def conversations_json(self) -> list[dict[str, Any]]:
        """The store's web conversations (the store is shared by every platform, and outlives
        this process), most recently updated first."""
        rows: list[dict[str, Any]] = []
        for key in await self.engine.conversation_keys(PLATFORM):
            conversation = await self.engine.get(key)
            if conversation is None:  # evicted or expired meanwhile
                continue
            rows.append(
                {
                    "id": key.channel,
                    "title": _title(conversation),
                    "model": self.engine.model_of(conversation),
                    "busy": self.busy(conversation.key),
                    "size": len(conversation.messages),
                    "updated_at": conversation.updated_at,
                }
            )
        rows.sort(key=lambda row: row["updated_at"], reverse=True)
        return rows

    def models_json(self) -> dict[str, Any]:
        models = self.engine.available_models()
        default = self.engine.default_model
        if default not in models:
            models.insert(0, default)
        return {"models": models, "default": default}


def _title(conversation: Conversation | None) -> str:
    if conversation is not None:
        for message in conversation.messages:
            if message.role == "user" and message.content.strip():
                text = " ".join(message.content.split())
                return text if len(text) <= _TITLE_CHARS else text[: _TITLE_CHARS - 1] + "…"
    return "New chat"


def _message_json(message: Message, conv_id: str, index: int) -> dict[str, object]:
    """A stored message, and under an assistant's the note every front end shows (an error, a
    stop, an empty answer, a skipped file: :func:`core.delivery.final_note`): the page repeats
    no note text. A user message's files as ``name``, ``kind``, ``media_type`` and, for an image
    whose bytes are kept, the ``url`` that serves it (``GET /chat/{id}/attachment/{i}/{n}``):
    never the bytes themselves in the conversation's JSON."""
    data = message.to_dict()
    data["note"] = final_note(message) if message.role == "assistant" else None
    data.pop("notes", None)  # in the note
    if message.attachments:
        files: list[dict[str, str]] = []
        for n, attachment in enumerate(message.attachments):
            row = {"name": attachment.name, "kind": attachment.kind}
            if attachment.kind == "image" and attachment.data:
                row["url"] = f"/chat/{conv_id}/attachment/{index}/{n}"
            files.append(row)
        data["attachments"] = files
    return data


#: Form fields a multipart ``send-message`` may carry besides its files.
_MAX_FORM_FIELDS = 10
#: Files one multipart ``send-message`` may carry (past ``MAX_ATTACHMENTS`` each gets its line).
_MAX_FORM_FILES = 50


async def _json_body(request: Request, limit: int) -> SendMessage:
    """A JSON ``send-message`` body, read up to ``limit`` bytes (WEB_MAX_BODY_BYTES: the route
    itself allows an upload's size); 422 naming what is wrong, as FastAPI's own parsing does."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise _TooLarge(limit)
    try:
        return SendMessage.model_validate_json(bytes(raw))
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False)]
        raise RequestValidationError(errors) from None


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


async def _form_message(request: Request, limits: AttachmentLimits) -> tuple[str, list[Attachment]]:
    """A ``multipart/form-data`` ``send-message``: its ``text`` (may be absent when it carries
    files) and its ``files``, each read up to one byte past ``MAX_ATTACHMENT_BYTES`` (a larger one
    is skipped with its line) and prepared like any platform's (:mod:`core.attachments`)."""
    async with request.form(max_files=_MAX_FORM_FILES, max_fields=_MAX_FORM_FIELDS) as form:
        text = form.get("text")
        if text is not None and not isinstance(text, str):
            raise Refused("The text field must be text, not a file.")
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        files: list[tuple[str, str, bytes]] = []
        for i, upload in enumerate(uploads):
            data = await upload.read(limits.max_bytes + 1) if i < limits.max_attachments else b""
            files.append((upload.filename or "file", upload.content_type or "", data))
    return text or "", await prepare_all_async(files, limits)


def _approvals(reply: Reply) -> list[dict[str, Any]]:
    """The reply's tool calls waiting for approval: ``call`` (what ``?call=`` names) and its
    progress line."""
    return [{"call": n, "line": p.line} for n, p in enumerate(reply.tool_progress) if p.waiting]


def _end_event(reply: Reply, busy: bool, show_reasoning: str) -> dict[str, Any]:
    """The reply's final state; with ``SHOW_REASONING=full`` also its reasoning (never stored:
    the page keeps it, by ``created_at``, for as long as it is open)."""
    end: dict[str, Any] = {
        "status": str(reply.status),
        "content": reply.text,
        "error": reply.error,
        "note": final_note(reply),
        "model": reply.model,
        "busy": busy,
        "created_at": reply.message.created_at,
        "reply_id": reply.id,
    }
    if show_reasoning == "full" and reply.reasoning:
        end["reasoning"] = reply.reasoning_text
    return end


def _error(message: str, status: int) -> WebJSON:
    return WebJSON({"error": message}, status_code=status)


async def _refused(request: Request, exc: Exception) -> WebJSON:
    """Every route: the engine's refusal as ``{"error"}``; 503 when the store cannot be reached
    (:class:`StoreUnavailable`: try again shortly), else 400 (change the request)."""
    assert isinstance(exc, Refused)
    return _error(exc.user_message, 503 if isinstance(exc, StoreUnavailable) else 400)


async def _invalid(request: Request, exc: Exception) -> WebJSON:
    """A 422 that names each wrong field and why, never its value: FastAPI's default echoes the
    whole input back (a 100 MB body, or a secret, in the answer and in logs that keep it)."""
    assert isinstance(exc, RequestValidationError)
    detail = [
        {
            "loc": [str(part) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    # "body.text" reads "text"; a path or query parameter keeps its place ("path.conv_id").
    where = [".".join(e["loc"][1:] if e["loc"][:1] == ["body"] else e["loc"]) for e in detail]
    summary = "; ".join(f"{w or 'body'}: {e['msg']}" for w, e in zip(where, detail, strict=True))
    return WebJSON({"error": f"Invalid request: {summary}.", "detail": detail}, status_code=422)


def create_app(
    engine: ChatEngine,
    settings: WebSettings,
    *,
    auth_token: str | SecretStr | None = None,
    edit_interval: float | None = None,
    allowed_hosts: Sequence[str] | None = None,
    clock: Clock | None = None,
    health: Health | None = None,
) -> FastAPI:
    """The web chat over ``engine``, bounded and paced by ``settings`` (``WEB_*``).

    ``auth_token``: required by every request (``Authorization: Bearer``, or the session cookie
    the login form sets). ``allowed_hosts``: accepted ``Host`` names (set for a loopback bind, so a
    DNS-rebinding page cannot reach the chat). ``edit_interval``: defaults to
    ``WEB_EDIT_INTERVAL``. ``clock`` times the sign-in throttle (default: the engine's). The
    engine's life is the caller's (``llmconnect run``). ``health``: what ``/readyz`` checks
    (:mod:`bots.health`; the runner's covers every front end; default: the store alone).
    """
    interval = settings.web_edit_interval if edit_interval is None else edit_interval
    web = WebChat(engine, edit_interval=interval)
    app = FastAPI(
        title="LLMConnect web chat",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # FastAPI's own bound (an ASGI middleware): 413 past it, Content-Length or chunked.
        max_body_size=settings.web_max_body_bytes,
    )
    if getattr(app, "max_body_size", None) != settings.web_max_body_bytes:
        # An older FastAPI keeps unknown arguments in ``extra``: the bound would silently vanish.
        raise RuntimeError(
            "WEB_MAX_BODY_BYTES needs a FastAPI that enforces max_body_size (0.165 does)"
        )
    app.state.web = web
    uploads = upload_limit(
        settings.web_max_body_bytes,
        engine.settings.max_attachments,
        engine.settings.max_attachment_bytes,
    )
    token = SecretStr(auth_token) if isinstance(auth_token, str) else auth_token
    if token is not None and not token.get_secret_value():
        token = None
    # The last added runs first: the Guard, then (for signed-in clients only) the bounds.
    app.add_middleware(StreamLimit, limit=settings.web_max_streams)
    app.add_middleware(DeclaredBodyLimit, limit=settings.web_max_body_bytes, uploads=uploads)
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts, clock=clock or engine.clock)
    app.add_exception_handler(RequestValidationError, _invalid)
    # One handler for every route: the engine raises Refused (StoreUnavailable when the store
    # is unreachable, whatever the store's own error was).
    app.add_exception_handler(Refused, _refused)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # /metrics, /healthz, /readyz: behind the Guard like every route (WEB_AUTH_TOKEN).
    app.router.routes.extend(health_routes(engine, health or Health(engine)))

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    # Every JSON route answers with WebJSON (an explicit class: FastAPI's default path would
    # serialize with pydantic, which fails on a lone surrogate).
    @app.get("/api/models", response_class=WebJSON)
    async def models() -> dict[str, Any]:
        return web.models_json()

    @app.get("/api/conversations", response_class=WebJSON)
    async def conversations() -> dict[str, Any]:
        return {"conversations": await web.conversations_json()}

    @app.post("/api/conversations", status_code=201, response_class=WebJSON)
    async def new_conversation() -> dict[str, Any]:
        conv_id = secrets.token_urlsafe(9)
        await engine.conversation(web.key(conv_id))
        return await web.conversation_json(conv_id)

    @app.get("/chat/{conv_id}", response_class=WebJSON)
    async def conversation(conv_id: ConvId) -> dict[str, Any]:
        return await web.conversation_json(conv_id)

    @app.post(
        "/chat/{conv_id}/send-message",
        status_code=202,
        response_model=None,
        response_class=WebJSON,
        # JSON keeps WEB_MAX_BODY_BYTES (_json_body); a multipart upload may carry the files.
        max_body_size=uploads,
    )
    async def send_message(conv_id: ConvId, request: Request) -> dict[str, Any] | JSONResponse:
        """``{"text": ...}`` as JSON, or ``multipart/form-data`` with ``text`` and ``files``
        (the same limits as any platform's files: ``MAX_ATTACHMENTS``, ``MAX_ATTACHMENT_BYTES``;
        a skipped file is a line under the reply)."""
        if web.closing:
            return _error("The server is shutting down.", 503)
        attachments: list[Attachment] = []
        try:
            if is_upload(request.scope):
                limits = AttachmentLimits.from_settings(engine.settings)
                text, attachments = await _form_message(request, limits)
            else:
                text = (await _json_body(request, settings.web_max_body_bytes)).text
        except _TooLarge as exc:
            return too_large(exc.limit)
        reply = await web.submit(conv_id, text, attachments)
        return {"id": conv_id, "status": str(reply.status), "model": reply.model}

    @app.get("/chat/{conv_id}/attachment/{index}/{n}", response_model=None)
    async def attachment(conv_id: ConvId, index: int, n: int) -> Response:
        """An image a user message of the conversation carried (its ``index`` in the messages,
        ``n`` among its files), as it was sent to the model; 404 once its bytes are gone (an old
        image past HISTORY_MAX_IMAGES, a trimmed turn). Images only: text files and PDFs show as
        their names."""
        conversation = await engine.get(web.key(conv_id))
        messages = conversation.messages if conversation else []
        files = messages[index].attachments if 0 <= index < len(messages) else ()
        image = files[n] if 0 <= n < len(files) else None
        data = image.raw() if image is not None and image.kind == "image" else b""
        if image is None or not data:
            return _error("No such image (it may have left the history).", 404)
        return Response(
            data,
            media_type=image.media_type,
            headers={"Cache-Control": "private, max-age=86400", "Content-Disposition": "inline"},
        )

    @app.get("/chat/{conv_id}/bot-stream", response_class=EventSourceResponse)
    async def bot_stream(conv_id: ConvId) -> AsyncIterator[ServerSentEvent]:
        """``start`` (status, model, ``reply_id``, and ``replaces``: the reply a regeneration
        replaces), ``delta`` (text; a late observer's first one is the text
        so far), ``status`` (``SHOW_REASONING=status``: the thinking line, until the first
        delta), ``reasoning`` (``full``: a piece of the model's thinking), ``tools`` (the
        progress lines of the reply's tool calls, one per call, each time they change),
        ``approvals`` (after each ``tools`` when a ``confirm`` server is configured: the calls waiting for Approve/Deny, ``[{"call",
        "line"}]``), ``end`` (final status,
        content, error, the note to show under the reply, whether another reply is queued, the
        reply's ``created_at``, its ``reply_id`` and, with ``full``, its whole ``reasoning``)."""
        key = web.key(conv_id)
        reply = web.follow(key)
        if reply is None:
            yield ServerSentEvent(event="end", data={"status": "idle", "busy": False})
            return
        yield ServerSentEvent(
            event="start",
            data={
                "status": str(reply.status),
                "model": reply.model,
                "reply_id": reply.id,
                "replaces": reply.replaces,
            },
        )
        async for kind, chunk in web.paced(reply):
            if kind == TEXT:
                yield ServerSentEvent(event="delta", data=chunk)
            elif kind == STATUS:
                yield ServerSentEvent(event="status", data=chunk)
            elif kind == REASONING:
                yield ServerSentEvent(event="reasoning", data=chunk)
            elif kind == TOOLS:
                yield ServerSentEvent(event="tools", data=chunk)
                if engine.mcp.confirming:  # only a confirm server's calls wait
                    yield ServerSentEvent(event="approvals", data=_approvals(reply))
        await reply
        ended = engine.clock.now()
        end = _end_event(reply, web.busy(key), engine.settings.show_reasoning)
        yield ServerSentEvent(event="end", data=end)
        # Resumed once the event is written: the final text reached the page. The first
        # page to get it counts (one observation per reply, as on Discord and Slack).
        if web.first_end(reply):
            engine.metrics.final_shown(key.platform, engine.clock.now() - ended)

    @app.get("/chat/{conv_id}/status", response_class=WebJSON, response_model=None)
    async def status(conv_id: ConvId) -> dict[str, Any] | JSONResponse:
        """What ``status`` says on Discord and Slack (``text``: model, history, this
        conversation's tokens today and in total, cost, price, the daily limit), and the token
        counts as numbers (``usage``: ``core.usage.usage_json``)."""
        key = web.key(conv_id)
        result = await execute(engine, key, Command("status"))
        if not result.ok:
            return _error(result.text, 400)
        report = await engine.usage_of(key, None)
        usage = usage_json(report, engine.settings) if report is not None else None
        return {"id": conv_id, "text": result.text, "usage": usage}

    @app.post("/chat/{conv_id}/model", response_class=WebJSON)
    async def set_model(conv_id: ConvId, body: SetModel) -> dict[str, Any]:
        model = await engine.set_model(web.key(conv_id), body.model)
        return {"id": conv_id, "model": model}

    @app.get("/chat/{conv_id}/tools", response_class=WebJSON, response_model=None)
    async def tools(conv_id: ConvId) -> dict[str, Any] | JSONResponse:
        """What ``tools`` says on Discord and Slack (``text``), and as data: each MCP server,
        whether this conversation may use it, its status and its tools (``server.tool``)."""
        key = web.key(conv_id)
        result = await execute(engine, key, Command("tools"))
        if not result.ok:
            return _error(result.text, 400)
        enabled = engine.tool_servers_of(await engine.conversation(key))
        servers = [
            {
                "name": state.name,
                "enabled": state.name in enabled,
                "status": str(state.status),
                "tools": [t.name for t in state.tools],
            }
            for state in engine.mcp.states.values()
        ]
        return {"id": conv_id, "text": result.text, "servers": servers}

    @app.post("/chat/{conv_id}/tools", response_class=WebJSON)
    async def set_tools(conv_id: ConvId, body: SetToolServer) -> dict[str, Any]:
        """Enable or disable one MCP server in this conversation (the web chat's owner, who
        holds ``WEB_AUTH_TOKEN`` when set, may: as for the model)."""
        servers = await engine.set_tool_server(web.key(conv_id), body.server, body.enabled)
        return {"id": conv_id, "servers": servers}

    @app.post("/chat/{conv_id}/stop", response_class=WebJSON)
    async def stop(conv_id: ConvId) -> dict[str, Any]:
        return {"id": conv_id, "stopped": await engine.stop(web.key(conv_id))}

    @app.post(
        "/chat/{conv_id}/replies/{reply_id}/{action}",
        response_class=WebJSON,
        response_model=None,
    )
    async def reply_button(
        conv_id: ConvId,
        reply_id: ReplyId,
        action: ActionName,
        call: Annotated[int | None, Query(ge=0, le=9999)] = None,
    ) -> dict[str, Any] | JSONResponse:
        """A reply's button: ``stop`` (that reply only), ``regenerate`` (the latest reply:
        asked again, followed by ``bot-stream``), ``up``/``down`` (the operator's vote; the
        same again withdraws it), ``approve``/``deny`` with ``?call=N`` (a tool call waiting
        for approval: the ``approvals`` event's ``call``). ``{"id", "reply_id", "text",
        "vote", "regenerating"}``; a refusal is 400 with ``{"error"}`` (503: the store is
        unreachable)."""
        if web.closing and action == "regenerate":
            return _error("The server is shutting down.", 503)
        approval = action in ("approve", "deny")
        if approval != (call is not None):
            return _error("approve and deny take ?call=N; the other buttons none.", 400)
        return await web.press(conv_id, reply_id, ACTIONS[action], call)

    @app.post("/chat/{conv_id}/reset", response_class=WebJSON)
    async def reset(conv_id: ConvId) -> dict[str, Any]:
        """Stop what runs, drop what waits, clear the history (model and system prompt stay)."""
        await engine.reset(web.key(conv_id))
        return await web.conversation_json(conv_id)

    return app
