"""``SlackBot``: slack-bolt's ``AsyncApp`` wired to the core engine, over HTTP or Socket Mode.

Why it is short: conversations, prompts, commands, the admin rule, throttled rendering and the
shared edit budget are the core's. This module only turns Slack events and slash commands into
core calls (:mod:`bots.slack.events` says where a message belongs), answers through a
:class:`~bots.slack.sink.SlackSink` or Slack's native streaming
(:mod:`bots.slack.streaming`), and runs the transports: bolt's own aiohttp app (behind a check
of the signature and the body that bolt's handler lacks), or bolt's Socket Mode client. The event
filters (well-formed, DM or channel, once) and the place lookup are bolt listener middleware.
Slack's assistant pane goes through bolt's ``AsyncAssistant`` (suggested prompts, titles; its
questions through the same filters), every question in a thread gets the "is thinking…" status
before the LLM is asked, and the reply buttons' clicks (``block_actions``) go to core's
:func:`~core.controls.press`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_server import AsyncSlackAppServer
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncAssistant, AsyncBoltContext
from slack_bolt.middleware.async_custom_middleware import AsyncCustomMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots.frontend import DEFAULT_GRACE
from core.attachments import Attachment, AttachmentLimits
from core.budget import EditBudget, SendBudgets
from core.clock import Clock, MonotonicClock
from core.cluster import BudgetShare
from core.commands import Command, CommandResult, execute, parse_command
from core.controls import (
    ACTION_ID_PATTERN,
    Action,
    parse_action_id,
    press,
    renderer_controls,
)
from core.delivery import deliver_with, replaced_messages
from core.engine import ChatEngine, Refused, Reply
from core.policy import Actor, is_prompt
from core.render import StreamRenderer

from .commands import ASK, SLASH_COMMANDS, SLASH_HELP, slash_command
from .events import Place, Threads, message_author, well_formed
from .files import shared_files
from .mrkdwn import escape, from_slack
from .settings import SlackSettings
from .sink import SlackSink
from .status import StatusLine, ThreadStatus
from .streaming import NativeStreamRenderer

__all__ = ["EVENTS_PATH", "HEARD_STATUS", "SlackBot", "SlackConfigError"]

log = logging.getLogger("llmconnect.slack")

EVENTS_PATH = "/slack/events"
_ADMIN_TTL = 300.0  # seconds a workspace-admin lookup is trusted
#: Digits of a request timestamp (Unix seconds: 10 until the year 2286).
_TIMESTAMP_DIGITS = 16
#: How long an event id is remembered: Slack retries a delivery three times within minutes.
EVENT_MEMORY = 3600.0

#: The thread's status from the moment a question arrives until the first text is in (Slack
#: shows it after the app's name: "LLMConnect is thinking…").
HEARD_STATUS = "is thinking…"
#: Characters of the first question an assistant thread's title keeps.
TITLE_MAX = 100

#: bolt's ``next()`` in a middleware: go on to the next middleware, then the listener.
Next = Callable[[], Awaitable[None]]


class _NoTokenSkippedWarning(logging.Filter):
    """bolt warns that ``SLACK_BOT_TOKEN`` "will be unused" because it sees the variable next
    to our client; the client carries that very token, so the warning only misleads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


_BOLT_LOG = logging.getLogger("llmconnect.slack.bolt")
_BOLT_LOG.addFilter(_NoTokenSkippedWarning())


class SlackConfigError(Exception):
    """A required Slack setting is missing; the message names the variable."""


class SlackBot:
    """One Slack app (one workspace's bot token) answering with ``engine`` (the caller's: shared,
    shut down by its owner).

    Use ``async with SlackBot(settings, engine) as bot:`` (or :meth:`start` / :meth:`aclose`),
    then :meth:`serve_http` or :meth:`start_socket_mode`.
    """

    def __init__(
        self,
        settings: SlackSettings,
        engine: ChatEngine,
        *,
        clock: Clock | None = None,
    ) -> None:
        if settings.slack_bot_token is None:
            raise SlackConfigError("SLACK_BOT_TOKEN is not set (the bot token, xoxb-...).")
        self.settings = settings
        self.engine = engine
        self.clock: Clock = clock or MonotonicClock()
        token = settings.slack_bot_token.get_secret_value()
        # Every call but the renderer's honours 429 + Retry-After in slack-sdk itself...
        self.client = AsyncWebClient(
            token=token,
            base_url=settings.slack_api_url,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            ],
        )
        # ...while posts and edits of streaming replies leave 429s to the core renderer, which
        # waits Retry-After on the core clock, defers the workspace budget and then sends the
        # latest text (not the stale one slack-sdk would resend).
        self.edit_client = AsyncWebClient(
            token=token,
            base_url=settings.slack_api_url,
            retry_handlers=[AsyncConnectionErrorRetryHandler()],
        )
        secret = settings.slack_signing_secret
        self.app = AsyncApp(
            client=self.client,
            signing_secret=secret.get_secret_value() if secret is not None else "",
            name="llmconnect",
            logger=_BOLT_LOG,
        )
        self.threads = Threads()
        self._native_off = False
        #: The thinking status of native streams (``assistant.threads.setStatus``); by the
        #: client that leaves 429s to the caller: a status that waited would be stale.
        self.thread_status = ThreadStatus(self.edit_client)
        self._budgets: dict[str, WorkspaceBudgets] = {}
        #: Workspace budgets are per app: processes sharing a store divide them.
        self.budget_share = BudgetShare(self.engine.cluster, "slack", clock=self.clock)
        self._admins: dict[str, tuple[bool, float]] = {}
        self._tasks: dict[asyncio.Task[None], Reply] = {}
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        #: Assistant threads opened (``assistant_thread_started``) whose first question has not
        #: come yet: it becomes the thread's title.
        self._untitled: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._side_tasks: set[asyncio.Task[None]] = set()
        # The filters every event goes through are bolt listener middleware, in this order; one
        # that drops an event acknowledges it (200: Slack must not redeliver it) and stops there.
        self.app.event(
            "app_mention",
            middleware=[self._well_formed, self._in_a_channel, self._once, self._place],
        )(self._on_event)
        message_filters: list[Callable[..., Awaitable[Any]]] = [
            self._well_formed,
            self._a_prompt,
            self._once,
            self._place,
        ]
        self.app.event("message", middleware=message_filters)(self._on_event)
        # Slack's AI-app surface (the assistant pane): bolt's assistant middleware. A message in
        # an assistant thread (a DM thread) is a prompt like any DM, through the same filters.
        assistant = AsyncAssistant(logger=_BOLT_LOG)
        assistant.thread_started(self._on_thread_started)
        assistant.thread_context_changed(self._on_thread_context_changed)
        assistant.user_message(
            self._on_event,
            middleware=[  # type: ignore[arg-type]  # slack-bolt: a list is what it takes
                AsyncCustomMiddleware(app_name=self.app.name, func=f, base_logger=_BOLT_LOG)
                for f in message_filters
            ],
        )
        self.app.assistant(assistant)
        # The buttons on replies (core.controls): a click is a ``block_actions`` payload.
        self.app.action(re.compile(ACTION_ID_PATTERN))(self._on_action)
        for name in SLASH_COMMANDS:
            self.app.command(name)(self._on_command)

    def __repr__(self) -> str:
        return f"SlackBot(api={self.settings.slack_api_url!r}, streaming={self.streaming!r})"

    @property
    def streaming(self) -> str:
        return self.settings.slack_streaming

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> SlackBot:
        """Open the shared HTTP connection pool for Web API calls."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self.client.session = self._session
            self.edit_client.session = self._session
            await self.budget_share.start()
        return self

    async def __aenter__(self) -> SlackBot:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def serve_http(self, host: str = "0.0.0.0", port: int = 3000) -> int:
        """Serve Slack's requests at ``/slack/events``; returns the port (``port=0``: any free)."""
        app = self.http_app()
        await self.start()
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        return int(self._runner.addresses[0][1])

    def http_app(self) -> web.Application:
        """bolt's own aiohttp handler (POST ``/slack/events`` → ``AsyncApp``), with a check in
        front of it (:func:`_checked_first`) that bolt's handler cannot give."""
        if not self.settings.slack_signing_secret:
            raise SlackConfigError(
                "SLACK_SIGNING_SECRET is not set: HTTP mode verifies every request with it."
            )
        verifier = SignatureVerifier(self.settings.slack_signing_secret.get_secret_value())
        server = AsyncSlackAppServer(port=0, path=EVENTS_PATH, app=self.app)

        @web.middleware
        async def checked_first(request: web.Request, handler: _Handler) -> web.StreamResponse:
            return await _checked_first(request, handler, verifier)

        # bolt's handler on an application of our own: bolt's ``web_app`` takes aiohttp's default
        # body limit, and only the constructor sets it (SLACK_MAX_BODY_BYTES).
        app = web.Application(
            client_max_size=self.settings.slack_max_body_bytes, middlewares=[checked_first]
        )
        app.add_routes([web.post(EVENTS_PATH, server.handle_post_requests)])
        return app

    async def start_socket_mode(self) -> None:
        """Connect to Slack over Socket Mode (``SLACK_APP_TOKEN``): no public URL needed."""
        app_token = self.settings.slack_app_token
        if app_token is None:
            raise SlackConfigError(
                "SLACK_APP_TOKEN is not set (the app-level token, xapp-..., for Socket Mode)."
            )
        await self.start()
        self._socket = AsyncSocketModeHandler(
            self.app, app_token=app_token.get_secret_value(), web_client=self.client
        )
        await self._socket.connect_async()  # type: ignore[no-untyped-call]  # slack-bolt: untyped

    async def connected(self) -> bool:
        """Whether Slack can reach this bot: its Socket Mode connection is up (bolt reconnects
        it by itself), or its HTTP listener is (``/readyz``)."""
        if self._socket is not None:
            client: Any = self._socket.client
            return bool(await client.is_connected())
        return self._runner is not None

    async def aclose(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop taking requests, end this bot's replies (each shows what it had, within ``grace``
        seconds), close connections. The engine keeps running: it is shared."""
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]  # slack-bolt: untyped
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.budget_share.aclose()
        for side in list(self._side_tasks):
            side.cancel()
        for reply in self._tasks.values():
            reply.cancel()
        if self._tasks:  # deliveries write their final text; don't wait for ever on Slack
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ events

    async def _on_event(self, event: dict[str, Any], context: AsyncBoltContext) -> None:
        """A mention in a channel or a DM, past the filters below (which put its place in
        ``context``)."""
        text = from_slack(event.get("text") or "", context.bot_user_id)
        files = event.get("files")
        await self._on_text(context["place"], text, files if isinstance(files, list) else ())

    # Listener middleware: each lets an event go on (``next_``) or drops it, acknowledged.

    async def _well_formed(
        self, body: dict[str, Any], event: dict[str, Any], ack: AsyncAck, next_: Next
    ) -> BoltResponse | None:
        keep = well_formed(body, event)
        if not keep:
            log.warning("Ignored a Slack %s event with fields of the wrong type", event.get("type"))
        return await _go_on_if(keep, ack, next_)

    async def _in_a_channel(
        self, event: dict[str, Any], context: AsyncBoltContext, ack: AsyncAck, next_: Next
    ) -> BoltResponse | None:
        """A mention in a DM arrives as a message event too: answered as that one. A bot's
        mention only with ``ALLOW_BOTS``, never the bot's own."""
        channel = event.get("channel") or ""
        keep = not channel.startswith("D") and bool(event.get("user"))
        if keep and event.get("bot_id"):
            keep = is_prompt(
                self.engine.settings,
                mention=True,
                direct=False,
                followed_thread=False,
                channel=channel,
                author_is_bot=True,
                author_is_self=self._own(event, context),
            )
        return await _go_on_if(keep, ack, next_)

    async def _a_prompt(
        self, event: dict[str, Any], context: AsyncBoltContext, ack: AsyncAck, next_: Next
    ) -> BoltResponse | None:
        """Of the message events, the prompts (core's :func:`~core.policy.is_prompt`): a DM, a
        message in a thread the bot answered in, one in an ``AUTO_REPLY_CHANNELS`` channel; no
        edit or system message, never the bot's own, other bots' only with ``ALLOW_BOTS``. A
        channel message that mentions the bot is answered as its ``app_mention`` event."""
        return await _go_on_if(self._is_prompt(event, context), ack, next_)

    def _own(self, event: dict[str, Any], context: AsyncBoltContext) -> bool:
        user, bot = event.get("user"), event.get("bot_id")
        return bool((user and user == context.bot_user_id) or (bot and bot == context.bot_id))

    def _is_prompt(self, event: dict[str, Any], context: AsyncBoltContext) -> bool:
        author = message_author(event)
        channel = event.get("channel") or ""
        if author is None or not channel:
            return False
        direct = event.get("channel_type") == "im"
        bot_user = context.bot_user_id
        if not direct and bot_user and f"<@{bot_user}>" in (event.get("text") or ""):
            return False  # its app_mention event answers it: once
        thread_ts, ts = event.get("thread_ts"), event.get("ts")
        followed = (
            bool(thread_ts)
            and thread_ts != ts
            and self.threads.has_answered(channel, str(thread_ts))
        )
        return is_prompt(
            self.engine.settings,
            mention=False,
            direct=direct,
            followed_thread=followed,
            channel=channel,
            author_is_bot=author[1],
            author_is_self=self._own(event, context),
        )

    async def _once(self, body: dict[str, Any], ack: AsyncAck, next_: Next) -> BoltResponse | None:
        """Slack redelivers an event it thinks was not acknowledged, possibly to another worker
        behind the same load balancer: answer it once (the engine's cluster remembers)."""
        return await _go_on_if(not await self._repeated(body), ack, next_)

    async def _place(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext, next_: Next
    ) -> None:
        """Where the event belongs (its conversation, where the answer goes): ``context["place"]``."""
        context["place"] = self.threads.place(
            team_id=event.get("team") or body.get("team_id") or context.team_id or "",
            channel=event["channel"],
            user_id=event.get("user") or event["bot_id"],
            ts=event.get("ts"),
            thread_ts=event.get("thread_ts"),
        )
        await next_()

    async def _repeated(self, body: dict[str, Any]) -> bool:
        """Whether this event id was seen before (by any worker sharing the store)."""
        event_id = body.get("event_id")
        if not event_id:
            return False
        try:
            return not await self.engine.cluster.first_sighting(f"slack:{event_id}", EVENT_MEMORY)
        except Exception as exc:  # Redis away: answer (the engine then says what is wrong)
            log.warning("could not check event %s (%s)", event_id, type(exc).__name__)
            return False

    async def _on_text(self, place: Place, text: str, files: Sequence[Any] = ()) -> None:
        command = parse_command(text)
        if command is not None:
            result = await self._execute(place, command)
            await self._tell(place, result.text, ephemeral=result.ephemeral)
            return
        actor = Actor(place.user_id)
        parent = place.parent.channel if place.parent else None
        # Nothing is downloaded for a user the access lists refuse (submit says why).
        refused = self.engine.policy.refusal(actor, place.key.channel, parent)
        # The first sign that the question was heard, at once: the thread's status (the LLM is
        # asked once it is shown, see ChatEngine.submit's ``heard``).
        status = None if refused else self._status_line(place)
        heard = (
            asyncio.get_running_loop().create_task(status.show(HEARD_STATUS))
            if status is not None
            else None
        )
        if not refused:
            self._title(place, text)
        attachments = await self._shared_files(files) if files and not refused else []
        try:
            reply = await self.engine.submit(
                place.key,
                text,
                actor=actor,
                parent=place.parent,
                attachments=attachments,
                heard=heard,
            )
        except Refused as exc:
            await self._tell(place, exc.user_message, ephemeral=True)
            await self._end_status(status, heard)
            return
        self._spawn(self._deliver(place, reply, status, heard), reply)

    def _status_line(self, place: Place) -> StatusLine | None:
        """The status of the thread the answer will be written in (``None`` for an answer at a
        channel's top level: Slack's status belongs to a thread)."""
        thread_ts = place.thread_ts or (place.anchor_ts if self.native(place) else None)
        if thread_ts is None:
            return None
        statuses = self.budgets(place.team_id).statuses
        return self.thread_status.line(statuses, place.channel, thread_ts)

    async def _end_status(
        self, status: StatusLine | None, heard: asyncio.Task[bool] | None
    ) -> None:
        """Clear the status once its call is done (a no-op when it is cleared already)."""
        if status is None:
            return
        if heard is not None:
            await asyncio.wait([heard])
        await status.clear()

    def _title(self, place: Place, text: str) -> None:
        """The first question of an assistant thread the bot saw open becomes its title
        (``assistant.threads.setTitle``, once; in the background: never before the status)."""
        thread = (place.channel, place.thread_ts or "")
        if thread not in self._untitled:
            return
        del self._untitled[thread]
        title = " ".join(text.split())[:TITLE_MAX]
        if not title:
            return

        async def set_title() -> None:
            try:
                await self.client.assistant_threads_setTitle(
                    channel_id=thread[0], thread_ts=thread[1], title=title
                )
            except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
                log.info("assistant.threads.setTitle in %s failed: %s", thread[0], exc)

        self._side_task(set_title())

    def _side_task(self, coro: Coroutine[Any, Any, None]) -> None:
        """A courtesy call in the background, kept until it ends (closing cancels it)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # ------------------------------------------------------------------ buttons

    async def _on_action(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Any,
        context: AsyncBoltContext,
    ) -> None:
        """A click on a reply's button (``block_actions``, HTTP or Socket Mode): acknowledged at
        once, then carried out by core's :func:`~core.controls.press` in the conversation of the
        clicked message. A refusal ("only the asker can do that") and a vote's thanks go to the
        clicker alone (ephemeral, by the payload's ``response_url``); a regeneration is written
        into the same message."""
        await ack()
        clicked = _clicked(body, action)
        if clicked is None:
            log.warning("Ignored a block_actions payload without its message or user")
            return
        team_id, channel, user, ts, thread_ts, action_id = clicked
        pressed = parse_action_id(action_id)
        if pressed is None:
            return
        place = self.threads.place(
            team_id=team_id or context.team_id or "",
            channel=channel,
            user_id=user,
            ts=ts,
            thread_ts=thread_ts,
        )
        # The message's conversation: the thread's, or (a top-level question answered in its
        # thread, remembered or not after a restart) the channel's; the id's hash says which.
        key, parent = place.key, place.parent
        channel_key = Threads.channel_key(channel)
        if not pressed.belongs_to(key) and pressed.belongs_to(channel_key):
            key, parent = channel_key, None
        actor = Actor(user)
        admins = self.engine.settings.admin_user_ids
        if pressed.action in (Action.STOP, Action.REGENERATE, Action.DENY) and user not in admins:
            actor = Actor(user, platform_admin=await self._workspace_admin(user))
        result = await press(self.engine, key, pressed, actor, parent=parent)
        if result.text:
            await self._tell_clicker(respond, place, result.text)
        if result.reply is not None:
            again = Place(place.team_id, channel, user, key, parent, thread_ts=thread_ts)
            self._spawn(self._deliver(again, result.reply, reuse=ts), result.reply)

    async def _tell_clicker(self, respond: Any, place: Place, text: str) -> None:
        """A short answer only the clicker sees: by the click's ``response_url`` (works where
        the bot was not invited), else ``chat.postEphemeral``."""
        if respond is not None and getattr(respond, "response_url", None):
            try:
                await respond(text=escape(text), response_type="ephemeral", replace_original=False)
                return
            except (SlackClientError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.info("Could not answer a click by its response_url: %s", exc)
        await self._tell(place, text, ephemeral=True)

    # ------------------------------------------------------------------ assistant threads

    async def _on_thread_started(self, event: dict[str, Any]) -> None:
        """Someone opened a thread with the app in Slack's assistant pane: offer the suggested
        prompts (``SLACK_SUGGESTED_PROMPTS``); its first question will be its title."""
        opened = event.get("assistant_thread")
        channel = opened.get("channel_id") if isinstance(opened, dict) else None
        thread_ts = opened.get("thread_ts") if isinstance(opened, dict) else None
        if not (isinstance(channel, str) and channel and isinstance(thread_ts, str) and thread_ts):
            log.warning("Ignored an assistant_thread_started event without its thread")
            return
        self._untitled[(channel, thread_ts)] = None
        while len(self._untitled) > UNTITLED_THREADS:
            self._untitled.popitem(last=False)
        prompts = self.settings.slack_suggested_prompts
        if not prompts:
            return
        try:
            await self.client.assistant_threads_setSuggestedPrompts(
                channel_id=channel,
                thread_ts=thread_ts,
                prompts=[p.model_dump() for p in prompts],
            )
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("assistant.threads.setSuggestedPrompts in %s failed: %s", channel, exc)

    async def _on_thread_context_changed(self) -> None:
        """The user switched channels with the assistant pane open. The bot does not read the
        channel it was opened from, so there is nothing to keep; handled here because bolt's
        default would store it by ``chat.update`` of the thread's first reply (the scarce
        Tier 3 budget) after a ``conversations.replies`` read."""

    async def _shared_files(self, files: Sequence[Any]) -> list[Attachment]:
        """A message's files, downloaded with the bot token from SLACK_FILES_URL
        (:mod:`bots.slack.files`)."""
        token = self.settings.slack_bot_token
        assert token is not None  # checked in __init__
        return await shared_files(
            self.client,
            files,
            hosts=self.settings.slack_files_url,
            token=token.get_secret_value(),
            limits=AttachmentLimits.from_settings(self.engine.settings),
            clock=self.clock,
        )

    # ------------------------------------------------------------------ slash commands

    async def _on_command(
        self, ack: Any, command: dict[str, Any], respond: Any, context: AsyncBoltContext
    ) -> None:
        await ack()  # within Slack's 3 seconds; the work follows
        if not command.get("response_url"):  # not one of Slack's: nowhere to answer
            log.warning("Ignored a slash command without a response_url")
            return
        channel = command.get("channel_id", "")
        place = Place(
            team_id=command.get("team_id") or context.team_id or "",
            channel=channel,
            user_id=command.get("user_id", ""),
            key=Threads.channel_key(channel),
        )
        text = from_slack(command.get("text", ""), context.bot_user_id)
        if command.get("command") == ASK:
            await self._slash_ask(place, text, respond)
            return
        result = await self._execute(place, slash_command(command.get("command", ""), text))
        await respond(
            text=escape(result.text),
            response_type="ephemeral" if result.ephemeral else "in_channel",
        )

    async def _slash_ask(self, place: Place, text: str, respond: Any) -> None:
        try:
            reply = await self.engine.submit(place.key, text, actor=Actor(place.user_id))
        except Refused as exc:
            await respond(text=escape(exc.user_message), response_type="ephemeral")
            return
        quoted = "\n".join(f"> {line}" for line in escape(text).split("\n"))
        try:
            posted = await self.client.chat_postMessage(
                channel=place.channel,
                text=f"*<@{place.user_id}> asked:*\n{quoted}",
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            reply.cancel()  # nowhere to answer: don't run the prompt for nothing
            error = exc.response.get("error")
            hint = (
                "invite me first (/invite)"
                if error in ("not_in_channel", "channel_not_found")
                else error
            )
            await respond(text=escape(f"I can't post here: {hint}."), response_type="ephemeral")
            return
        anchored = Place(
            place.team_id, place.channel, place.user_id, place.key, anchor_ts=posted["ts"]
        )
        self._spawn(self._deliver(anchored, reply), reply)

    async def _execute(self, place: Place, command: Command) -> CommandResult:
        result = await execute(
            self.engine, place.key, command, await self._actor(place, command), parent=place.parent
        )
        if command.name == "help":
            return CommandResult(f"{result.text}\n{SLASH_HELP}", result.ephemeral, result.ok)
        return result

    async def _actor(self, place: Place, command: Command) -> Actor:
        """The asker; a workspace admin or owner counts as an admin (looked up only when the
        admin rule applies and the user is not listed in ``ADMIN_USER_IDS``)."""
        admins = self.engine.settings.admin_user_ids
        changes = command.name in ("model", "system") and bool(command.arg.strip())
        if not changes or not admins or place.user_id in admins:
            return Actor(place.user_id)
        return Actor(place.user_id, platform_admin=await self._workspace_admin(place.user_id))

    async def _workspace_admin(self, user_id: str) -> bool:
        cached = self._admins.get(user_id)
        now = self.clock.now()
        if cached is not None and now - cached[1] < _ADMIN_TTL:
            return cached[0]
        try:
            user = (await self.client.users_info(user=user_id))["user"]
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("users.info for %s failed: %s", user_id, exc)
            return False
        admin = bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
        self._admins[user_id] = (admin, now)
        return admin

    # ------------------------------------------------------------------ answering

    def budgets(self, team_id: str) -> WorkspaceBudgets:
        """The request budgets shared by every streaming reply in one workspace."""
        budgets = self._budgets.get(team_id)
        if budgets is None:
            budgets = WorkspaceBudgets(self.settings, self.clock)
            for budget, rate in budgets.shared():
                self.budget_share.add(budget, rate)
            self._budgets[team_id] = budgets
        return budgets

    def native(self, place: Place) -> bool:
        """Whether to answer ``place`` with Slack's native streaming."""
        mode = self.settings.slack_streaming
        if mode == "update" or self._native_off or (place.thread_ts or place.anchor_ts) is None:
            return False
        return mode == "native" or place.thread_ts is not None or place.is_dm

    def _spawn(self, coro: Coroutine[Any, Any, None], reply: Reply) -> None:
        """Deliver ``reply`` in the background, tracked so that :meth:`aclose` can end it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[task] = reply
        task.add_done_callback(lambda t: self._tasks.pop(t, None))

    async def _deliver(
        self,
        place: Place,
        reply: Reply,
        status: StatusLine | None = None,
        heard: asyncio.Task[bool] | None = None,
        *,
        reuse: str | None = None,
    ) -> None:
        """Write ``reply`` where ``place`` says (into message ``reuse`` when given: a
        regeneration); ``status`` (the thread's, maybe shown by ``heard``) is cleared once the
        first text is in, or when the reply ends without any."""
        try:
            await self._write(place, reply, status, reuse)
        except asyncio.CancelledError:
            if status is not None:
                status.drop()
            raise
        await self._end_status(status, heard)

    async def _write(
        self, place: Place, reply: Reply, status: StatusLine | None, reuse: str | None = None
    ) -> None:
        """The reply's buttons (core.controls) ride on the same requests as its text: Stop on
        each post and update while it streams by ``chat.update``, then Regenerate/👍/👎 on the
        final update; a native stream cannot carry blocks until ``chat.stopStream``, so it has
        no Stop and gets the final buttons there. A regeneration (``reuse``) is written by
        ``chat.update`` into the clicked message."""
        interval = self.settings.slack_edit_interval
        buttons = self.engine.settings.reply_buttons  # REPLY_BUTTONS
        # Without REPLY_BUTTONS still drawn (none) when a confirm MCP server needs Approve/Deny.
        controls = renderer_controls(self.engine, reply, buttons)
        budgets = self.budgets(place.team_id)
        edits = budgets.for_edits(place.channel)
        gap = self.settings.slack_final_update_gap
        window = (1 if gap > 0 else 0, gap)  # one update per ``gap`` of a reply's message
        renderer: NativeStreamRenderer | StreamRenderer
        sink: SlackSink | None = None
        if reuse is None and self.native(place):
            thread_ts = place.thread_ts or place.anchor_ts
            assert thread_ts is not None
            if place.thread_ts is None:
                self.threads.opened(place.channel, thread_ts, place.key)
            self.threads.answered(place.channel, thread_ts)
            renderer = NativeStreamRenderer(
                self.client,
                channel=place.channel,
                thread_ts=thread_ts,
                recipient_user_id=place.user_id,
                recipient_team_id=place.team_id,
                fallback=lambda ts: SlackSink(
                    self.edit_client, place.channel, thread_ts=thread_ts, adopt_ts=ts
                ),
                min_interval=interval,
                budget=budgets.for_streams(),
                fallback_budget=edits,
                fallback_window=window,
                clock=self.clock,
                status=status
                or self.thread_status.line(budgets.statuses, place.channel, thread_ts),
                controls=controls,
            )
        else:
            if place.thread_ts is not None:
                self.threads.answered(place.channel, place.thread_ts)
            sink = SlackSink(
                self.edit_client,
                place.channel,
                thread_ts=place.thread_ts,
                after_first_post=status.clear if status is not None else None,
            )
            renderer = StreamRenderer(
                sink,
                min_interval=interval,
                budget=edits,
                clock=self.clock,
                window_limit=window[0],
                window_seconds=window[1],
                controls=controls,
                # A regeneration: all of the old reply's messages when it took several.
                replace=replaced_messages(reply, reuse),
            )
        clearing = None
        try:
            await deliver_with(self.engine, reply, renderer, controls=buttons)
            clearing = sink.after_first_post_task if sink is not None else None
            if clearing is not None:
                await asyncio.wait([clearing])  # the status clear, before the reply counts as done
        except asyncio.CancelledError:
            if sink is not None and sink.after_first_post_task is not None:
                sink.after_first_post_task.cancel()
            await renderer.aclose()
            raise
        except Exception as exc:  # a reply that could not be shown must not kill the bot
            log.warning("Answer in %s could not be delivered: %s", place.channel, exc)
            reply.cancel()  # nobody would see the rest: stop generating it
            await reply
        if isinstance(renderer, NativeStreamRenderer) and renderer.unsupported:
            # This workspace (or proxy) has no streaming API: stop paying a failed call per reply.
            self._native_off = True
            log.warning("Slack refused native streaming (%s); using chat.update", renderer.error)

    async def _tell(self, place: Place, text: str, *, ephemeral: bool) -> None:
        """A short plain-text answer; ephemeral ones only the asker sees (DMs are private)."""
        try:
            if ephemeral and not place.is_dm:
                await self.client.chat_postEphemeral(
                    channel=place.channel,
                    user=place.user_id,
                    text=escape(text),
                    thread_ts=place.thread_ts,
                )
            else:
                await self.client.chat_postMessage(
                    channel=place.channel, text=escape(text), thread_ts=place.thread_ts
                )
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Could not answer in %s: %s", place.channel, exc)


class WorkspaceBudgets:
    """One workspace's request budgets, one per limit Slack enforces on what replies send.

    Why apart: Slack limits each method on its own. ``chat.update`` (Tier 3, ~50/min) is the
    scarce one: it keeps a slot for every final update owed, so interim updates give way when it
    runs short. ``chat.postMessage`` is limited per channel (~1/s with short bursts) and per
    workspace (several hundred per minute); the native streaming methods have their own tier,
    and so has ``assistant.threads.setStatus`` (the thinking status of native streams, Tier 3:
    a status update only takes a slot that is free at once, and keeps one for its clear).
    Channel budgets are per process and kept for the :data:`CHANNEL_BUDGETS` latest channels.
    """

    def __init__(self, settings: SlackSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.updates = _per_minute(settings.slack_workspace_edit_rate, clock, reserve=True)
        self.posts = _per_minute(settings.slack_workspace_post_rate, clock)
        self.streams = _per_minute(settings.slack_stream_rate, clock, reserve=True)
        self.statuses = _per_minute(settings.slack_status_rate, clock, reserve=True)
        self._channels: OrderedDict[str, EditBudget] = OrderedDict()

    def shared(self) -> list[tuple[EditBudget, float]]:
        """The workspace budgets and their whole rates (processes sharing a store divide them)."""
        s = self.settings
        return [
            (self.updates, s.slack_workspace_edit_rate),
            (self.posts, s.slack_workspace_post_rate),
            (self.streams, s.slack_stream_rate),
            (self.statuses, s.slack_status_rate),
        ]

    def channel(self, channel: str) -> EditBudget:
        """The posts budget of one channel."""
        budget = self._channels.get(channel)
        if budget is None:
            burst = self.settings.slack_channel_post_burst
            rate = self.settings.slack_channel_post_rate
            # ``burst`` posts per ``burst / rate`` s: one per 1/rate s, up to ``burst`` at once.
            per = burst / rate + WINDOW_MARGIN
            budget = EditBudget(burst, per, burst=burst, clock=self.clock)
            if len(self._channels) >= CHANNEL_BUDGETS:
                self._channels.popitem(last=False)
        self._channels[channel] = budget
        self._channels.move_to_end(channel)
        return budget

    def for_edits(self, channel: str) -> SendBudgets:
        """What a reply by ``chat.postMessage`` + ``chat.update`` in ``channel`` takes."""
        return SendBudgets(posts=(self.channel(channel), self.posts), edits=(self.updates,))

    def for_streams(self) -> SendBudgets:
        """What a native stream takes: every call, start to stop, from the streams budget."""
        return SendBudgets(posts=(self.streams,), edits=(self.streams,))


#: Opened assistant threads remembered until their first question (the oldest is forgotten).
UNTITLED_THREADS = 10_000

#: Channels whose post budget a workspace keeps (the least recently used one goes first).
CHANNEL_BUDGETS = 1_000

#: Seconds added to each window Slack counts in. Why: the budget counts when it grants a call,
#: Slack when the call arrives; a call that took longer to arrive than the one a window later
#: would otherwise land inside Slack's window.
WINDOW_MARGIN = 0.5


def _clicked(
    body: dict[str, Any], action: dict[str, Any]
) -> tuple[str, str, str, str, str | None, str] | None:
    """(team, channel, user, message ts, its thread ts, action id) of a ``block_actions``
    payload; ``None`` when a field is missing or not a string."""

    def part(value: object, name: str) -> object:
        return value.get(name) if isinstance(value, dict) else None

    container, message = body.get("container"), body.get("message")
    user = part(body.get("user"), "id")
    team = part(body.get("team"), "id") or part(body.get("user"), "team_id") or ""
    channel = part(body.get("channel"), "id") or part(container, "channel_id")
    ts = part(message, "ts") or part(container, "message_ts")
    thread_ts = part(message, "thread_ts") or part(container, "thread_ts")
    action_id = action.get("action_id") if isinstance(action, dict) else None
    fields = (team, channel, user, ts, action_id)
    if not all(isinstance(f, str) for f in fields) or not all(fields[1:]):
        return None
    if thread_ts is not None and not isinstance(thread_ts, str):
        return None
    return str(team), str(channel), str(user), str(ts), thread_ts, str(action_id)


def _per_minute(rate: float, clock: Clock, *, reserve: bool = False) -> EditBudget:
    """A budget of ``rate`` calls per minute that may all go at once (Slack's windows are a
    minute, bursts within it allowed)."""
    per = 60.0 + WINDOW_MARGIN
    return EditBudget(rate, per, burst=max(1, int(rate)), clock=clock, reserve_finals=reserve)


async def _go_on_if(keep: bool, ack: AsyncAck, next_: Next) -> BoltResponse | None:
    """A listener middleware's end: on to the next one (and the listener) when ``keep``, else
    the event is acknowledged (200, so Slack does not redeliver it) and goes no further."""
    if keep:
        await next_()
        return None
    return await ack()


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _checked_first(
    request: web.Request, handler: _Handler, verifier: SignatureVerifier
) -> web.StreamResponse:
    """Hand a request to bolt's handler once it is known to be Slack's and readable.

    Why bolt's own handler is not enough: it parses the body before it checks the signature and
    calls ``int()`` on the timestamp header, so a request with a timestamp like ``abc`` or a
    signed body that is not a JSON object or a form made it fail with a 500. Here the timestamp
    must be digits and the signature right (401 otherwise, bolt's answer), then the body must
    read as a JSON object or a form (400 otherwise); bolt checks the signature again. A body over
    ``SLACK_MAX_BODY_BYTES`` (the application's ``client_max_size``) is refused by ``read()`` with
    a 413. Requests no route
    takes (another path or method) go on to aiohttp's 404/405.
    """
    if request.match_info.http_exception is not None:
        return await handler(request)
    raw = await request.read()
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    # Undecodable bytes become U+FFFD, so such a body never matches its signature.
    signed = raw.decode("utf-8", errors="replace")
    if not (
        timestamp.isascii()
        and timestamp.isdigit()
        and len(timestamp) <= _TIMESTAMP_DIGITS
        and verifier.is_valid(signed, timestamp, request.headers.get("X-Slack-Signature"))
    ):
        return web.json_response({"error": "invalid request"}, status=401)
    try:
        # What bolt's handler will read (request.text(): the Content-Type's charset).
        text = await request.text()
        bolt_request = AsyncBoltRequest(
            body=text, query=request.query_string, headers=dict(request.headers)
        )
        readable = _envelope(bolt_request.body)
    except (
        ValueError,  # UnicodeDecodeError too
        LookupError,  # an unknown charset
        TypeError,
        AttributeError,
        RecursionError,
    ) as exc:
        readable, reason = False, type(exc).__name__
    else:
        reason = type(bolt_request.body).__name__
    if not readable:
        log.warning("A signed Slack request had an unreadable body (%s): answered 400", reason)
        return web.json_response({"error": "invalid body"}, status=400)
    return await handler(request)


def _envelope(body: object) -> bool:
    """Whether ``body`` has the shape bolt relies on before any listener runs: an object whose
    ``event`` (if any) is an object and whose ``authorizations`` (if any) a list of objects."""
    if not isinstance(body, dict):
        return False
    event, authorizations = body.get("event", {}), body.get("authorizations", [])
    return isinstance(event, dict) and (
        isinstance(authorizations, list) and all(isinstance(a, dict) for a in authorizations)
    )
