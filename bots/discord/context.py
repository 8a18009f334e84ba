"""What a Discord message brings besides its own text: its files, a forwarded message's
snapshot, and the reply chain it answers.

- Files: ``attachments[]`` (``url``, ``filename``, ``content_type``, ``size``), downloaded only
  from ``DISCORD_CDN_URL`` (:class:`core.attachments.Downloader`: a URL anywhere else is refused
  with a line, never fetched).
- A forward: the snapshot's text and files count as the message's own (after its own text).
- A reply: the message it replies to (a user's or the bot's), and the one that one replies to,
  up to ``DISCORD_REPLY_CHAIN_DEPTH`` messages, become context: their text as one inlined block,
  oldest first (a text "attachment" the model reads after the prompt, so it does not count
  against ``MAX_INPUT_CHARS``), their files after the message's own. Each referenced message is
  taken from the event (Discord's ``referenced_message``), discord.py's message cache (not for the
  bot's own messages, streamed by edits), or the REST API (``GET /channels/{id}/messages/{id}``);
  one that cannot be read ends the chain, quietly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import discord

from core.attachments import Attachment, AttachmentLimits, Downloader, RemoteFile
from core.fences import fence_for

__all__ = ["CHAIN_NAME", "Context", "chain_block", "gather_context"]

log = logging.getLogger("llmconnect.discord")

#: The name of the reply chain's block among the prompt's attachments.
CHAIN_NAME = "reply chain"


@dataclass(frozen=True, slots=True)
class _Linked:
    """A message of the reply chain: who wrote it, its text, its files."""

    author: str
    text: str
    files: tuple[RemoteFile, ...]


@dataclass(frozen=True, slots=True)
class Context:
    """A message's prompt text and attachments (its own, its forward's, its reply chain's)."""

    text: str
    attachments: list[Attachment]


def _files(attachments: Sequence[discord.Attachment]) -> list[RemoteFile]:
    return [RemoteFile(a.url, a.filename, a.content_type or "", a.size) for a in attachments]


def _forwarded(message: discord.Message) -> tuple[list[str], list[RemoteFile]]:
    """A forward's snapshots: their texts and files (nothing for another message)."""
    texts: list[str] = []
    files: list[RemoteFile] = []
    for snapshot in getattr(message, "message_snapshots", None) or ():
        if snapshot.content.strip():
            texts.append(snapshot.content.strip())
        files += _files(snapshot.attachments)
    return texts, files


def _replies_to(message: discord.Message) -> int | None:
    """The id of the message ``message`` replies to (not a forward's)."""
    reference = message.reference
    if reference is None or reference.message_id is None:
        return None
    if reference.type is not discord.MessageReferenceType.reply:
        return None
    return reference.message_id


async def _referenced(
    client: discord.Client, message: discord.Message, target: int
) -> discord.Message | None:
    resolved = message.reference.resolved if message.reference is not None else None
    if isinstance(resolved, discord.Message) and resolved.id == target:
        return resolved
    cached = discord.utils.get(client.cached_messages, id=target)
    me = client.user
    if cached is not None and (me is None or cached.author.id != me.id):
        # The bot's own messages are streamed by edits: their final text is the API's.
        return cached
    channel = message.channel
    if message.reference is not None and message.reference.channel_id != channel.id:
        found = client.get_channel(message.reference.channel_id)
        if not isinstance(found, discord.abc.Messageable):
            return None
        channel = found
    try:
        return await channel.fetch_message(target)
    except Exception as exc:  # deleted, no access, the API away: the chain ends here
        log.info("reply chain: message %s could not be read (%s)", target, type(exc).__name__)
        return None


async def _chain(
    client: discord.Client,
    message: discord.Message,
    depth: int,
    text_of: Callable[[discord.Message], str],
) -> list[_Linked]:
    """The messages ``message`` replies to, up the chain, newest first (at most ``depth``)."""
    chain: list[_Linked] = []
    seen = {message.id}
    current = message
    while len(chain) < depth:
        target = _replies_to(current)
        if target is None or target in seen:
            break
        found = await _referenced(client, current, target)
        if found is None:
            break
        seen.add(found.id)
        texts, forwarded = _forwarded(found)
        me = client.user
        author = (
            "you (the assistant)"
            if me is not None and found.author.id == me.id
            else f"@{found.author.display_name}"
        )
        text = "\n\n".join(t for t in (text_of(found), *texts) if t)
        chain.append(_Linked(author, text, (*_files(found.attachments), *forwarded)))
        current = found
    return chain


def chain_block(chain: Sequence[tuple[str, str]], max_chars: int) -> Attachment | None:
    """The reply chain's messages (``(author, text)``, oldest first) as one inlined text block,
    cut at ``max_chars`` (``MAX_TEXT_ATTACHMENT_CHARS``) from its oldest end."""
    if not chain:
        return None
    body = "\n\n".join(f"{author}:\n{text or '(no text)'}" for author, text in chain)
    if len(body) > max_chars:
        body = "…" + body[len(body) - max_chars + 1 :]
    fence = fence_for(body)
    block = (
        "The message above replies to these earlier messages (oldest first):\n"
        f"{fence}\n{body}\n{fence}"
    )
    return Attachment(CHAIN_NAME, "text", "text/plain", text=block)


async def gather_context(
    client: discord.Client,
    message: discord.Message,
    text: str,
    *,
    cdn_urls: Sequence[str],
    limits: AttachmentLimits,
    depth: int,
    text_of: Callable[[discord.Message], str],
) -> Context:
    """``message``'s prompt: ``text`` (its own, without the mention) and a forward's text, then
    its files, the reply chain's block and the chain's files (own files first under
    ``MAX_ATTACHMENTS``). Downloads only from ``cdn_urls``."""
    texts, forwarded = _forwarded(message)
    own = [*_files(message.attachments), *forwarded]
    chain = await _chain(client, message, depth, text_of) if depth > 0 else []
    chain.reverse()  # oldest first
    files = [*own, *(f for linked in chain for f in linked.files)]
    attachments: list[Attachment] = []
    block = chain_block([(c.author, c.text) for c in chain], limits.max_text_chars)
    if block is not None:
        attachments.append(block)
    if files:
        async with Downloader(cdn_urls, limits) as downloader:
            attachments += await downloader.fetch_all(files)
    prompt = "\n\n".join(t for t in (text, *texts) if t)
    return Context(prompt, attachments)
