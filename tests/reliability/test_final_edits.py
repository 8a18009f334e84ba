"""Finals as soon as the platform allows, under load: 200 replies streaming at once through one
bot-wide budget, each final edit going as soon as its channel's edit window has room rather than
after the edit interval. Nothing is lost, every message ends exact, no channel ever gets more edits
in a window than the platform allows (so no 429), and the budget's rate holds."""

from __future__ import annotations

import asyncio

from core.budget import EditBudget
from core.clock import FakeClock
from core.render import StreamRenderer
from tests.core.test_budget import assert_rate
from tests.core.test_render import RecordingSink

REPLIES = 200
LIMIT, WINDOW = 5, 5.0  # Discord's ~5 edits per 5 s per channel


async def test_200_replies_finals_inside_every_channel_window_and_the_budget() -> None:
    clock = FakeClock()
    budget = EditBudget(45, 1.0, burst=5, clock=clock)
    sinks = [RecordingSink(clock=clock, latency=0.05) for _ in range(REPLIES)]
    renderers = [
        StreamRenderer(
            s,
            min_interval=1.2,
            budget=budget,
            clock=clock,
            window_limit=LIMIT,
            window_seconds=WINDOW,
        )
        for s in sinks
    ]

    async def reply(i: int, r: StreamRenderer) -> str:
        text = ""
        for j in range(20 + i % 17):
            delta = f"r{i}w{j} "
            text += delta
            await r.feed(delta)
            await clock.sleep(0.05 + (i % 7) * 0.03)
        await r.finish()
        return text

    texts = await clock.run(asyncio.gather(*(reply(i, r) for i, r in enumerate(renderers))))
    for sink, text, r in zip(sinks, texts, renderers, strict=True):
        assert sink.messages == [text]  # nothing lost, the final is exact
        assert r.rate_limited == 0
        edits = [c.time for c in sink.history if c.kind == "edit"]
        assert_rate(edits, LIMIT, WINDOW)  # never a 6th edit in 5 s: no per-channel 429
    assert_rate([c.time for s in sinks for c in s.history], 45 + 5, 1.0)
