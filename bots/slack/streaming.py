"""Slack's native streaming (``chat.startStream`` / ``appendStream`` / ``stopStream`` through
slack-sdk's ``chat_stream``) as a renderer for :func:`core.delivery.deliver_with`.

Why: where Slack allows it (a reply in a thread; a DM reply goes into the thread of the question),
native streaming shows the answer as it is written without spending the workspace's ``chat.update``
budget, and Slack renders the Markdown itself. It is also fragile: a stream that pauses too long
expires (``message_not_in_streaming_state``), and a proxy or workspace may not offer it at all.
So :class:`NativeStreamRenderer` keeps every character it was given and, on any failure, hands
the current message over to the core :class:`~core.render.StreamRenderer` over a
:class:`~bots.slack.sink.SlackSink` that continues *in the same message* by ``chat.update``: the
user still gets the whole answer.

Appends are coalesced (at most one per ``min_interval``, always everything new). A message holds
at most :data:`NATIVE_MAX_LEN` characters; past that the stream is stopped at a boundary chosen
by ``core.split.find_cut`` (never before what was already appended, code fences closed and
reopened) and the answer continues in a new stream.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from core.clock import Clock, MonotonicClock
from core.render import EditBudget, MessageSink, RenderResult, SinkGone, StreamRenderer, with_note
from core.split import find_cut

from .sink import GONE_ERRORS

__all__ = ["NATIVE_MAX_LEN", "UNSUPPORTED_ERRORS", "NativeStreamRenderer"]

log = logging.getLogger("llmconnect.slack")

#: Characters per streamed message: Slack's ``markdown_text`` limit per call and the cumulative
#: limit of markdown content in one message.
NATIVE_MAX_LEN = 12_000

#: ``chat.startStream`` errors that mean streaming is not available to this app at all (as
#: opposed to one stream that expired): the bot stops trying.
UNSUPPORTED_ERRORS = frozenset(
    {
        "unknown_method",
        "not_allowed_token_type",
        "missing_scope",
        "method_deprecated",
        "feature_not_enabled",
        "not_allowed",
    }
)


class NativeStreamRenderer:
    """Streams one reply with Slack's streaming API; falls back to edits when that fails.

    ``fallback(ts)`` makes the sink to continue with: it must edit message ``ts`` first (the
    stream that failed; ``None`` when no stream started) and post further messages after it.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        channel: str,
        thread_ts: str,
        recipient_user_id: str | None,
        recipient_team_id: str | None,
        fallback: Callable[[str | None], MessageSink],
        min_interval: float,
        budget: EditBudget | None = None,
        clock: Clock | None = None,
        max_len: int = NATIVE_MAX_LEN,
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self._recipient = (recipient_user_id, recipient_team_id)
        self._make_fallback = fallback
        self._min_interval = min_interval
        self._budget = budget
        self._clock: Clock = clock or (budget.clock if budget else MonotonicClock())
        self._max_len = max_len
        self._buf: list[str] = []
        self._body = ""  # the current message: fence reopener + text since its start
        self._prefix_len = 0
        self._sent = 0  # characters of _body already appended to the current stream
        self._stream: AsyncChatStream | None = None
        self._last = -math.inf
        self._refs: list[Any] = []
        self._texts: list[str] = []
        self._appends = 0
        self._fallback: StreamRenderer | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._finishing = False
        self._note: str | None = None
        self._noted = False
        self._failure: Exception | None = None
        #: The Slack error (or exception name) that made this reply fall back to edits.
        self.error: str | None = None
        self._started = False

    def __repr__(self) -> str:
        return f"NativeStreamRenderer(channel={self.channel!r}, thread_ts={self.thread_ts!r})"

    @property
    def fell_back(self) -> bool:
        """True once the reply continues by ``chat.update``."""
        return self._fallback is not None

    @property
    def unsupported(self) -> bool:
        """True when Slack refused to start a stream in a way no retry will change."""
        return not self._started and self.error in UNSUPPORTED_ERRORS

    # -- the Renderer protocol -----------------------------------------------------------

    async def feed(self, delta: str) -> None:
        """Take ``delta``; never waits on the network."""
        if self._failure is not None:
            raise self._failure
        if self._fallback is not None:
            await self._fallback.feed(delta)
            return
        if not delta:
            return
        self._buf.append(delta)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        else:
            self._wake()

    async def finish(self, note: str | None = None) -> RenderResult:
        """Stop the stream(s) on the complete text, ``note`` on its own last line."""
        self._finishing = True
        self._note = note
        if self._failure is None and self._fallback is None:
            if self._task is None and (self._buf or note):
                self._task = asyncio.get_running_loop().create_task(self._run())
            self._wake()
            if self._task is not None:
                await self._task
        refs, texts = list(self._refs), list(self._texts)
        posts, edits = len(refs), self._appends
        if self._fallback is not None:
            result = await self._fallback.finish(None if self._noted else note)
            refs += result.refs
            texts += result.texts
            posts, edits = posts + result.posts, edits + result.edits
        failure = self._failure
        if failure is not None and not isinstance(failure, SinkGone):
            raise failure
        return RenderResult(tuple(refs), tuple(texts), posts, edits, failure is not None)

    async def aclose(self) -> None:
        """Shutdown: stop sending (no final text)."""
        self._finishing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._fallback is not None:
            await self._fallback.aclose()

    # -- the streaming task ----------------------------------------------------------------

    def _wake(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

    def _absorb(self) -> None:
        if self._buf:
            self._body += "".join(self._buf)
            self._buf.clear()
        if self._finishing and not self._noted:
            self._noted = True
            self._body = with_note(self._body, self._note)

    async def _run(self) -> None:
        try:
            await self._stream_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported by feed()/finish()
            self._failure = exc

    async def _stream_all(self) -> None:
        clock = self._clock
        while True:
            self._absorb()
            pending = len(self._body) > self._sent
            if not pending and not self._finishing:
                idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._idle = idle
                await idle
                continue
            due = self._last + self._min_interval
            now = clock.now()
            if not self._finishing and now < due:
                await clock.sleep(due - now)
                continue
            try:
                done = await self._send_step()
            except SlackApiError as exc:
                error = exc.response.get("error")
                if error in GONE_ERRORS:
                    self._failure = SinkGone(str(error))
                    return
                log.info("Slack stream in %s failed (%s); continuing by chat.update", self, error)
                self.error = str(error)
                await self._fall_back()
                return
            except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
                log.info("Slack stream in %s failed (%s); continuing by chat.update", self, exc)
                self.error = type(exc).__name__
                await self._fall_back()
                return
            self._last = clock.now()
            if done:
                return

    async def _send_step(self) -> bool:
        """One network step; True when the reply is complete."""
        body = self._body
        if len(body) > self._max_len:
            cut = find_cut(body, self._max_len, max(self._sent, self._prefix_len))
            await self._stop(body[self._sent : cut.end] + cut.close)
            self._texts.append(cut.part)
            self._body = cut.reopen + body[cut.end :]
            self._prefix_len = len(cut.reopen)
            self._sent = 0
            return False
        if self._finishing:
            if body or self._stream is not None:
                await self._stop(body[self._sent :])
                self._texts.append(body)
            return True
        stream = await self._open()
        await stream.append(markdown_text=body[self._sent :])
        self._started = True
        self._sent = len(body)
        self._appends += 1
        return False

    async def _open(self) -> AsyncChatStream:
        if self._stream is None:
            user, team = self._recipient
            self._stream = await self.client.chat_stream(
                channel=self.channel,
                thread_ts=self.thread_ts,
                recipient_user_id=user,
                recipient_team_id=team,
                buffer_size=1,  # coalescing is done here, by time
            )
        return self._stream

    async def _stop(self, text: str) -> None:
        stream = await self._open()
        await stream.stop(markdown_text=text or None)
        self._started = True
        self._refs.append(stream.ts)
        self._stream = None
        self._sent = 0

    async def _fall_back(self) -> None:
        self._absorb()
        ts = self._stream.ts if self._stream is not None else None
        self._stream = None
        renderer = StreamRenderer(
            self._make_fallback(ts),
            min_interval=self._min_interval,
            budget=self._budget,
            clock=self._clock,
        )
        self._fallback = renderer
        await renderer.feed(self._body)
