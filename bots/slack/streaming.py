"""Slack's native streaming (``chat.startStream`` / ``appendStream`` / ``stopStream`` through
slack-sdk's ``chat_stream``) as a renderer for :func:`core.delivery.deliver_with`.

Why: where Slack allows it (a reply in a thread; a DM reply goes into the thread of the question),
native streaming shows the answer as it is written without spending the workspace's ``chat.update``
budget, and Slack renders the Markdown itself. It is also fragile: a stream that pauses too long
expires (``message_not_in_streaming_state``), and a proxy or workspace may not offer it at all.
So :class:`NativeStreamRenderer` (a core :class:`~core.render.BufferedRenderer`: only its step is
its own) keeps every character it was given and, on any failure, hands the current message over to
the core :class:`~core.render.StreamRenderer` over a
:class:`~bots.slack.sink.SlackSink` that continues *in the same message* by ``chat.update``: the
user still gets the whole answer.

What is streamed is :mod:`~bots.slack.safe_markdown`'s: Slack renders ``markdown_text`` itself,
so the answer's mention shapes are broken and links other than to the web and mail written as
text before they go out (a possible link at the end waits until it is complete).

Appends are coalesced (at most one per ``min_interval``, always everything new). A message holds
at most :data:`NATIVE_MAX_LEN` characters; past that the stream is stopped at a boundary chosen
by ``core.split.find_cut`` (never before what was already appended, code fences closed and
reopened) and the answer continues in a new stream.

While a reasoning model only thinks, a stream has nothing to append, and a status line appended
would stay in the answer: :meth:`NativeStreamRenderer.show_status` shows it as the thread's status
instead (:mod:`~bots.slack.status`), at most once per ``min_interval``, and clears it after the
first text is appended or when the reply ends.

Tool calls (:meth:`NativeStreamRenderer.show_progress`) are Slack's task cards: each call is a
``task_update`` chunk (``in_progress``, then ``complete`` or ``error``) riding on the stream's
appends (the same pacing and budget; a change waiting alone takes an append of its own), shown
where the call came in the answer (``task_display_mode`` timeline, Slack's default).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from core.budget import EditBudget, SendBudgets
from core.clock import Clock
from core.engine import parse_progress_line
from core.render import BufferedRenderer, MessageSink, RenderResult, SinkGone, StreamRenderer
from core.split import find_cut

from .blocks import actions_block
from .safe_markdown import SafeMarkdown, safe_markdown

if TYPE_CHECKING:
    from core.controls import Control
from .sink import GONE_ERRORS, SlackSink
from .status import StatusLine

__all__ = ["NATIVE_MAX_LEN", "TASK_TITLE_CHARS", "UNSUPPORTED_ERRORS", "NativeStreamRenderer"]

log = logging.getLogger("llmconnect.slack")

#: Characters per streamed message: Slack's ``markdown_text`` limit per call and the cumulative
#: limit of markdown content in one message.
NATIVE_MAX_LEN = 12_000
#: A task card's title (a call with its arguments, ``files.read(path='a.txt')``) is cut to this.
TASK_TITLE_CHARS = 200
#: A progress line's state as a ``task_update`` chunk's ``status``.
_TASK_STATUS = {"running": "in_progress", "ok": "complete", "error": "error"}

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


class NativeStreamRenderer(BufferedRenderer):
    """Streams one reply with Slack's streaming API; falls back to edits when that fails.

    ``fallback(ts)`` makes the sink to continue with: it must edit message ``ts`` first (the
    stream that failed; ``None`` when no stream started) and post further messages after it.

    Every streaming call takes a slot of ``budget`` (the workspace's streams budget): starting a
    stream is its "post", appends its interim edits and the stop its final, which the budget
    keeps a slot for. ``fallback_budget`` is what the edits that take over take, and
    ``fallback_window`` their ``(window_limit, window_seconds)`` (see
    :class:`~core.render.StreamRenderer`: the final edit goes as soon as that window allows).

    ``status``: where :meth:`show_status` shows the thinking status (the thread's status); without
    it the status is not shown.
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
        budget: EditBudget | SendBudgets | None = None,
        fallback_budget: EditBudget | SendBudgets | None = None,
        fallback_window: tuple[int, float] = (0, 0.0),
        clock: Clock | None = None,
        max_len: int = NATIVE_MAX_LEN,
        status: StatusLine | None = None,
        controls: Sequence[Control] | None = None,
    ) -> None:
        super().__init__(min_interval=min_interval, budget=budget, clock=clock)
        self._fallback_budget = budget if fallback_budget is None else fallback_budget
        self._fallback_window = fallback_window
        self._owes_stop = False  # the open stream's stop is owed to the budget's reserve
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self._recipient = (recipient_user_id, recipient_team_id)
        self._make_fallback = fallback
        self._max_len = max_len
        #: Slack renders ``markdown_text`` itself: what we stream must not be able to ping.
        self._safe = SafeMarkdown()
        self._sent = 0  # characters of _body already appended to the current stream
        self._stream: AsyncChatStream | None = None
        self._last = -math.inf
        self._refs: list[Any] = []
        self._texts: list[str] = []
        self._appends = 0
        self._fallback: StreamRenderer | None = None
        #: The Slack error (or exception name) that made this reply fall back to edits.
        self.error: str | None = None
        self._started = False
        self._status = status
        self._status_line: str | None = None  # the latest line not yet sent
        self._status_at = -math.inf  # when the last line was sent
        self._status_over = False  # text came (or the reply ended): no more status
        #: The buttons while streaming (``None``: no buttons). A stream cannot carry them
        #: (``chat.startStream``/``appendStream`` take no blocks): only a fallback to edits
        #: shows them; the final ones go on ``chat.stopStream``'s blocks.
        self._controls = None if controls is None else tuple(controls)
        self._final_controls: tuple[Control, ...] = ()
        #: The tool calls' task cards: the latest chunk per call not yet sent (in call order),
        #: and the (title, status) each call's card shows.
        self._tasks_due: dict[int, dict[str, str]] = {}
        self._tasks_shown: dict[int, tuple[str, str]] = {}
        self._progress: str | None = None  # the latest lines, for a fallback to edits
        #: Approve/Deny of the tool calls waiting for approval: a message of their own in the
        #: thread (a stream takes no blocks before its stop). What it should show, what it
        #: shows, its ts, and the task that keeps it so.
        self._approvals_wanted: tuple[str, tuple[Control, ...]] = ("", ())
        self._approvals_shown: tuple[str, tuple[Control, ...]] = ("", ())
        self._approvals_ts: str | None = None
        self._approvals_task: asyncio.Task[None] | None = None
        self._approvals_moved = asyncio.Event()
        self._approvals_idle = asyncio.Event()  # it shows what it should

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

    # -- the Renderer protocol, with the fallback's part -----------------------------------

    def show_status(self, line: str) -> None:
        """Show ``line`` (``💭 thinking… (12 s)``) as the thread's status while no text has come:
        sent by the task at most once per ``min_interval`` (the latest line; one the status
        budget has no slot for right now is skipped), cleared after the first text is appended
        or when the reply ends. Never in the message. Ignored once text has come."""
        if (
            self._status is None
            or self._status_over
            or self._buf
            or self._body
            or self._finishing
            or self._failure is not None
        ):
            return
        self._status_line = line
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        else:
            self._wake()

    def show_progress(self, lines: str) -> None:
        """Show the tool calls' progress (:attr:`core.engine.Reply.tools_text`: one line per
        call, in call order) as task cards in the stream: a call whose card changed gets a
        ``task_update`` chunk on the next append (or the stop), the latest state only. After a
        fallback to edits, the lines go under the text as :class:`~core.render.StreamRenderer`
        shows them."""
        if self._failure is not None:
            return
        self._progress = lines
        if self._fallback is not None:
            self._fallback.show_progress(lines)
            return
        if self._finishing:
            return
        for index, line in enumerate(lines.splitlines()):
            call, state = parse_progress_line(line)
            title = call if len(call) <= TASK_TITLE_CHARS else call[: TASK_TITLE_CHARS - 1] + "…"
            card = (title, _TASK_STATUS[state])
            if self._tasks_shown.get(index) == card:
                self._tasks_due.pop(index, None)
                continue
            self._tasks_due[index] = {
                "type": "task_update",
                "id": f"tool-{index + 1}",
                "title": title,
                "status": card[1],
            }
        if not self._tasks_due:
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        else:
            self._wake()

    def _take_tasks(self) -> list[dict[str, str]] | None:
        """The task chunks due, as sent now (``None``: none)."""
        if not self._tasks_due:
            return None
        chunks = [self._tasks_due[i] for i in sorted(self._tasks_due)]
        for index, chunk in self._tasks_due.items():
            self._tasks_shown[index] = (chunk["title"], chunk["status"])
        self._tasks_due = {}
        return chunks

    def show_approvals(self, lines: str, controls: Sequence[Control]) -> None:
        """Ask for the approval of the tool calls ``lines`` shows (``— waiting for
        approval``) with their Approve/Deny ``controls``: a stream carries no buttons before
        ``chat.stopStream``, so they go in a small message of their own in the thread, posted
        when a call starts waiting and updated when that changes (no buttons once none waits:
        ``— answered``). Its requests are its own, outside the stream's budget. After a
        fallback to edits the buttons ride on the edited message instead."""
        if self._fallback is not None and not self._approvals_ts:
            self._fallback.show_controls(tuple(self._controls or ()) + tuple(controls))
            return
        if not lines and self._approvals_ts is None and self._approvals_task is None:
            return
        self._approvals_wanted = (lines, tuple(controls))
        self._approvals_idle.clear()
        self._approvals_moved.set()
        if self._approvals_task is None:
            self._approvals_task = asyncio.ensure_future(self._keep_approvals())

    async def _keep_approvals(self) -> None:
        sink = SlackSink(self.client, self.channel, thread_ts=self.thread_ts)
        asked = ""  # the lines last asked about, shown ``— answered`` once none waits
        while True:
            await self._approvals_moved.wait()
            self._approvals_moved.clear()
            wanted = self._approvals_wanted
            if wanted == self._approvals_shown:
                self._approvals_idle.set()
                continue
            lines, controls = wanted
            if lines:
                asked = lines
            text = lines or asked.replace("— waiting for approval", "— answered")
            try:
                if self._approvals_ts is None:
                    self._approvals_ts = await sink.post(text, controls=controls)
                else:
                    await sink.edit(self._approvals_ts, text, controls=controls)
                self._approvals_shown = wanted
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the answer goes on; the call times out if unseen
                log.warning("Could not ask for a tool call's approval in %s: %s", self.channel, exc)
                self._approvals_shown = wanted
            if self._approvals_wanted == self._approvals_shown:
                self._approvals_idle.set()

    async def _end_approvals(self) -> None:
        """At the end: the approval message loses its buttons (a stop while a call waited)."""
        task = self._approvals_task
        if task is None:
            return
        if self._approvals_wanted[1] or self._approvals_shown[1]:
            self._approvals_wanted = ("", ())
            self._approvals_idle.clear()
            self._approvals_moved.set()
            await self._approvals_idle.wait()  # one update, bounded by the client's timeout
        task.cancel()
        await asyncio.wait([task])

    async def feed(self, delta: str) -> None:
        """Take ``delta``; never waits on the network."""
        if self._fallback is not None:
            await self._fallback.feed(delta)
        else:
            await super().feed(delta)

    async def finish(
        self, note: str | None = None, *, controls: Sequence[Control] = ()
    ) -> RenderResult:
        """Stop the stream(s) on the complete text, ``note`` on its own last line, ``controls``
        (a renderer made with ``controls``) as an ``actions`` block under the last message (in
        ``chat.stopStream``, or in the fallback's final edit); clear the thread's status if it
        is still up."""
        if self._controls is not None:
            self._final_controls = tuple(controls)
        await self._end_approvals()
        try:
            streamed = await super().finish(note)
        except Exception:  # not on cancellation: aclose() gives the status up without a call
            await self._end_status()
            raise
        await self._end_status()
        if self._fallback is None:
            return streamed
        edited = await self._fallback.finish(
            None if self._noted else note, controls=self._final_controls
        )
        return RenderResult(
            streamed.refs + edited.refs,
            streamed.texts + edited.texts,
            streamed.posts + edited.posts,
            streamed.edits + edited.edits,
            streamed.gone or edited.gone,
        )

    async def aclose(self) -> None:
        """Shutdown: stop sending (no final text)."""
        if self._approvals_task is not None:
            self._approvals_task.cancel()
        await super().aclose()
        self._status_over = True
        if self._status is not None:
            self._status.drop()
        if self._fallback is not None:
            await self._fallback.aclose()

    # -- the step --------------------------------------------------------------------------

    async def _step(self) -> bool:
        if len(self._body) <= self._sent and not self._finishing and not self._tasks_due:
            if not await self._status_step():
                await self._wait_for_text()
            return False
        if not self._finishing and await self._wait_until(self._last + self._min_interval):
            return False  # appends are coalesced: at most one per min_interval
        if self._finishing and not self._body and self._stream is None and not self._tasks_due:
            return True  # nothing to send
        opening = self._stream is None
        stopping = self._finishing or len(self._body) > self._max_len
        if await self._take_slot(
            final=stopping, first=opening and not self._refs, post=opening and not stopping
        ):
            self._absorb()  # send what arrived while we queued
        if self._owes_stop and (self._finishing or len(self._body) > self._max_len):
            self._release()  # the stop has its slot
        try:
            done = await self._send_step()
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error in GONE_ERRORS:
                raise SinkGone(str(error)) from None
            log.info("Slack stream in %s failed (%s); continuing by chat.update", self, error)
            self.error = str(error)
            await self._fall_back()
            await self._end_status()  # the text goes on by edits: no status over it
            return True
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("Slack stream in %s failed (%s); continuing by chat.update", self, exc)
            self.error = type(exc).__name__
            await self._fall_back()
            await self._end_status()  # the text goes on by edits: no status over it
            return True
        self._last = self._clock.now()
        if self._stream is not None and not self._owes_stop:
            self._owes_stop = True  # a stream is open: its stop is to come
            for budget in self._budgets.edits:
                budget.owe()
        await self._end_status()  # the first text is in: the status has done its part
        return done

    async def _status_step(self) -> bool:
        """While only thinking: send the latest status line once it is due; True when this
        step sent one or waited (for its time, or for text, whichever comes first)."""
        line = self._status_line
        if self._status is None or line is None or self._status_over:
            return False
        due = self._status_at + self._min_interval
        if self._clock.now() < due:
            await self._wait_for_text_until(due)
            return True
        self._status_line = None
        if await self._status.show(line):
            self._status_at = self._clock.now()
        return True

    async def _wait_for_text_until(self, due: float) -> None:
        """Sleep until ``due`` on the clock, or until ``feed``, ``finish`` or a newer status
        line wakes the task."""
        idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle = idle
        sleeper = asyncio.ensure_future(self._clock.sleep(due - self._clock.now()))
        try:
            await asyncio.wait((idle, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._idle = None
            sleeper.cancel()

    async def _end_status(self) -> None:
        """No more status for this reply; clear it if one is up."""
        if self._status_over:
            return
        self._status_over = True
        self._status_line = None
        if self._status is not None:
            await self._status.clear()

    def _release(self) -> None:
        if self._owes_stop:
            self._owes_stop = False
            for budget in self._budgets.edits:
                budget.settle()

    def _absorb(self) -> None:
        """The core's, on the answer made safe for Slack (:mod:`~bots.slack.safe_markdown`): a
        possible link at the end of the text so far waits in ``_safe`` until it is complete."""
        if self._buf:
            safe = self._safe.feed("".join(self._buf))
            self._buf[:] = [safe] if safe else []
        if self._finishing and not self._noted:
            rest = self._safe.flush()
            if rest:
                self._buf.append(rest)
            if self._note:
                self._note = safe_markdown(self._note)
        super()._absorb()

    def _result(self, *, gone: bool) -> RenderResult:
        return RenderResult(
            tuple(self._refs), tuple(self._texts), len(self._refs), self._appends, gone
        )

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
            if body or self._stream is not None or self._tasks_due:
                final = self._final_controls
                await self._stop(body[self._sent :], [actions_block(final)] if final else None)
                self._texts.append(body)
            return True
        stream = await self._open()
        # Text and task cards go in one call (a change of cards alone takes one of its own).
        await stream.append(markdown_text=body[self._sent :] or None, chunks=self._take_tasks())
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

    async def _stop(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        stream = await self._open()
        await stream.stop(markdown_text=text or None, blocks=blocks, chunks=self._take_tasks())
        self._started = True
        self._refs.append(stream.ts)
        self._stream = None
        self._sent = 0

    async def _fall_back(self) -> None:
        self._release()  # the stream will not be stopped: edits take over
        self._absorb()
        self._body += self._safe.flush()  # edits escape every character themselves
        ts = self._stream.ts if self._stream is not None else None
        self._stream = None
        renderer = StreamRenderer(
            self._make_fallback(ts),
            min_interval=self._min_interval,
            budget=self._fallback_budget,
            clock=self._clock,
            window_limit=self._fallback_window[0],
            window_seconds=self._fallback_window[1],
            controls=self._controls,
        )
        self._fallback = renderer
        if self._progress:
            renderer.show_progress(self._progress)  # the cards' lines, under the text again
        await renderer.feed(self._body)
