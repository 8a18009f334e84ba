"""Conversations in Redis, shared by several bot processes, and the lock that keeps one
generation at a time per conversation across all of them.

Why ``redis`` (redis-py's asyncio client): the reference client, one dependency, and its
``Lock`` is the well-known token + Lua-checked release (only the owner can release or extend).

Layout, under ``prefix``: ``conv:<json key>`` holds a conversation's JSON with an expiry of
``ttl`` seconds from its last save (0: none); ``index`` is a sorted set of those keys by last
save, used to keep at most ``max_conversations`` (least recently saved evicted, checked every
``PRUNE_EVERY`` saves); ``lock:<json key>`` is the conversation lock.

Token counts (:mod:`core.usage`) are hashes with fields ``in:<model>`` and ``out:<model>``,
raised with ``HINCRBY`` in one ``MULTI``: ``usage:conv:<json key>:<YYYY-MM-DD>`` (a conversation's
UTC day) and ``usage:user:<json [platform, user]>:<YYYY-MM-DD>`` (a user's) expire
``USAGE_DAY_EXPIRY`` seconds (two days) after their last count; ``usage:conv:<json key>:total``
expires with ``ttl`` like the conversation and goes when the conversation is evicted.

Votes on replies (:mod:`core.feedback`): ``feedback:<json key>``, a hash whose fields are
``[reply id, user]`` (JSON) and values ``[vote, model]`` (JSON): one field per user per reply,
so a vote is one ``HSET``/``HDEL``; it expires with ``ttl`` and goes with the conversation.

The lock expires after ``lock_expiry`` seconds unless renewed; the holder renews it every third
of that while its generation runs, so a crashed worker blocks a channel for at most
``lock_expiry`` seconds. Should a renewal find the lock taken by someone else (this process
stalled longer than the expiry), the generation is cancelled rather than run alongside the other.
Waiters poll every ``lock_poll`` seconds: order across processes is not FIFO (within a process
the engine keeps FIFO).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, cast

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock as RedisLock
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from ..conversations import Conversation, ConversationKey, load_conversation, new_conversation
from ..feedback import Counts
from ..usage import DAY_SECONDS, Tokens, UsageReport

if TYPE_CHECKING:
    from .redis_cluster import RedisCluster

__all__ = ["PRUNE_EVERY", "USAGE_DAY_EXPIRY", "RedisStore", "key_json"]

log = logging.getLogger("llmconnect.store.redis")

PRUNE_EVERY = 64
#: Seconds a daily token count outlives its last increment: the day, and a margin.
USAGE_DAY_EXPIRY = 2 * DAY_SECONDS


def key_json(key: ConversationKey) -> str:
    """A conversation key as Redis spells it: JSON keeps "a:b"/"c" and "a"/"b:c" apart."""
    return json.dumps(list(key), separators=(",", ":"))


def _by_model(raw: dict[bytes, bytes]) -> dict[str, Tokens]:
    """``{b"in:m": b"3", b"out:m": b"4"}`` -> ``{"m": Tokens(3, 4)}``."""
    pairs: dict[str, list[int]] = {}
    for field, value in raw.items():
        kind, _, model = field.decode("utf-8", "replace").partition(":")
        pair = pairs.setdefault(model, [0, 0])
        pair[0 if kind == "in" else 1] = int(value)
    return {model: Tokens(*pair) for model, pair in pairs.items()}


class RedisStore:
    """A :class:`~core.conversations.ConversationStore` and
    :class:`~core.stores.locks.ConversationLocks` over one Redis database."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        max_conversations: int = 10_000,
        ttl: float = 0,
        lock_expiry: float = 30.0,
        lock_poll: float = 0.05,
        prefix: str = "llmconnect:",
    ) -> None:
        self.max_conversations = max_conversations
        self.ttl = ttl
        self.lock_expiry = lock_expiry
        self.lock_poll = lock_poll
        self.prefix = prefix
        # Connects on first use; the pool grows with concurrent generations.
        self.client: aioredis.Redis = aioredis.Redis.from_url(url)
        self._index = f"{prefix}index"
        self._saves = 0

    def _name(self, kind: str, key: ConversationKey) -> str:
        return f"{self.prefix}{kind}:{key_json(key)}"

    def _px(self) -> int | None:
        return int(self.ttl * 1000) if self.ttl > 0 else None

    # ----------------------------------------------------------------- the store protocol

    async def get(self, key: ConversationKey) -> Conversation | None:
        raw = await self.client.get(self._name("conv", key))
        return None if raw is None else load_conversation(raw, key)

    async def get_or_create(
        self, key: ConversationKey, parent: ConversationKey | None = None
    ) -> Conversation:
        conversation = await self.get(key)
        if conversation is not None:
            return conversation
        conversation = await new_conversation(self, key, parent)
        name = self._name("conv", key)
        data = json.dumps(conversation.to_dict())
        # NX: another process may have created it (and even run a turn) since the read.
        if not await self.client.set(name, data, nx=True, px=self._px()):
            return await self.get(key) or conversation
        await self.client.zadd(self._index, {name: conversation.updated_at})
        return conversation

    async def save(self, conversation: Conversation) -> None:
        conversation.updated_at = now = time.time()
        name = self._name("conv", conversation.key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(name, json.dumps(conversation.to_dict()), px=self._px())
            pipe.zadd(self._index, {name: now})
            await pipe.execute()
        self._saves += 1
        if self._saves % PRUNE_EVERY == 0:
            await self.prune()

    async def delete(self, key: ConversationKey) -> None:
        name = self._name("conv", key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(name, self._name("feedback", key))
            pipe.zrem(self._index, name)
            await pipe.execute()

    async def count(self) -> int:
        """How many conversations the index holds (expired ones not yet pruned included)."""
        return int(await self.client.zcard(self._index))

    async def list_keys(self, platform: str) -> list[ConversationKey]:
        """``platform``'s conversations (expired ones left out), most recently saved first: read
        from the index, which holds every platform's (at most ``max_conversations``)."""
        low = time.time() - self.ttl if self.ttl > 0 else "-inf"
        names = await self.client.zrange(self._index, "+inf", low, desc=True, byscore=True)
        start = len(f"{self.prefix}conv:")
        keys = []
        for name in names:
            text = name.decode() if isinstance(name, bytes) else str(name)
            key = ConversationKey(*json.loads(text[start:]))
            if key.platform == platform:
                keys.append(key)
        return keys

    async def prune(self) -> None:
        """Apply both bounds now: forget expired keys, evict the least recently saved."""
        if self.ttl > 0:
            await self.client.zremrangebyscore(self._index, "-inf", time.time() - self.ttl)
        excess = int(await self.client.zcard(self._index)) - self.max_conversations
        if excess > 0:
            # redis-py types ZPOPMIN's reply loosely; it is (member, score) pairs.
            evicted = cast(
                "list[tuple[bytes, float]]", await self.client.zpopmin(self._index, excess)
            )
            if evicted:
                conv, usage = f"{self.prefix}conv:".encode(), f"{self.prefix}usage:conv:".encode()
                totals = [usage + name[len(conv) :] + b":total" for name, _ in evicted]
                votes = f"{self.prefix}feedback:".encode()
                feedback = [votes + name[len(conv) :] for name, _ in evicted]
                await self.client.delete(*[name for name, _ in evicted], *totals, *feedback)

    # ----------------------------------------------------------------- token usage

    def _usage_names(self, key: ConversationKey, user: str | None, day: str) -> list[str]:
        """The conversation's day and total counters, and the user's day counter (if any)."""
        conv = f"{self.prefix}usage:conv:{key_json(key)}"
        names = [f"{conv}:{day}", f"{conv}:total"]
        if user is not None:
            person = json.dumps([key.platform, user], separators=(",", ":"))
            names.append(f"{self.prefix}usage:user:{person}:{day}")
        return names

    async def add_usage(
        self, key: ConversationKey, user: str | None, day: str, model: str, tokens: Tokens
    ) -> None:
        """Count a reply's tokens (a :class:`~core.usage.UsageStore`): atomic increments, in
        one transaction, so processes counting at once lose nothing."""
        names = self._usage_names(key, user, day)
        async with self.client.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.hincrby(name, f"in:{model}", tokens.input)
                pipe.hincrby(name, f"out:{model}", tokens.output)
                if not name.endswith(":total"):
                    pipe.expire(name, USAGE_DAY_EXPIRY)
                elif self.ttl > 0:
                    pipe.pexpire(name, int(self.ttl * 1000))
            await pipe.execute()

    async def read_usage(self, key: ConversationKey, user: str | None, day: str) -> UsageReport:
        names = self._usage_names(key, user, day)
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(name)
            found = await pipe.execute()
        counts = [_by_model(raw) for raw in found]
        return UsageReport(
            day=day,
            conversation_day=counts[0],
            conversation_total=counts[1],
            user_day=counts[2] if user is not None else None,
        )

    # ----------------------------------------------------------------- feedback

    async def set_vote(
        self, key: ConversationKey, reply_id: str, user: str, model: str, vote: int
    ) -> None:
        """A user's vote on a reply (a :class:`~core.feedback.FeedbackStore`): one hash field
        per user per reply."""
        name = self._name("feedback", key)
        field = json.dumps([reply_id, user], separators=(",", ":"))
        if not vote:
            await self.client.hdel(name, field)
            return
        value = json.dumps([1 if vote > 0 else -1, model], separators=(",", ":"))
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(name, field, value)
            if self.ttl > 0:
                pipe.pexpire(name, int(self.ttl * 1000))
            await pipe.execute()

    async def vote_of(self, key: ConversationKey, reply_id: str, user: str) -> int:
        field = json.dumps([reply_id, user], separators=(",", ":"))
        raw = await self.client.hget(self._name("feedback", key), field)
        return 0 if raw is None else int(json.loads(raw)[0])

    async def read_feedback(self, key: ConversationKey) -> dict[str, Counts]:
        raw = await self.client.hgetall(self._name("feedback", key))
        counts: dict[str, list[int]] = {}
        for value in raw.values():
            vote, model = json.loads(value)
            pair = counts.setdefault(str(model), [0, 0])
            pair[0 if int(vote) > 0 else 1] += 1
        return {model: Counts(*pair) for model, pair in counts.items()}

    async def aclose(self) -> None:
        await self.client.aclose()

    def cluster(self) -> RedisCluster:
        """What the processes sharing this store also share (rate limits, /stop, budgets)."""
        from .redis_cluster import RedisCluster

        return RedisCluster(self)

    # ----------------------------------------------------------------- the lock

    def lock_name(self, key: ConversationKey) -> str:
        """The Redis key of ``key``'s lock (for operators: ``PTTL`` shows who is stuck)."""
        return self._name("lock", key)

    def lock(self, key: ConversationKey) -> AbstractAsyncContextManager[None]:
        """Held while a generation of ``key`` runs, in whichever process."""
        return self._hold(key)

    @contextlib.asynccontextmanager
    async def _hold(self, key: ConversationKey) -> AsyncIterator[None]:
        lock = self.client.lock(
            self.lock_name(key),
            timeout=self.lock_expiry,
            sleep=self.lock_poll,
            blocking=True,
            blocking_timeout=None,
            thread_local=False,
        )
        await lock.acquire()
        owner = asyncio.current_task()
        done = asyncio.Event()
        renewal = asyncio.create_task(
            self._renew(lock, key, owner, done), name=f"lock renewal {key}"
        )
        try:
            yield
        finally:
            # Stopped by an event, not cancelled: redis-py may swallow a cancellation that lands
            # inside a command, and a renewal after the release would look like a lost lock.
            done.set()
            await asyncio.wait([renewal])
            release = asyncio.ensure_future(lock.release())
            # Should shutdown cancel us meanwhile, the release still runs; its outcome is read.
            release.add_done_callback(lambda f: f.cancelled() or f.exception())
            try:
                await asyncio.shield(release)
            except LockError:
                log.warning("%s: the conversation lock had expired before release", key)
            except RedisError as exc:
                log.warning("%s: could not release the conversation lock (%s)", key, exc)

    async def _renew(
        self,
        lock: RedisLock,
        key: ConversationKey,
        owner: asyncio.Task[object] | None,
        done: asyncio.Event,
    ) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.lock_expiry / 3)
            if done.is_set():
                return
            try:
                await lock.reacquire()
            except LockNotOwnedError:
                log.error("%s: conversation lock lost (held past its expiry); stopping", key)
                if owner is not None:
                    owner.cancel()
                return
            except RedisError as exc:
                # The lock may still be ours: try again at the next renewal.
                log.warning("%s: could not renew the conversation lock (%s)", key, exc)
