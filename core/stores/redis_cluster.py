"""The :class:`~core.cluster.Cluster` of several bot processes sharing one Redis.

Layout, under the store's ``prefix``:

- ``rate:<user>``: a sorted set of the user's prompt times (a sliding log, trimmed and checked
  by one Lua script, so two processes cannot both take the last slot);
- ``event:<id>``: set once (``SET NX`` with an expiry) by the first process to see an event;
- ``stop``: a pub/sub channel; a message is a conversation key (JSON) whose generation should
  stop. Only the process holding that conversation's lock acts on it;
- ``members:<group>``: a sorted set of process ids by last heartbeat.

Times are wall-clock seconds (``time.time``), the one clock processes on several machines share;
``wall`` is injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable

from redis.exceptions import RedisError

from ..conversations import ConversationKey
from .redis_store import RedisStore, key_json

__all__ = ["RedisCluster"]

log = logging.getLogger("llmconnect.cluster.redis")

# KEYS[1]: the user's log. ARGV: now, window, limit, member. Returns seconds to wait ("0": taken)
# as a string: Lua numbers become integer replies, which would round the wait down.
_TAKE_PROMPT = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tostring(tonumber(first[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return '0'
"""

#: How long a listener waits before subscribing again after losing Redis.
RESUBSCRIBE_AFTER = 1.0


class RedisCluster:
    """Several processes over one Redis database: the store's client, key prefix and locks."""

    shared = True

    def __init__(self, store: RedisStore, *, wall: Callable[[], float] = time.time) -> None:
        self.client = store.client
        self.prefix = store.prefix
        self.wall = wall
        #: This process in heartbeat groups.
        self.process_id = uuid.uuid4().hex
        self._lock_name = store.lock_name
        self._take_prompt = self.client.register_script(_TAKE_PROMPT)
        self._stops = f"{self.prefix}stop"

    def __repr__(self) -> str:
        # The URL may carry a password: never shown.
        return f"RedisCluster(prefix={self.prefix!r}, process_id={self.process_id!r})"

    async def retry_after(self, user_id: str, limit: int, window: float) -> float:
        if limit <= 0:
            return 0.0
        now = self.wall()
        wait = await self._take_prompt(
            keys=[f"{self.prefix}rate:{user_id}"],
            args=[repr(now), repr(window), limit, f"{now!r}:{uuid.uuid4().hex[:8]}"],
        )
        return max(0.0, float(wait))

    async def first_sighting(self, event_id: str, ttl: float) -> bool:
        name = f"{self.prefix}event:{event_id}"
        return bool(await self.client.set(name, self.process_id, nx=True, px=_ms(ttl)))

    async def running(self, key: ConversationKey) -> bool:
        return bool(await self.client.exists(self._lock_name(key)))

    async def request_stop(self, key: ConversationKey) -> None:
        await self.client.publish(self._stops, key_json(key))

    async def listen_stops(
        self, on_stop: Callable[[ConversationKey], None], ready: asyncio.Event
    ) -> None:
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(self._stops)
                    ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        try:
                            key = ConversationKey(*json.loads(message["data"]))
                        except (TypeError, ValueError):
                            log.warning("ignored a malformed stop request")
                            continue
                        on_stop(key)
            except (RedisError, OSError) as exc:
                if not ready.is_set():
                    raise  # never subscribed: the caller learns that Redis is away
                log.warning("stop requests: lost Redis (%s); subscribing again", exc)
                await asyncio.sleep(RESUBSCRIBE_AFTER)

    async def heartbeat(self, group: str, ttl: float) -> int:
        name = f"{self.prefix}members:{group}"
        now = self.wall()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(name, {self.process_id: now})
            pipe.zremrangebyscore(name, "-inf", now - ttl)
            pipe.zcard(name)
            pipe.pexpire(name, _ms(ttl))
            _, _, count, _ = await pipe.execute()
        return int(count)

    async def leave(self, group: str) -> None:
        with contextlib.suppress(RedisError):
            await self.client.zrem(f"{self.prefix}members:{group}", self.process_id)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
