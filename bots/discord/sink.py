"""Discord :class:`~core.render.MessageSink`\\ s: where a streamed reply is posted and edited.

:class:`ChannelSink` answers a mention: its first message replies to the prompt (a message
reference) and further messages continue in the channel. :class:`InteractionSink` answers a slash
command: its first message is the deferred interaction response (``@original``), further ones are
follow-ups. Both send ``allowed_mentions`` that ping nobody on every create and every edit, and
carry the reply's buttons (:mod:`bots.discord.buttons`) in the same create or edit as the text
when the renderer passes ``controls``, and only classify Discord's answers in the renderer's terms: 404 → :class:`~core.render.SinkGone`
(the message was deleted: stop quietly), 429 → :class:`~core.render.SinkRateLimited` (raised by
:class:`~.rest.DiscordRest`), a 5xx or an unreachable Discord on a request safe to repeat →
:class:`~core.render.SinkTransient`; anything else is fatal. The renderer decides on retries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from core.controls import Control
from core.render import SinkGone, SinkTransient

from .buttons import components_of
from .rest import (
    NO_MENTIONS,
    DiscordNotFound,
    DiscordRest,
    DiscordServerError,
    DiscordUnreachable,
)

__all__ = ["MAX_LEN", "ChannelSink", "InteractionSink"]

#: Discord's limit on a message's content.
MAX_LEN = 2000
_EPHEMERAL = 1 << 6


class _Sink:
    """What both sinks share: gone-ness and the translation of REST failures."""

    max_len = MAX_LEN

    def __init__(self, rest: DiscordRest) -> None:
        self.rest = rest
        self.gone = False
        #: Called with the platform id of each message once it is posted.
        self.on_post: Callable[[str], None] | None = None

    def mark_gone(self) -> None:
        """The reply message was deleted (seen on the gateway): no further request is made."""
        self.gone = True

    def _check(self) -> None:
        if self.gone:
            raise SinkGone("the reply message was deleted")

    async def _call(self, make: Callable[[], Any], *, idempotent: bool) -> Any:
        """One REST call, its failure classified. A create whose connection dropped is not
        transient: it may have been created, and a retry would post it twice."""
        self._check()
        try:
            return await make()
        except DiscordNotFound as exc:
            self.gone = True
            raise SinkGone(exc.message or "not found") from None
        except DiscordServerError as exc:  # Discord failed: nothing was carried out
            raise SinkTransient(exc) from None
        except DiscordUnreachable as exc:
            if idempotent:
                raise SinkTransient(exc) from None
            raise

    def _posted(self, message_id: str) -> None:
        if self.on_post is not None:
            self.on_post(message_id)


def _payload(text: str, controls: Sequence[Control] | None) -> dict[str, Any]:
    """A create or edit body: the text, nobody pinged, and the buttons when given (``()``
    removes them; ``None`` leaves the message's as they are)."""
    payload: dict[str, Any] = {"content": text, "allowed_mentions": NO_MENTIONS}
    if controls is not None:
        payload["components"] = components_of(controls)
    return payload


class ChannelSink(_Sink):
    """A reply in a channel, thread or DM; the first message references ``reply_to``."""

    def __init__(
        self,
        rest: DiscordRest,
        channel_id: str,
        *,
        reply_to: str | None = None,
        guild_id: str | None = None,
    ) -> None:
        super().__init__(rest)
        self.channel_id = channel_id
        self.reply_to = reply_to
        self.guild_id = guild_id
        self.posted: list[str] = []
        #: Messages this sink deleted itself (a regeneration's surplus parts): their
        #: MESSAGE_DELETE on the gateway is not someone deleting the reply.
        self.deleted: set[str] = set()

    async def post(self, text: str, *, controls: Sequence[Control] | None = None) -> str:
        payload = _payload(text, controls)
        if not self.posted and self.reply_to is not None:
            reference: dict[str, Any] = {
                "message_id": self.reply_to,
                "channel_id": self.channel_id,
                "fail_if_not_exists": False,
            }
            if self.guild_id is not None:
                reference["guild_id"] = self.guild_id
            payload["message_reference"] = reference
        data = await self._call(
            lambda: self.rest.create_message(self.channel_id, payload), idempotent=False
        )
        message_id = str(data["id"])
        self.posted.append(message_id)
        self._posted(message_id)
        return message_id

    async def edit(self, ref: Any, text: str, *, controls: Sequence[Control] | None = None) -> None:
        payload = _payload(text, controls)
        was_gone = self.gone
        try:
            await self._call(
                lambda: self.rest.edit_message(self.channel_id, str(ref), payload), idempotent=True
            )
        except SinkGone:
            if not was_gone and str(ref) not in self.posted:
                # A message of a reply being regenerated, deleted meanwhile: the renderer may
                # skip it and go on in the others (core.render), so the sink is not gone.
                self.gone = False
            raise

    async def delete(self, ref: Any) -> None:
        """Delete one of the reply's messages (a regeneration needed fewer: the renderer does
        it last, once the new text is complete); one already gone is no error, and does not
        make the sink gone; its MESSAGE_DELETE does not either (:attr:`deleted`)."""
        self.deleted.add(str(ref))
        try:
            await self.rest.delete_message(self.channel_id, str(ref))
        except DiscordNotFound:
            return
        except DiscordServerError as exc:
            raise SinkTransient(exc) from None
        except DiscordUnreachable as exc:
            raise SinkTransient(exc) from None  # deleting twice is harmless


class InteractionSink(_Sink):
    """A slash command's answer: the deferred response first, then follow-ups."""

    def __init__(
        self, rest: DiscordRest, application_id: str, token: str, *, ephemeral: bool = False
    ) -> None:
        super().__init__(rest)
        self.application_id = application_id
        self.token = token
        self.ephemeral = ephemeral
        self._original: str | None = None  # the response's message id, once it is shown

    def __repr__(self) -> str:  # the interaction token is a credential for 15 minutes
        return f"InteractionSink(application_id={self.application_id!r})"

    async def post(self, text: str, *, controls: Sequence[Control] | None = None) -> str:
        payload = _payload(text, controls)
        if self._original is None:
            data = await self._call(
                lambda: self.rest.edit_webhook_message(
                    self.application_id, self.token, "@original", payload
                ),
                idempotent=True,
            )
            # Its real id (a ref that outlives the 15-minute token: a regeneration edits it
            # through the channel); "@original" only if Discord did not say.
            found = data.get("id") if isinstance(data, dict) else None
            self._original = str(found) if found else "@original"
            self._posted(self._original)
            return self._original
        if self.ephemeral:
            payload["flags"] = _EPHEMERAL
        data = await self._call(
            lambda: self.rest.create_followup(self.application_id, self.token, payload),
            idempotent=False,
        )
        message_id = str(data["id"])
        self._posted(message_id)
        return message_id

    async def edit(self, ref: Any, text: str, *, controls: Sequence[Control] | None = None) -> None:
        payload = _payload(text, controls)
        target = "@original" if str(ref) == self._original else str(ref)
        await self._call(
            lambda: self.rest.edit_webhook_message(
                self.application_id, self.token, target, payload
            ),
            idempotent=True,
        )
