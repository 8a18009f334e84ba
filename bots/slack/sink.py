"""``SlackSink``: the core renderer's :class:`~core.render.MessageSink` over ``chat.postMessage`` +
``chat.update``, and the mapping of Slack API errors onto the core's sink exceptions.

Why a sink of its own: the renderer decides *when* to post and edit (throttled, coalesced, split
at the length limit, paced by the per-workspace budget); the sink only knows *how* on Slack:
Markdown becomes mrkdwn, 429 becomes :class:`~core.render.SinkRateLimited` with Slack's
``Retry-After``, a deleted message or channel becomes :class:`~core.render.SinkGone`, a 5xx (or a
dropped connection on an edit) becomes :class:`~core.render.SinkTransient`. How often to retry
is the renderer's decision, not the sink's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.render import SinkGone, SinkRateLimited, SinkTransient

from .blocks import message_blocks
from .mrkdwn import to_mrkdwn

if TYPE_CHECKING:
    from core.controls import Control

__all__ = ["GONE_ERRORS", "UPDATE_MAX_LEN", "SlackSink", "retry_after", "translate_error"]

#: Characters of Markdown per posted/edited message. Slack truncates ``text`` past 40,000 and
#: recommends at most 4,000 for readability; mrkdwn escaping can only grow a text, so the limit
#: is applied to the source with room to spare.
UPDATE_MAX_LEN = 4_000

#: Errors that mean the message (or where it was) no longer exists: stop, quietly.
GONE_ERRORS = frozenset(
    {
        "channel_not_found",
        "message_not_found",
        "is_archived",
        "not_in_channel",
        "thread_not_found",
        "cant_update_message",
    }
)


def retry_after(exc: SlackApiError) -> float:
    """Seconds Slack asked to wait (``Retry-After``), 1 when it did not say."""
    headers = getattr(exc.response, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                break
    return 1.0


def translate_error(exc: SlackApiError) -> Exception:
    """The core sink exception for a Slack API error (or the error itself)."""
    if exc.response.status_code == 429 or exc.response.get("error") == "ratelimited":
        # chat.update is rate limited per workspace: every stream there backs off.
        return SinkRateLimited(retry_after(exc), shared=True)
    if exc.response.get("error") in GONE_ERRORS:
        return SinkGone(str(exc.response.get("error")))
    return exc


class SlackSink:
    """One channel or thread of a Slack workspace, written with ``chat.postMessage`` and
    ``chat.update``.

    ``adopt_ts`` is an existing bot message to continue in: the first :meth:`post` edits it
    instead of posting (a native stream that expired goes on by edits in the same message).
    ``after_first_post`` runs once the first message is posted, in the background
    (:attr:`after_first_post_task`): the thread's "is thinking…" status is cleared when the first
    text is in.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        *,
        thread_ts: str | None = None,
        adopt_ts: str | None = None,
        max_len: int = UPDATE_MAX_LEN,
        after_first_post: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self._after_first_post = after_first_post
        self.after_first_post_task: asyncio.Future[None] | None = None
        self.channel = channel
        self.thread_ts = thread_ts
        self._adopt = adopt_ts
        self.max_len = max_len

    def __repr__(self) -> str:
        return f"SlackSink(channel={self.channel!r}, thread_ts={self.thread_ts!r})"

    async def post(self, text: str, *, controls: Sequence[Control] | None = None) -> Any:
        """Post ``text``; with ``controls`` (a renderer that draws buttons: even ``()``), the
        text goes in section blocks with an ``actions`` block of the buttons under it, in the
        same request (:mod:`~bots.slack.blocks`)."""
        if self._adopt is not None:
            ts, self._adopt = self._adopt, None
            try:
                await self.edit(ts, text, controls=controls)
            except BaseException:
                self._adopt = ts  # not shown yet: the renderer's retry edits it again
                raise
            return ts
        mrkdwn = to_mrkdwn(text)
        blocks = None if controls is None else message_blocks(mrkdwn, controls)
        response = await self._call(
            lambda: self.client.chat_postMessage(
                channel=self.channel,
                thread_ts=self.thread_ts,
                text=mrkdwn,
                blocks=blocks,
                unfurl_links=False,
                unfurl_media=False,
            ),
            idempotent=False,
        )
        after, self._after_first_post = self._after_first_post, None
        if after is not None:
            # In the background: the text's next update never waits for it (a status clear may
            # wait for its budget's slot).
            self.after_first_post_task = asyncio.ensure_future(after())
        return response["ts"]

    async def edit(self, ref: Any, text: str, *, controls: Sequence[Control] | None = None) -> None:
        """Edit message ``ref`` to ``text`` (and, with ``controls``, exactly these buttons:
        ``()`` removes them), in one ``chat.update``."""
        mrkdwn = to_mrkdwn(text)
        blocks = None if controls is None else message_blocks(mrkdwn, controls)
        await self._call(
            lambda: self.client.chat_update(
                channel=self.channel, ts=ref, text=mrkdwn, blocks=blocks
            ),
            idempotent=True,
        )

    async def delete(self, ref: Any) -> None:
        """Delete one of the reply's messages (a regeneration needed fewer: the renderer does it
        last, once the new text is complete above); one already gone is no error."""
        try:
            await self._call(
                lambda: self.client.chat_delete(channel=self.channel, ts=ref), idempotent=True
            )
        except SinkGone:
            return

    async def _call(self, make: Callable[[], Awaitable[Any]], *, idempotent: bool) -> Any:
        """One Web API call; Slack errors become the renderer's, and a transient failure (a 5xx;
        for an edit also a dropped connection slack-sdk's own retry did not get past) becomes
        :class:`SinkTransient`. A post whose connection dropped is not transient: it may have
        been posted, and a retry would post it twice."""
        try:
            return await make()
        except SlackApiError as exc:
            error = translate_error(exc)
            if error is exc and exc.response.status_code >= 500:
                error = SinkTransient(exc)
            raise error from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not idempotent:
                raise
            raise SinkTransient(exc) from None
