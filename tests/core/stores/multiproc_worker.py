"""A bot process for the multi-process tests: ``python multiproc_worker.py '<json args>'``.

``mode: "chat"`` builds a ``ChatEngine`` from settings (``STORE_URL`` = Redis), prints
``{"ready": true}``, waits for a line on stdin (so that both workers start together), submits
``n`` prompts to one conversation with the echo provider, and prints one JSON line per reply: its
prompt, final status, text, and the first and last wall-clock times at which it was seen
streaming and not yet done. Each such instant is inside the generation, i.e. while this process
held the conversation lock, so two replies whose [first, last] overlap ran at the same time.

``mode: "hold"`` takes the conversation lock of a ``RedisStore``, prints ``{"locked": true}``
and keeps it (renewing it) until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from core.conversations import ConversationKey, Status
from core.engine import ChatEngine, Reply
from core.settings import load_settings
from core.stores.redis_store import RedisStore


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


async def watch(reply: Reply) -> dict[str, Any]:
    samples: list[float] = []
    async for _ in reply:
        if not reply.done and reply.status is Status.STREAMING:
            samples.append(time.time())
    await reply
    return {
        "status": str(reply.status),
        "text": reply.text,
        "first": min(samples, default=None),
        "last": max(samples, default=None),
        "samples": len(samples),
    }


async def chat(args: dict[str, Any]) -> None:
    settings = load_settings(
        store_url=args["url"],
        store_lock_expiry=args["lock_expiry"],
        llmconnect_model="echo",
        user_rate_limit=0,
    )
    engine = ChatEngine(settings, env={}, options={"words": args["words"], "delay": args["delay"]})
    key = ConversationKey("multiproc", args["channel"])
    emit({"ready": True})
    await asyncio.to_thread(sys.stdin.readline)
    prompts = [f"{args['name']}-{i}" for i in range(args["n"])]
    replies = [await engine.submit(key, prompt) for prompt in prompts]
    results = await asyncio.gather(*(watch(reply) for reply in replies))
    for prompt, result in zip(prompts, results, strict=True):
        emit({"prompt": prompt, **result})
    await engine.aclose()


async def hold(args: dict[str, Any]) -> None:
    store = RedisStore(args["url"], lock_expiry=args["lock_expiry"], prefix=args["prefix"])
    async with store.lock(ConversationKey("multiproc", args["channel"])):
        emit({"locked": True})
        await asyncio.sleep(3600)


def main() -> None:
    args = json.loads(sys.argv[1])
    asyncio.run(chat(args) if args["mode"] == "chat" else hold(args))


if __name__ == "__main__":
    main()
