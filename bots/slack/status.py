"""Slack's thread status (``assistant.threads.setStatus``) for a reply streamed natively.

Why: while a reasoning model only thinks, every front end shows ``💭 thinking… (12 s)``
(:func:`core.delivery.shown_events`). A native stream (:mod:`bots.slack.streaming`) can only
append, so a status line in the message would stay in the final answer. Slack has a place of its
own for it: the status ``assistant.threads.setStatus`` sets is shown under the thread's last
message while the app works (scope ``chat:write``; Slack removes it by itself two minutes after
the last message), and setting it to ``""`` clears it.

A status update is a courtesy: it takes a slot of the workspace's status budget only when one is
free at once (:meth:`~core.budget.EditBudget.try_take`; never queued, never ahead of text) and is
skipped otherwise (the next second brings a fresher one). A status shown owes its clear, which the
budget keeps a slot for (``reserve_finals``). Nothing here can fail a reply: a rate limit or a
network failure skips that one call; any other refusal (a missing scope, ``unknown_method`` from a
proxy...) is logged once at INFO and the bot stops setting statuses (:attr:`ThreadStatus.off`).
"""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from core.budget import EditBudget

from .sink import GONE_ERRORS, retry_after

__all__ = ["StatusLine", "ThreadStatus"]

log = logging.getLogger("llmconnect.slack")


class ThreadStatus:
    """One bot's use of ``assistant.threads.setStatus``: the client it calls with and whether
    Slack refused it for good (:attr:`off`, with the :attr:`error` it gave).

    ``client`` should not wait out 429s itself: a status that waited would be stale.
    """

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        #: True once Slack refused the method in a way no retry will change: no more calls.
        self.off = False
        self.error: str | None = None

    def __repr__(self) -> str:
        return f"ThreadStatus(off={self.off!r}, error={self.error!r})"

    def line(self, budget: EditBudget, channel: str, thread_ts: str) -> StatusLine:
        """The status of one reply in ``channel``'s thread ``thread_ts``, paid from ``budget``."""
        return StatusLine(self, budget, channel, thread_ts)

    def refused(self, error: str) -> None:
        """Slack refused the method: say so once and stop calling it."""
        if not self.off:
            self.off = True
            self.error = error
            log.info(
                "Slack refused assistant.threads.setStatus (%s): no thinking status in native "
                "streams from now on",
                error,
            )


class StatusLine:
    """The thread status of one reply: :meth:`show` a line (a courtesy, maybe skipped), then
    :meth:`clear` it (owed once a line was shown); :meth:`drop` gives the clear's slot back
    without a call (shutdown)."""

    def __init__(
        self, status: ThreadStatus, budget: EditBudget, channel: str, thread_ts: str
    ) -> None:
        self._status = status
        self._budget = budget
        self.channel = channel
        self.thread_ts = thread_ts
        #: A line is up (as far as we know): a clear is owed to the budget.
        self.shown = False
        #: Lines Slack accepted, clears included (metrics, tests).
        self.calls = 0

    def __repr__(self) -> str:
        return f"StatusLine(channel={self.channel!r}, thread_ts={self.thread_ts!r})"

    async def show(self, text: str) -> bool:
        """Set the status to ``text`` when the budget has a slot free right now; True when Slack
        shows it."""
        if self._status.off or not self._budget.try_take():
            return False
        if not await self._send(text):
            return False
        if not self.shown:
            self.shown = True
            self._budget.owe()  # its clear is to come: the budget keeps a slot for it
        return True

    async def clear(self) -> None:
        """Clear the status when a line is up (its slot was kept; this waits for it at most as
        long as a final edit)."""
        if not self.shown:
            return
        self.shown = False
        try:
            await self._budget.request(final=True).wait()
        finally:
            self._budget.settle()
        if not self._status.off:
            await self._send("")

    def drop(self) -> None:
        """Give the owed clear back without calling Slack (the reply was cut short: Slack clears
        a status itself after a while)."""
        if self.shown:
            self.shown = False
            self._budget.settle()

    async def _send(self, text: str) -> bool:
        try:
            await self._status.client.assistant_threads_setStatus(
                channel_id=self.channel, thread_ts=self.thread_ts, status=text
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            if exc.response.status_code == 429 or error == "ratelimited":
                self._budget.defer(retry_after(exc))  # the workspace's statuses back off
            elif exc.response.status_code >= 500 or error in GONE_ERRORS:
                log.debug("assistant.threads.setStatus in %s failed: %s", self, error)
            else:
                self._status.refused(error)
            return False
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.debug("assistant.threads.setStatus in %s failed: %s", self, exc)
            return False
        self.calls += 1
        return True
