"""The web chat: the seed's FastAPI app, its simulated echo replaced by the shared engine.

One page (``/``) and a few JSON endpoints. The seed's names stay: ``POST
/chat/{conv_id}/send-message`` appends the user turn and starts the generation in the background
(:meth:`ChatEngine.submit`), ``GET /chat/{conv_id}/bot-stream`` streams the reply as Server-Sent
Events, and a finished reply's status is ``complete``. Streaming is event-driven: the SSE
generator iterates the engine's :class:`~core.engine.Reply`, which wakes it per delta, so a
reloaded page or a second tab (a late observer) gets the text so far, then the rest.

Why the conversation state lives in the engine and not here: Discord, Slack and the web share one
engine under ``llmconnect run``. This module only keeps which replies it submitted that have not
ended (a stream opened right after ``send-message`` must find a reply that is still queued) and
which conversations are the web's own (for the sidebar).

Safety: :mod:`bots.web.guard` checks the token (``WEB_AUTH_TOKEN``) on every request, the Host
header when bound to loopback, and sets a strict Content-Security-Policy; the page renders LLM
output as Markdown from escaped text (``static/app.js``), so HTML in a reply is shown, never run.
"""

from __future__ import annotations

import contextlib
import secrets
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, Any

# FastAPI's own SSE support (``fastapi.sse``, FastAPI >= 0.135): maintained with FastAPI, encodes
# each event, sends keep-alive comments and stops the generator when the client goes away.
from fastapi import FastAPI
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, SecretStr

from core.clock import Clock
from core.conversations import Conversation, ConversationKey
from core.engine import ChatEngine, Refused, Reply

from .guard import Guard

__all__ = ["PLATFORM", "STATIC_DIR", "WebChat", "create_app"]

#: ``ConversationKey("web", conv_id)``.
PLATFORM = "web"
STATIC_DIR = Path(__file__).resolve().parent / "static"
_TITLE_CHARS = 60

ConvId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class SendMessage(BaseModel):
    text: str


class SetModel(BaseModel):
    model: str


class WebChat:
    """What the web front end keeps besides the engine: its conversations and its live replies."""

    def __init__(self, engine: ChatEngine, *, edit_interval: float) -> None:
        self.engine = engine
        self.edit_interval = edit_interval
        #: Set at shutdown: new prompts are refused, running streams end with their reply.
        self.closing = False
        #: Replies this app submitted that have not ended, per conversation, in order.
        self._live: dict[ConversationKey, deque[Reply]] = {}
        #: The web's conversation ids (the engine's store is shared by every platform).
        self._ids: OrderedDict[str, None] = OrderedDict()

    @staticmethod
    def key(conv_id: str) -> ConversationKey:
        return ConversationKey(PLATFORM, conv_id)

    def remember(self, conv_id: str) -> None:
        self._ids[conv_id] = None
        self._ids.move_to_end(conv_id)
        while len(self._ids) > self.engine.settings.max_conversations:
            self._ids.popitem(last=False)

    async def submit(self, conv_id: str, text: str) -> Reply:
        """Queue a prompt. No actor: whoever reaches the page (loopback, or the token holder) is
        the operator, so per-user rate limits and admin lists do not apply; channel lists do."""
        key = self.key(conv_id)
        reply = await self.engine.submit(key, text)
        self.remember(conv_id)
        self._live.setdefault(key, deque()).append(reply)
        if reply.task is not None:
            reply.task.add_done_callback(lambda _: self._forget(key, reply))
        return reply

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

    def busy(self, key: ConversationKey) -> bool:
        return any(not reply.done for reply in self._live.get(key, ()))

    async def paced(self, reply: Reply) -> AsyncIterator[str]:
        """The reply's deltas, at most one chunk per ``WEB_EDIT_INTERVAL`` (deltas that arrive
        meanwhile are joined into the next chunk; nothing is dropped)."""
        interval = self.edit_interval
        deltas = reply.__aiter__()
        async with contextlib.aclosing(deltas):  # type: ignore[type-var]
            async for chunk in deltas:
                yield chunk
                if interval > 0 and not reply.done:
                    await self.engine.clock.sleep(interval)

    # ----------------------------------------------------------------- JSON views

    async def conversation_json(self, conv_id: str) -> dict[str, Any]:
        key = self.key(conv_id)
        conversation = await self.engine.get(key)
        messages = [m.to_dict() for m in conversation.messages] if conversation else []
        return {
            "id": conv_id,
            "title": _title(conversation),
            "model": self.engine.model_of(conversation)
            if conversation
            else self.engine.default_model,
            "busy": self.busy(key),
            "messages": messages,
        }

    async def conversations_json(self) -> list[dict[str, Any]]:
        rows = []
        for conv_id in list(self._ids):
            conversation = await self.engine.get(self.key(conv_id))
            if conversation is None:  # evicted from the store
                del self._ids[conv_id]
                continue
            rows.append(
                {
                    "id": conv_id,
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


def _end_event(reply: Reply, busy: bool) -> dict[str, Any]:
    return {
        "status": str(reply.status),
        "content": reply.text,
        "error": reply.error,
        "model": reply.model,
        "busy": busy,
    }


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    engine: ChatEngine,
    *,
    auth_token: str | SecretStr | None = None,
    edit_interval: float | None = None,
    allowed_hosts: Sequence[str] | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The web chat over ``engine``.

    ``auth_token``: required by every request (``Authorization: Bearer``, or the session cookie
    the login form sets). ``allowed_hosts``: accepted ``Host`` names (set for a loopback bind, so a
    DNS-rebinding page cannot reach the chat). ``edit_interval``: defaults to
    ``WEB_EDIT_INTERVAL``. ``clock`` times the sign-in throttle (default: the engine's). The
    engine's life is the caller's (``llmconnect run``).
    """
    interval = engine.settings.web_edit_interval if edit_interval is None else edit_interval
    web = WebChat(engine, edit_interval=interval)
    app = FastAPI(title="LLMConnect web chat", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = web
    token = SecretStr(auth_token) if isinstance(auth_token, str) else auth_token
    if token is not None and not token.get_secret_value():
        token = None
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts, clock=clock or engine.clock)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/models")
    async def models() -> dict[str, Any]:
        return web.models_json()

    @app.get("/api/conversations")
    async def conversations() -> dict[str, Any]:
        return {"conversations": await web.conversations_json()}

    @app.post("/api/conversations", status_code=201)
    async def new_conversation() -> dict[str, Any]:
        conv_id = secrets.token_urlsafe(9)
        await engine.conversation(web.key(conv_id))
        web.remember(conv_id)
        return await web.conversation_json(conv_id)

    @app.get("/chat/{conv_id}")
    async def conversation(conv_id: ConvId) -> dict[str, Any]:
        return await web.conversation_json(conv_id)

    @app.post("/chat/{conv_id}/send-message", status_code=202, response_model=None)
    async def send_message(conv_id: ConvId, body: SendMessage) -> dict[str, Any] | JSONResponse:
        if web.closing:
            return _error("The server is shutting down.", 503)
        try:
            reply = await web.submit(conv_id, body.text)
        except Refused as exc:
            return _error(exc.user_message, 400)
        return {"id": conv_id, "status": str(reply.status), "model": reply.model}

    @app.get("/chat/{conv_id}/bot-stream", response_class=EventSourceResponse)
    async def bot_stream(conv_id: ConvId) -> AsyncIterator[ServerSentEvent]:
        """``start`` (status, model), ``delta`` (text; a late observer's first one is the text
        so far), ``end`` (final status, content, error, and whether another reply is queued)."""
        key = web.key(conv_id)
        reply = web.follow(key)
        if reply is None:
            yield ServerSentEvent(event="end", data={"status": "idle", "busy": False})
            return
        yield ServerSentEvent(
            event="start", data={"status": str(reply.status), "model": reply.model}
        )
        async for chunk in web.paced(reply):
            yield ServerSentEvent(event="delta", data=chunk)
        await reply
        yield ServerSentEvent(event="end", data=_end_event(reply, web.busy(key)))

    @app.post("/chat/{conv_id}/model", response_model=None)
    async def set_model(conv_id: ConvId, body: SetModel) -> dict[str, Any] | JSONResponse:
        try:
            model = await engine.set_model(web.key(conv_id), body.model)
        except Refused as exc:
            return _error(exc.user_message, 400)
        web.remember(conv_id)
        return {"id": conv_id, "model": model}

    @app.post("/chat/{conv_id}/stop")
    async def stop(conv_id: ConvId) -> dict[str, Any]:
        return {"id": conv_id, "stopped": await engine.stop(web.key(conv_id))}

    @app.post("/chat/{conv_id}/reset")
    async def reset(conv_id: ConvId) -> dict[str, Any]:
        """Stop what runs or waits, then clear the history (model and system prompt stay)."""
        key = web.key(conv_id)
        while await engine.stop(key):
            pass
        await engine.reset(key)
        return await web.conversation_json(conv_id)

    return app
