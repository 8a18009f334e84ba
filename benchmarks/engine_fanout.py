"""Many conversations streaming at once through the whole core: ChatEngine → deliver → renderer.

Every conversation submits one prompt to a :class:`~core.engine.ChatEngine` on the offline ``echo``
provider (option ``words``: each reply is exactly ``--deltas`` deltas), all at once, and each reply
is delivered by :func:`core.delivery.deliver` — a real :class:`~core.render.StreamRenderer` per
conversation, one shared :class:`~core.budget.EditBudget` (a web-like budget; ``--budget-rate 0``
for none) and the real monotonic clock — into an in-memory sink.

Prints deltas/second (wall), CPU seconds, peak RSS, posts and edits per reply, and checks that no
delta was lost: every sink must end on exactly ``llmconnect.protocols.echo.echo_reply``'s text
(split at the sink's length limit as ``core.split.split_message`` would). Exits 1 if any was lost.

    python benchmarks/engine_fanout.py [--conversations 1000] [--deltas 500] [--min-interval 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.budget import EditBudget
from core.conversations import ConversationKey, Status
from core.delivery import deliver
from core.engine import ChatEngine
from core.render import RenderResult
from core.settings import load_settings
from core.split import split_message
from llmconnect.protocols.echo import echo_reply


class MemorySink:
    """A platform that accepts every post and edit at once and keeps the latest texts."""

    __slots__ = ("edits", "max_len", "messages", "posts")

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.messages: list[str] = []
        self.posts = 0
        self.edits = 0

    async def post(self, text: str) -> int:
        self.messages.append(text)
        self.posts += 1
        return len(self.messages) - 1

    async def edit(self, ref: Any, text: str) -> None:
        self.messages[ref] = text
        self.edits += 1


def prompt_for(n: int) -> str:
    return f"conversation {n} streams this sentence again and again"


async def run(args: argparse.Namespace) -> int:
    n, deltas = args.conversations, args.deltas
    settings = load_settings(
        _env_file=None,
        llmconnect_model="echo",
        llmconnect_system_prompt="",
        max_conversations=max(n, 1),
        user_rate_limit=0,
    )
    engine = ChatEngine(settings, env={}, options={"words": deltas})
    budget = (
        EditBudget(args.budget_rate, 1.0, burst=max(1, int(args.budget_rate) // 20))
        if args.budget_rate > 0
        else None
    )
    sinks = [MemorySink(args.max_len) for _ in range(n)]
    keys = [ConversationKey("bench", f"c{i}") for i in range(n)]

    wall0, cpu0 = time.perf_counter(), time.process_time()
    replies = [await engine.submit(keys[i], prompt_for(i)) for i in range(n)]
    results: list[RenderResult] = await asyncio.gather(
        *(
            deliver(engine, reply, sink, min_interval=args.min_interval, budget=budget)
            for reply, sink in zip(replies, sinks, strict=True)
        )
    )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await engine.aclose()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    lost = 0
    for i, (reply, sink) in enumerate(zip(replies, sinks, strict=True)):
        expected = "".join(echo_reply(prompt_for(i), deltas))
        if (
            reply.status is not Status.COMPLETE
            or reply.text != expected
            or sink.messages != split_message(expected, args.max_len)
        ):
            lost += 1
            if lost <= 3:
                print(f"LOST: conversation {i}: status {reply.status}, {len(sink.messages)} msgs")

    total = n * deltas
    edits = [r.edits for r in results]
    posts = [r.posts for r in results]
    budget_note = (
        f"shared EditBudget {args.budget_rate:g}/s (burst {budget.burst})" if budget else "none"
    )
    print(
        f"{n} conversations x {deltas} deltas = {total:,} deltas; echo provider; "
        f"min_interval {args.min_interval:g} s; budget: {budget_note}; max_len {args.max_len}"
    )
    print(f"wall            {wall:8.2f} s")
    print(f"deltas/second   {total / wall:10,.0f}")
    print(f"CPU             {cpu:8.2f} s  ({cpu / total * 1e6:.1f} us per delta)")
    print(f"peak RSS        {peak_rss_mb:8.1f} MB")
    print(f"posts per reply {statistics.mean(posts):8.2f}")
    print(
        f"edits per reply {statistics.mean(edits):8.2f} (mean), min {min(edits)}, max {max(edits)}"
    )
    if budget is not None:
        print(f"budget grants   {budget.granted:8d}")
    print(f"conversations kept in the store: {len(engine.store)}")  # type: ignore[arg-type]
    if lost:
        print(f"FAIL: {lost} of {n} replies lost deltas or did not end on their exact text")
        return 1
    print(f"OK: all {n} replies complete; every sink ends on exactly the echo text")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--deltas", type=int, default=500, help="deltas per reply (>= 4)")
    parser.add_argument("--min-interval", type=float, default=0.05, help="seconds between edits")
    parser.add_argument(
        "--budget-rate", type=float, default=2000, help="shared edits/s (0: no budget)"
    )
    parser.add_argument("--max-len", type=int, default=100_000, help="sink message length limit")
    args = parser.parse_args()
    if args.deltas < 4 or args.conversations < 1:
        parser.error("need --conversations >= 1 and --deltas >= 4")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
