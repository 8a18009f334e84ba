"""Rate limits: edits paced per channel and bot-wide, 429s waited out without losing text."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.llm_server import FakeLLMServer, Reply

from .conftest import BotStarter, World, wait_for


def answer(i: int) -> str:
    return f"Reply number {i}: " + " ".join(f"word{j}" for j in range(12))


def script(llm: FakeLLMServer, count: int) -> None:
    for i in range(count):
        words = answer(i).split(" ")
        llm.enqueue(Reply(deltas=[w + " " for w in words[:-1]] + [words[-1]], delay=0.02))


async def run_concurrently(world: World, llm: FakeLLMServer, channels: list[str]) -> None:
    server = world.server
    script(llm, len(channels))
    prompts = await asyncio.gather(
        *(server.send_message(c, world.alice, f"question {i}") for i, c in enumerate(channels))
    )
    # The LLM stand-in answers in request order; map each prompt to the answer it got.
    await wait_for(lambda: len(llm.requests) == len(channels))
    order = [r.json["messages"][-1]["content"] for r in llm.requests]
    expected = {p.id: answer(order.index(f"question {i}")) for i, p in enumerate(prompts)}

    def complete() -> bool:
        return all([m.content for m in server.replies_to(p)] == [expected[p.id]] for p in prompts)

    await wait_for(complete, tries=3000)


async def test_forced_429s_lose_nothing(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    text = "Nothing is lost when Discord says slow down, neither per channel nor globally."
    words = text.split(" ")
    llm.enqueue(Reply(deltas=[w + " " for w in words[:-1]] + [words[-1]], delay=0.02))
    await start_bot(discord_edit_interval=0.05)
    server = world.server
    server.inject_429(2, retry_after=0.05)  # the channel's edit bucket
    server.inject_429(1, retry_after=0.05, is_global=True, methods=("PATCH",))
    prompt = await server.send_message(world.general, world.alice, "go")
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == [text])
    assert [e.is_global for e in server.rate_limited].count(True) == 1
    assert [e.is_global for e in server.rate_limited].count(False) == 2


async def test_a_global_429_on_the_first_post_loses_nothing(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    await start_bot()
    server = world.server
    server.inject_429(1, retry_after=0.05, is_global=True, methods=("POST",))
    prompt = await server.send_message(world.general, world.alice, "first")
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == ["You said: first"])
    assert len(server.rate_limited) == 1


async def test_many_concurrent_replies_stay_inside_the_limits(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    """Discord's limits (5 edits / 0.5 s per channel here, 50 requests/s per bot): the shared
    budget and the per-message interval keep 30 concurrent streams free of 429s. The budget
    leaves headroom for discord.py's own requests (login and command sync happen in the same
    second here) and for loopback jitter between a grant and the request's arrival, wide enough
    for a busy 2-core machine."""
    channels = [world.server.add_channel(world.guild, f"c{i}") for i in range(30)]
    await start_bot(discord_edit_interval=0.15, discord_requests_per_second=30)
    await run_concurrently(world, llm, channels)
    assert world.server.rate_limited == []


@pytest.mark.parametrize(
    "server_limits",
    [{"global_limit": (15, 1.0), "edit_limit": (2, 0.5)}],
    indirect=True,
)
async def test_429s_under_overload_lose_nothing(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    """The bot believes it may send 45/s but the server allows 15/s (and 2 edits per 0.5 s per
    channel): global 429s pause every stream, per-channel ones pause that channel; every reply
    still ends exact."""
    channels = [world.server.add_channel(world.guild, f"c{i}") for i in range(12)]
    await start_bot(discord_edit_interval=0.05, discord_requests_per_second=45)
    await run_concurrently(world, llm, channels)
    events = world.server.rate_limited
    assert any(e.is_global for e in events)


async def test_processes_sharing_redis_divide_the_bots_request_budget(
    start_bot: BotStarter, fresh_redis_url: str
) -> None:
    # Two bot processes (shards) on one Redis: Discord's limit is per bot, so each takes half.
    first = await start_bot(store_url=fresh_redis_url, discord_requests_per_second=40)
    second = await start_bot(store_url=fresh_redis_url, discord_requests_per_second=40)
    assert second.budget.rate == 20  # it counted both when it started
    await first.budget_share.beat()  # the first learns at its next heartbeat
    assert first.budget.rate == 20
    await second.close()  # leaves the group: the first takes the whole rate back
    await first.budget_share.beat()
    assert first.budget.rate == 40


async def test_the_final_edit_goes_when_the_channel_window_has_room_not_after_the_interval(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    """An edit interval of a minute: interim edits wait it out, but the final edit goes as soon as
    the channel's edit window (5 per 0.5 s, the stand-in's bucket here) has room - without a 429.
    Before, the final waited the whole interval and this reply would not land in time."""
    text = "The final edit lands as soon as Discord's channel bucket allows it."
    words = text.split(" ")
    llm.enqueue(Reply(deltas=[w + " " for w in words[:-1]] + [words[-1]], delay=0.02))
    await start_bot(
        discord_edit_interval=60.0, discord_channel_edits=5, discord_channel_edit_window=0.5
    )
    server = world.server
    prompt = await server.send_message(world.general, world.alice, "go")
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == [text])
    assert server.rate_limited == []


async def test_edits_inside_the_channel_window_get_no_429s(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    """A tiny edit interval: the channel window (the stand-in's 5 edits per 0.5 s) paces the
    edits of every reply, so none is refused."""
    channels = [world.server.add_channel(world.guild, f"c{i}") for i in range(5)]
    await start_bot(
        discord_edit_interval=0.01, discord_channel_edits=5, discord_channel_edit_window=0.5
    )
    await run_concurrently(world, llm, channels)
    assert world.server.rate_limited == []
