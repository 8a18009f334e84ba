"""The Discord front end: mentions and slash commands in, a reply streamed by edits out.

A thin translation layer over ``core``: a Discord event becomes a :class:`ConversationKey`, an
:class:`Actor` and an ``engine.submit`` or ``commands.execute`` call; the answer goes out through a
:class:`~bots.discord.sink.ChannelSink` / :class:`~bots.discord.sink.InteractionSink` driven by
``core.delivery.deliver``. All of the bot's channel messages share one
:class:`~core.budget.EditBudget` (Discord allows 50 requests/s per bot); each message is edited at
most once per ``DISCORD_EDIT_INTERVAL``; the final edit goes as soon as the channel's edit window
(``DISCORD_CHANNEL_EDITS`` per ``DISCORD_CHANNEL_EDIT_WINDOW``, Discord's ~5 per 5 s) has room.

With ``REPLY_BUTTONS`` a reply carries its buttons (:mod:`bots.discord.buttons`) in those same
requests; a click is :meth:`DiscordBot.on_control`, which hands it to :func:`core.controls.press`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import aiohttp
import discord
import yarl
from discord import app_commands
from pydantic import SecretStr

from bots.frontend import DEFAULT_GRACE
from core.attachments import AttachmentLimits
from core.budget import EditBudget
from core.catalogue import best_matches
from core.cluster import BudgetShare
from core.commands import Command, execute, parse_command
from core.controls import press
from core.conversations import ConversationKey
from core.delivery import deliver
from core.engine import ChatEngine, Refused, Reply
from core.policy import Actor, is_prompt
from core.render import MessageSink, SinkRateLimited, StreamRenderer
from core.split import split_message

from .buttons import ControlButton
from .context import Context, gather_context
from .rest import DiscordRest, DiscordRestError
from .settings import DiscordSettings
from .sink import MAX_LEN, ChannelSink, InteractionSink

__all__ = [
    "PERMISSIONS",
    "PLATFORM",
    "DiscordBot",
    "actor_of",
    "configure_endpoints",
    "conversation_keys",
    "invite_url",
]

log = logging.getLogger("llmconnect.discord")

PLATFORM = "discord"
#: What the bot needs in a channel: see it, read the history it replies to, and post (also in
#: threads). Nothing else — no mention-everyone, no manage-messages.
PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    read_message_history=True,
    # DISCORD_THREAD_PER_QUESTION: a thread started from the question.
    create_public_threads=True,
)
#: Threads the bot answered in that it remembers (follow-ups there need no mention).
MAX_ANSWERED_THREADS = 10_000
#: Discord's longest thread name.
MAX_THREAD_NAME = 100
#: Discord wants an interaction answered within 3 s: answer directly when the work is done by
#: then, else defer ("thinking...") and edit the answer in afterwards.
DEFER_AFTER = 2.0
#: The typing indicator lasts about 10 s; it is renewed until the first text is posted.
TYPING_REFRESH = 8.0
#: Requests per second Discord takes from a bot (its global limit); the bot-wide budget paces
#: ``DISCORD_REQUESTS_PER_SECOND`` (45) and guarantees this at Discord whatever the timing.
GLOBAL_LIMIT = 50
#: Grants the bot-wide budget may make at once: after the event loop was busy for up to a
#: third of a second, the slots it missed are caught up rather than lost.
BURST = 15
#: Discord allows ``max_concurrency`` IDENTIFYs per this many seconds, one per bucket.
IDENTIFY_INTERVAL = 5.0

_T = TypeVar("_T")
_NONE = discord.AllowedMentions.none()


def configure_endpoints(api_url: str, gateway_url: str) -> None:
    """Point discord.py at ``api_url`` / ``gateway_url`` (a proxy, or a local stand-in).

    discord.py has no per-client option for this: the REST base (``Route.BASE``, which webhook
    and interaction URLs are built from too) and the gateway are class attributes, so the
    setting is process-wide.
    """
    discord.http.Route.BASE = api_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def invite_url(application_id: int | str) -> str:
    """The OAuth2 URL that adds the bot (with its slash commands) to a server."""
    return discord.utils.oauth_url(
        int(application_id), permissions=PERMISSIONS, scopes=("bot", "applications.commands")
    )


def conversation_keys(
    channel: Any, channel_id: int | None = None
) -> tuple[ConversationKey, ConversationKey | None]:
    """(the conversation, its parent channel's for a thread): a thread is its own conversation."""
    if isinstance(channel, discord.Thread) and channel.parent_id is not None:
        return (
            ConversationKey(PLATFORM, str(channel.id)),
            ConversationKey(PLATFORM, str(channel.parent_id)),
        )
    ident = channel.id if channel is not None else channel_id
    return ConversationKey(PLATFORM, str(ident)), None


def actor_of(user: discord.abc.User, permissions: discord.Permissions | None = None) -> Actor:
    """The core's view of a Discord user: id, role ids, and Manage Server as platform admin."""
    roles: frozenset[str] = frozenset()
    admin = False
    if isinstance(user, discord.Member):
        roles = frozenset(str(role.id) for role in user.roles if not role.is_default())
        admin = (permissions or user.guild_permissions).manage_guild
    return Actor(str(user.id), roles, platform_admin=admin)


@dataclass(frozen=True, slots=True)
class Typing:
    """ "typing..." being shown in a channel: the task that renews it, and a future done once
    the first indicator was sent (or skipped): the reply's ``heard``."""

    task: asyncio.Task[None]
    shown: asyncio.Future[None]


class DiscordBot(discord.AutoShardedClient):
    """The bot. ``engine`` is the caller's (shared, shut down by its owner).

    Always discord.py's ``AutoShardedClient``, so one process runs any set of shards:
    ``DISCORD_SHARD_IDS`` of ``DISCORD_SHARD_COUNT``, or every shard of Discord's recommended
    count when neither is set (for most bots one, served as a plain ``Client`` would; the bot
    uses none of the few ``Client`` attributes that differ, such as ``ws``).
    """

    def __init__(
        self,
        settings: DiscordSettings,
        engine: ChatEngine,
        *,
        budget: EditBudget | None = None,
        out: TextIO | None = None,
        **options: Any,
    ) -> None:
        configure_endpoints(settings.discord_api_url, settings.discord_gateway_url)
        # Default intents: no privileged message-content intent is needed to read messages
        # that mention the bot; DISCORD_MESSAGE_CONTENT asks for it (reply chains of ordinary
        # messages). Nothing the bot sends may ping anyone.
        intents = discord.Intents.default()
        intents.message_content = settings.discord_message_content
        options.setdefault("intents", intents)
        options.setdefault("allowed_mentions", _NONE)
        # Shards: DISCORD_SHARD_IDS of DISCORD_SHARD_COUNT (ids empty: all of them; count empty:
        # Discord's recommended count, see launch_shards), all in this process; docs/deploy.md.
        options.setdefault("shard_count", settings.discord_shard_count)
        options.setdefault("shard_ids", list(settings.discord_shard_ids) or None)
        # A text bot: discord.py's warnings about missing voice libraries are noise here.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(**options)
        #: IDENTIFYs Discord allows at once (session_start_limit.max_concurrency), and when each
        #: rate-limit bucket (shard id % that) last identified: see before_identify_hook.
        self.identify_concurrency = 1
        self._identified_at: dict[int, float] = {}
        self._identified_shards: set[int] = set()
        self._identify_locks: dict[int, asyncio.Lock] = {}
        self.settings = settings
        self.engine = engine
        self.out = out if out is not None else sys.stdout
        #: Seconds :meth:`close` waits for replies to show their final text (``SHUTDOWN_GRACE``;
        #: the front end sets it: discord.py's ``close`` takes no argument).
        self.close_grace = DEFAULT_GRACE
        self.rest = DiscordRest(settings.discord_api_url, clock=engine.clock)
        rate = settings.discord_requests_per_second
        # Discord counts requests as they arrive: the budget counts each until it comes back
        # (confirm), so that a burst catching up the slots a busy event loop missed can never
        # put more than Discord's own limit into any second at Discord (docs/benchmarks.md).
        self.budget = budget or EditBudget(
            rate,
            1.0,
            burst=max(1, min(BURST, int(rate))),
            clock=engine.clock,
            confirm=True,
            arrival_limit=GLOBAL_LIMIT / rate,
        )
        #: Discord's limit is per bot: processes sharing a store (shards) divide it.
        self.budget_share = BudgetShare(engine.cluster, "discord", clock=engine.clock)
        self.budget_share.add(self.budget, self.budget.rate)
        self.tree: app_commands.CommandTree[DiscordBot] = app_commands.CommandTree(self)
        from .slash import register_commands  # slash commands call back into this class

        register_commands(self)
        #: Running deliveries, so shutdown can end them on their final text.
        self._active: dict[asyncio.Task[Any], Reply] = {}
        #: Posted reply message id -> its sink and reply, to stop quietly when it is deleted.
        self._live: dict[str, tuple[ChannelSink, Reply]] = {}
        #: Threads the bot answered in (ids), the latest :data:`MAX_ANSWERED_THREADS`.
        self._answered: OrderedDict[int, None] = OrderedDict()

    @property
    def streaming(self) -> int:
        """How many replies are being delivered right now."""
        return len(self._active)

    # ----------------------------------------------------------------- life cycle

    async def setup_hook(self) -> None:
        token = self.http.token
        assert token is not None
        self.rest.open(SecretStr(token))
        # Every reply button, of any message ever posted (no view per message: restarts keep
        # them working).
        self.add_dynamic_items(ControlButton)
        await self.budget_share.start()
        await self.sync_commands()
        if self.application_id is not None:
            self.out.write(f"Invite the bot with: {invite_url(self.application_id)}\n")
            self.out.flush()

    async def sync_commands(self) -> None:
        """Globally (may take a while to show), or to ``DISCORD_GUILD_IDS`` (instant there)."""
        guild_ids = self.settings.discord_guild_ids
        if not guild_ids:
            synced = await self.tree.sync()
            log.info("synced %d slash commands globally", len(synced))
            return
        for guild_id in guild_ids:
            guild = discord.Object(int(guild_id))
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d slash commands to guild %s", len(synced), guild_id)

    async def launch_shards(self) -> None:
        """Ask Discord (``GET /gateway/bot``) how many shards it recommends (used when
        ``DISCORD_SHARD_COUNT`` is not set) and how many may IDENTIFY at once, then connect them.

        discord.py's own asks only without a count, and then connects to the URL Discord names
        there; this one keeps to ``DISCORD_GATEWAY_URL``, so a gateway proxy is never bypassed.
        """
        if self.is_closed():
            return
        try:
            count, _, limits = await self.http.get_bot_gateway()
        except (discord.GatewayNotFound, OSError, aiohttp.ClientError):
            if self.shard_count is None:
                raise
            log.warning("GET /gateway/bot failed: the shards identify one at a time")
        else:
            self.identify_concurrency = max(1, int(limits.get("max_concurrency") or 1))
            if self.shard_count is None:
                self.shard_count = count
        await super().launch_shards()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Wait before a shard's IDENTIFY as long as Discord's identify limit requires.

        Discord allows ``max_concurrency`` IDENTIFYs per 5 s, one per bucket ``shard_id %
        max_concurrency``. discord.py's default sleeps 5 s before every IDENTIFY but the first,
        so several shards in one process would start 5 s apart even when Discord allows them
        at once. Here a shard's first IDENTIFY waits only for its bucket; a later one (the
        session could not be resumed) keeps discord.py's 5 s pause.
        """
        shard = shard_id or 0
        bucket = shard % self.identify_concurrency
        lock = self._identify_locks.setdefault(bucket, asyncio.Lock())
        async with lock:
            if shard in self._identified_shards:
                await super().before_identify_hook(shard_id, initial=False)
            elif (last := self._identified_at.get(bucket)) is not None:
                wait = last + IDENTIFY_INTERVAL - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            self._identified_shards.add(shard)
            self._identified_at[bucket] = time.monotonic()

    async def close(self) -> None:
        """Stop what streams, let each reply show its final text (briefly), then disconnect."""
        active = dict(self._active)
        for reply in active.values():
            reply.cancel()  # each delivery then writes its reply's final text
        if active:
            _, pending = await asyncio.wait(active, timeout=self.close_grace)
            for task in pending:
                task.cancel()
        await self.budget_share.aclose()
        await self.rest.close()
        if self._ready is discord.utils.MISSING:
            # Closed before login (a shutdown right at start-up): AutoShardedClient.close needs
            # the asyncio objects login creates first; a later start() then connects nothing.
            await self._async_setup_hook()
        await super().close()

    # ----------------------------------------------------------------- mentions

    def _addressed(self, message: discord.Message) -> bool:
        me = self.user
        if me is None:
            return False
        if any(user.id == me.id for user in message.mentions):
            return True
        role = message.guild.self_role if message.guild is not None else None
        return role is not None and role in message.role_mentions

    def prompt_text(self, message: discord.Message) -> str:
        """The message without the bot's mention; other mentions as readable names."""
        content = message.content
        me = self.user
        if me is not None:
            content = content.replace(f"<@{me.id}>", "").replace(f"<@!{me.id}>", "")
        if message.guild is not None and message.guild.self_role is not None:
            content = content.replace(f"<@&{message.guild.self_role.id}>", "")
        for user in message.mentions:
            name = f"@{user.display_name}"
            content = content.replace(f"<@{user.id}>", name).replace(f"<@!{user.id}>", name)
        for role in message.role_mentions:
            content = content.replace(f"<@&{role.id}>", f"@{role.name}")
        return content.strip()

    def answered_in(self, channel: Any) -> None:
        """Remember that the bot answered in ``channel`` when it is a thread."""
        if isinstance(channel, discord.Thread):
            self._answered[channel.id] = None
            self._answered.move_to_end(channel.id)
            while len(self._answered) > MAX_ANSWERED_THREADS:
                self._answered.popitem(last=False)

    def followed(self, channel: Any) -> bool:
        """Whether ``channel`` is a thread the bot created or answered in."""
        if not isinstance(channel, discord.Thread):
            return False
        me = self.user
        return channel.id in self._answered or (me is not None and channel.owner_id == me.id)

    def is_prompt(self, message: discord.Message) -> bool:
        """Core's rule (:func:`core.policy.is_prompt`): a mention, a DM, a message in a thread
        the bot answered in (``FOLLOW_UP_IN_THREADS``) or in an ``AUTO_REPLY_CHANNELS`` channel;
        never the bot's own, other bots' only with ``ALLOW_BOTS``."""
        me = self.user
        if me is None:
            return False
        key, parent = conversation_keys(message.channel, message.channel.id)
        return is_prompt(
            self.engine.settings,
            mention=self._addressed(message),
            direct=message.guild is None,
            followed_thread=self.followed(message.channel),
            channel=key.channel,
            parent=parent.channel if parent else None,
            author_is_bot=message.author.bot,
            author_is_self=message.author.id == me.id,
        )

    async def on_message(self, message: discord.Message) -> None:
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        if not self.is_prompt(message):
            return
        key, parent = conversation_keys(message.channel, message.channel.id)
        if self.engine.policy.refusal(None, key.channel, parent.channel if parent else None):
            return  # a channel the bot is not enabled in is ignored, silently
        actor = actor_of(message.author)
        guild_id = str(message.guild.id) if message.guild is not None else None
        text = self.prompt_text(message)
        command = parse_command(text)
        if command is not None:
            result = await execute(self.engine, key, command, actor, parent=parent)
            await self._reply_text(message, result.text)
            return
        # Its files, a forward's snapshot, the reply chain (bots/discord/context.py); nothing is
        # downloaded for a user the access lists refuse (submit says why).
        refused = self.engine.policy.refusal(actor, key.channel, parent.channel if parent else None)
        # The first sign that the question was heard, at once: "typing..." where it was asked
        # (the LLM is asked once it is shown, see ChatEngine.submit's ``heard``).
        typing = None if refused else self._start_typing(str(message.channel.id))
        context = (
            Context(text, [])
            if refused
            else await gather_context(
                self,
                message,
                text,
                cdn_urls=self.settings.discord_cdn_url,
                limits=AttachmentLimits.from_settings(self.engine.settings),
                depth=self.settings.discord_reply_chain_depth,
                text_of=self.prompt_text,
            )
        )
        new_thread = self._thread_per_question(message)
        if new_thread:
            # Discord gives a thread started from a message the message's id: its conversation,
            # under the channel's, is known before the thread exists (and only made if served).
            key, parent = ConversationKey(PLATFORM, str(message.id)), key
        try:
            reply = await self.engine.submit(
                key,
                context.text,
                actor=actor,
                parent=parent,
                attachments=context.attachments,
                heard=typing.shown if typing is not None else None,
            )
        except Refused as exc:
            if typing is not None:
                typing.task.cancel()
            await self._reply_text(message, exc.user_message)
            return
        thread = await self._start_thread(message, text) if new_thread else None
        if thread is not None:
            if typing is not None:  # the answer goes to the new thread: typing there
                typing.task.cancel()
            sink = ChannelSink(self.rest, str(thread.id), guild_id=guild_id)
            self.answered_in(thread)
            await self._stream(reply, sink, typing=self._start_typing(str(thread.id)))
            return
        self.answered_in(message.channel)
        channel_id = str(message.channel.id)
        sink = ChannelSink(self.rest, channel_id, reply_to=str(message.id), guild_id=guild_id)
        await self._stream(reply, sink, typing=typing)

    def _thread_per_question(self, message: discord.Message) -> bool:
        """DISCORD_THREAD_PER_QUESTION: a mention in a guild's text channel (not a thread, DM
        or auto-reply message) is answered in a new thread started from it."""
        return (
            self.settings.discord_thread_per_question
            and isinstance(message.channel, discord.TextChannel)
            and self._addressed(message)
        )

    async def _start_thread(self, message: discord.Message, text: str) -> discord.Thread | None:
        """A public thread from ``message``, named after the question (first 100 characters);
        ``None`` when Discord refuses (no Create Public Threads permission, ...): the answer
        then goes under the question in the channel."""
        name = " ".join(text.split())[:MAX_THREAD_NAME] or "Question"
        try:
            return await message.create_thread(name=name)
        except discord.HTTPException as exc:
            log.warning("could not start a thread in %s: %s", message.channel.id, exc)
            return None

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        """A streaming reply was deleted: stop generating, quietly, and send nothing more."""
        entry = self._live.get(str(payload.message_id))
        if entry is None:
            return
        sink, reply = entry
        if str(payload.message_id) in sink.deleted:
            return  # the reply deleted it itself (a regeneration needed fewer messages)
        sink.mark_gone()
        reply.cancel()
        await reply

    async def _reply_text(self, message: discord.Message, text: str) -> None:
        """A complete text as a reply (split at 2,000 characters), paced like any reply."""
        guild_id = str(message.guild.id) if message.guild is not None else None
        sink = ChannelSink(
            self.rest, str(message.channel.id), reply_to=str(message.id), guild_id=guild_id
        )
        await self._send_text(sink, text, self.budget)

    async def _send_text(self, sink: MessageSink, text: str, budget: EditBudget | None) -> None:
        renderer = StreamRenderer(
            sink,
            min_interval=self.settings.discord_edit_interval,
            budget=budget,
            clock=self.engine.clock,
            window_limit=self.settings.discord_channel_edits,
            window_seconds=self.settings.discord_channel_edit_window,
        )
        # finish() right after feed(): the first post already carries the final text.
        await renderer.feed(text)
        try:
            await renderer.finish()
        except (DiscordRestError, SinkRateLimited) as exc:
            log.warning("could not send a message: %s", exc)

    # ----------------------------------------------------------------- streaming

    async def _stream(
        self,
        reply: Reply,
        sink: ChannelSink | InteractionSink,
        *,
        typing: Typing | None = None,
        shared_budget: bool = True,
        reuse: str | None = None,
    ) -> None:
        """Deliver ``reply`` into ``sink``; the typing indicator (started when the question
        arrived) shows until the first post. ``reuse``: the message to render into instead of
        posting (a regeneration)."""
        task = asyncio.current_task()
        assert task is not None
        self._active[task] = reply
        posted: list[str] = []

        def on_post(message_id: str) -> None:
            if typing is not None:
                typing.task.cancel()
            if isinstance(sink, ChannelSink):
                self._live[message_id] = (sink, reply)
            posted.append(message_id)

        sink.on_post = on_post
        if reuse is not None:
            on_post(reuse)  # deleted meanwhile: stop quietly, as for a posted one
        try:
            await deliver(
                self.engine,
                reply,
                sink,
                min_interval=self.settings.discord_edit_interval,
                budget=self.budget if shared_budget else None,
                clock=self.engine.clock,
                window_limit=self.settings.discord_channel_edits,
                window_seconds=self.settings.discord_channel_edit_window,
                controls=self.engine.settings.reply_buttons,
                reuse=reuse,
            )
        except DiscordRestError as exc:
            # Discord refused the message (missing permission, ...): nobody can see the reply.
            log.warning("%s: reply not delivered: %s", reply.key, exc)
            reply.cancel()
            await reply
        finally:
            if typing is not None:
                typing.task.cancel()
            for message_id in posted:
                self._live.pop(message_id, None)
            self._active.pop(task, None)

    def _start_typing(self, channel_id: str) -> Typing:
        """Start showing "typing..." in ``channel_id`` now (see :meth:`_typing`)."""
        shown: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        return Typing(asyncio.create_task(self._typing(channel_id, shown)), shown)

    async def _typing(self, channel_id: str, shown: asyncio.Future[None] | None = None) -> None:
        """Show "typing..." until cancelled (at the first post), renewing it while it lasts;
        ``shown`` is done once the first attempt is over (shown, skipped or failed).

        A courtesy, never at the cost of content: sent only when the bot-wide budget has a slot
        free right now.
        """
        try:
            while True:
                if self.budget.try_take():  # never queued: a queued request would be stale
                    try:
                        with contextlib.suppress(DiscordRestError, SinkRateLimited):
                            await self.rest.trigger_typing(channel_id)
                    finally:
                        self.budget.returned()
                if shown is not None and not shown.done():
                    shown.set_result(None)
                await self.engine.clock.sleep(TYPING_REFRESH)
        finally:
            if shown is not None and not shown.done():
                shown.set_result(None)

    # ----------------------------------------------------------------- slash commands

    def interaction_context(
        self, interaction: discord.Interaction[Any]
    ) -> tuple[ConversationKey, ConversationKey | None, Actor]:
        key, parent = conversation_keys(interaction.channel, interaction.channel_id)
        permissions = interaction.permissions if interaction.guild_id is not None else None
        return key, parent, actor_of(interaction.user, permissions)

    async def _soon(
        self, interaction: discord.Interaction[Any], work: Awaitable[_T], *, ephemeral: bool
    ) -> _T:
        """Await ``work``; when it is not done within :data:`DEFER_AFTER`, defer first."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=DEFER_AFTER)
        if not done and not interaction.response.is_done():
            await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        return await task

    async def answer(
        self, interaction: discord.Interaction[Any], text: str, *, ephemeral: bool
    ) -> None:
        """Answer an interaction with a complete text, split at 2,000 characters."""
        parts = split_message(text, MAX_LEN) or [""]
        if interaction.response.is_done():
            await interaction.edit_original_response(content=parts[0], allowed_mentions=_NONE)
        else:
            await interaction.response.send_message(
                parts[0], ephemeral=ephemeral, allowed_mentions=_NONE
            )
        for part in parts[1:]:
            await interaction.followup.send(part, ephemeral=ephemeral, allowed_mentions=_NONE)

    async def run_command(self, interaction: discord.Interaction[Any], command: Command) -> None:
        """A slash command other than /ask, through the core grammar."""
        key, parent, actor = self.interaction_context(interaction)
        work = execute(self.engine, key, command, actor, parent=parent)
        result = await self._soon(interaction, work, ephemeral=command.name != "reset")
        await self.answer(interaction, result.text, ephemeral=result.ephemeral)

    async def ask(self, interaction: discord.Interaction[Any], prompt: str) -> None:
        """/ask: the answer streams into the interaction's response."""
        key, parent, actor = self.interaction_context(interaction)
        # The first sign is Discord's "thinking..." (the deferred response): the LLM is asked
        # once it is shown (ChatEngine.submit's ``heard``).
        deferred: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        submit = self.engine.submit(key, prompt, actor=actor, parent=parent, heard=deferred)
        try:
            try:
                reply = await self._soon(interaction, submit, ephemeral=False)
            except Refused as exc:
                await self.answer(interaction, exc.user_message, ephemeral=True)
                return
            try:
                if not interaction.response.is_done():
                    await interaction.response.defer(thinking=True)
            except discord.HTTPException:
                reply.cancel()  # the interaction expired: nobody would see the answer
                await reply
                raise
        finally:
            if not deferred.done():
                deferred.set_result(None)
        sink = InteractionSink(self.rest, str(interaction.application_id), interaction.token)
        self.answered_in(interaction.channel)
        # Interaction endpoints are not bound to the bot-wide limit: no shared budget here.
        await self._stream(reply, sink, shared_budget=False)

    # ----------------------------------------------------------------- reply buttons

    async def on_control(self, interaction: discord.Interaction[Any], action_id: str) -> None:
        """A reply button was clicked (:class:`~bots.discord.buttons.ControlButton`): the
        core decides (:func:`core.controls.press`); a refusal or a thank-you goes to the
        clicker alone (ephemeral), Stop shows on the message itself (its final edit), and a
        regeneration streams into the clicked message."""
        key, parent, actor = self.interaction_context(interaction)
        work = press(self.engine, key, action_id, actor, parent=parent)
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=DEFER_AFTER)
        if not done:
            await interaction.response.defer()  # a click: "deferred update", nothing shown
        result = await task
        if result.text and interaction.response.is_done():
            # Deferred: the original response is the clicked message; a follow-up only.
            await interaction.followup.send(result.text, ephemeral=True, allowed_mentions=_NONE)
        elif result.text:
            await interaction.response.send_message(
                result.text, ephemeral=True, allowed_mentions=_NONE
            )
        elif not interaction.response.is_done():
            await interaction.response.defer()
        message = interaction.message
        if result.reply is None or message is None:
            return
        guild_id = str(interaction.guild_id) if interaction.guild_id is not None else None
        sink = ChannelSink(self.rest, str(message.channel.id), guild_id=guild_id)
        self.answered_in(interaction.channel)
        await self._stream(result.reply, sink, reuse=str(message.id))

    def model_choices(self, current: str) -> list[app_commands.Choice[str]]:
        """Autocomplete for /model: the 25 available models that best match what was typed
        (:func:`core.catalogue.best_matches`); never waits on a provider's list. A name over
        Discord's 100 characters cannot be a choice: it is left out rather than cut."""
        models = [m for m in self.engine.available_models() if len(m) <= 100]
        return [app_commands.Choice(name=m, value=m) for m in best_matches(current, models, 25)]
