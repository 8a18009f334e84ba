"""Several bot processes on one Redis: one generation at a time per conversation across all of
them, every turn kept in order, and a crashed worker's lock taken over after its expiry.

The workers are real processes (``multiproc_worker.py``) running a real ``ChatEngine`` with the
echo provider against a real ``redis-server``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from core.conversations import ConversationKey, Status
from core.stores.redis_store import RedisStore
from llmconnect.protocols.echo import echo_reply

WORKER = Path(__file__).with_name("multiproc_worker.py")


async def spawn(args: dict[str, Any], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        json.dumps(args),
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def read_record(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    assert line, f"worker ended early (exit code {await proc.wait()})"
    return json.loads(line)


async def test_workers_never_generate_at_once_and_keep_every_turn(redis_url: str, tmp_path: Path):
    channel = f"shared-{uuid.uuid4().hex}"
    n, words = 3, 20
    # The lock expires well before a generation ends (20 words x 30 ms): without renewal the
    # other worker would take it mid-stream.
    common = {"mode": "chat", "url": redis_url, "channel": channel, "n": n}
    common |= {"words": words, "delay": 0.03, "lock_expiry": 0.3}
    workers = [await spawn({**common, "name": name}, tmp_path) for name in ("a", "b")]
    try:
        for proc in workers:
            assert await read_record(proc) == {"ready": True}
        for proc in workers:  # both start submitting at (nearly) the same time
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        results = [[await read_record(proc) for _ in range(n)] for proc in workers]
        assert [await proc.wait() for proc in workers] == [0, 0]
    finally:
        for proc in workers:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    replies = [r for rs in results for r in rs]
    assert all(r["status"] == "complete" for r in replies), replies
    assert all(r["text"] == "".join(echo_reply(r["prompt"], words)) for r in replies)
    # Each worker saw each of its replies streaming (and not done) at least once; the span
    # between those sightings lies inside a generation, under the lock: no two may overlap.
    assert all(r["samples"] > 0 for r in replies)
    spans = sorted((r["first"], r["last"], r["prompt"]) for r in replies)
    for (_, end, before), (start, _, after) in itertools.pairwise(spans):
        assert end < start, f"{before} and {after} were generated at the same time"

    store = RedisStore(redis_url)
    try:
        conversation = await store.get(ConversationKey("multiproc", channel))
        assert conversation is not None
        messages = conversation.messages
        assert [m.role for m in messages] == ["user", "assistant"] * (2 * n)
        assert all(m.status is Status.COMPLETE for m in messages)
        prompts = [m.content for m in messages[::2]]
        assert sorted(prompts) == sorted(f"{w}-{i}" for w in "ab" for i in range(n))
        for worker in "ab":  # each worker's turns in the order it sent them
            assert [p for p in prompts if p[0] == worker] == [f"{worker}-{i}" for i in range(n)]
        for question, answer in zip(messages[::2], messages[1::2], strict=True):
            assert answer.content == "".join(echo_reply(question.content, words))
        # The stored order is the order the generations ran in.
        assert prompts == [prompt for _, _, prompt in spans]
    finally:
        await store.client.delete(
            store._name("conv", ConversationKey("multiproc", channel)), store._index
        )
        await store.aclose()


async def test_a_killed_workers_lock_is_taken_over_after_its_expiry(redis_url: str, tmp_path: Path):
    prefix, channel = f"test:{uuid.uuid4().hex}:", "crashy"
    key = ConversationKey("multiproc", channel)
    args = {"mode": "hold", "url": redis_url, "channel": channel, "prefix": prefix}
    holder = await spawn({**args, "lock_expiry": 0.6}, tmp_path)
    store = RedisStore(redis_url, prefix=prefix, lock_expiry=5, lock_poll=0.02)
    name = store.lock_name(key)
    try:
        assert await read_record(holder) == {"locked": True}
        # Held, and renewed while its holder lives: the time left goes back up.
        contender = store.client.lock(name, timeout=5)
        assert not await contender.acquire(blocking=False)
        lowest = await store.client.pttl(name)
        for _ in range(500):
            left = await store.client.pttl(name)
            if left > lowest:
                break
            lowest = min(lowest, left)
            await asyncio.sleep(0.01)
        assert left > lowest, "the holder never renewed its lock"

        holder.kill()  # no clean release: the lock stays until it expires
        await holder.wait()
        assert await store.client.exists(name)
        async with asyncio.timeout(30), store.lock(key):
            assert await store.client.exists(name)  # ours now
        assert not await store.client.exists(name)  # and released
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await store.aclose()


async def test_a_lock_lost_mid_generation_stops_that_generation(redis_url: str):
    """Should a holder stall past the expiry and another take the lock, the stalled one stops
    rather than stream alongside (its renewal finds the lock gone)."""
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore(redis_url, prefix=prefix, lock_expiry=0.3)
    key = ConversationKey("multiproc", "stolen")
    entered = asyncio.Event()

    async def hold_forever() -> None:
        async with store.lock(key):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hold_forever())
    try:
        await entered.wait()
        # Another worker takes over (as if this one had stalled past the expiry).
        await store.client.set(store.lock_name(key), b"someone-else")
        done, _ = await asyncio.wait([task], timeout=30)
        assert task in done
        assert task.cancelled()
        assert await store.client.get(store.lock_name(key)) == b"someone-else"
    finally:
        task.cancel()
        await asyncio.wait([task])
        await store.client.delete(store.lock_name(key))
        await store.aclose()
