"""Platform faults through the real bots: 429 on an edit, 500 on a post, the reply deleted while
it streams, a dropped connection. The user must end up with the whole reply (or, when the reply
was deleted, nothing more), and the history sent next time must stay consistent."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.discord import ChannelSink, DiscordBot, DiscordRest, DiscordRestError, DiscordSettings
from bots.slack.sink import SlackSink
from core.clock import FakeClock
from core.conversations import Status
from core.engine import ChatEngine
from core.render import TRANSIENT_RETRIES, TRANSIENT_WAIT, MessageSink, StreamRenderer
from core.settings import load_settings
from tests.bots.slack.conftest import CHANNEL as SLACK_CHANNEL
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import (
    MARKER,
    PLATFORMS,
    Chat,
    ChatMaker,
    DiscordChat,
    SlackChat,
    World,
    assert_consistent,
    chat_messages,
    wait_for,
)

_T = TypeVar("_T")

ANSWER = " ".join(f"token{i}" for i in range(40))


class FaultySlackAPI(FakeSlackAPI):
    """The Slack stand-in plus injected HTTP failures: a status, or a dropped connection."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: method -> statuses to answer its next calls with (0: close the connection).
        self.faults: dict[str, list[int]] = defaultdict(list)
        self.injected: list[tuple[str, int]] = []

    def inject(self, method: str, status: int, count: int = 1) -> None:
        self.faults[method].extend([status] * count)

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if self.faults.get(method):
            status = self.faults[method].pop(0)
            self.injected.append((method, status))
            await request.read()
            if status == 0:
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            headers = {"Retry-After": "0.05"} if status == 429 else {}
            error = "ratelimited" if status == 429 else "internal_error"
            return web.json_response({"ok": False, "error": error}, status=status, headers=headers)
        return await super()._api(request)


@pytest.fixture
async def slack_api() -> AsyncIterator[FakeSlackAPI]:
    """Replaces the adapter tests' stand-in (same settings) with the faulty one."""
    async with FaultySlackAPI(admins=("U0ADMIN",)) as api:
        yield api


def slow(text: str = ANSWER, **kwargs: Any) -> Reply:
    return Reply(text=text, delay=0.01, **kwargs)


async def follow_up_is_consistent(chat: Chat) -> None:
    nxt = await chat.ask("and now?")
    await chat.answer(nxt, "You said: and now?")
    last = chat_messages(chat.llm)[-1]
    assert last[-1] == {"role": "user", "content": "and now?"}
    assert_consistent(last)


async def test_429_on_edit_loses_nothing(make_chat: ChatMaker) -> None:
    chat = await make_chat()
    if isinstance(chat, SlackChat):
        assert isinstance(chat.api, FaultySlackAPI)
        chat.api.inject("chat.update", 429, count=3)
    else:
        assert isinstance(chat, DiscordChat)
        chat.server.inject_429(3, retry_after=0.05, methods=("PATCH",))
    chat.llm.enqueue(slow())
    asked = await chat.ask("question one")
    await chat.answer(asked, ANSWER)
    if isinstance(chat, SlackChat):
        assert ("chat.update", 429) in chat.api.injected  # type: ignore[attr-defined]
    else:
        assert any(e.method == "PATCH" for e in chat.server.rate_limited)
    await follow_up_is_consistent(chat)


async def test_500_on_post_is_retried_and_the_reply_arrives(make_chat: ChatMaker) -> None:
    chat = await make_chat()
    if isinstance(chat, SlackChat):
        chat.api.inject("chat.postMessage", 500)  # type: ignore[attr-defined]
    else:
        assert isinstance(chat, DiscordChat)
        chat.server.inject_error(500, 1, methods=("POST",))
    chat.llm.enqueue(slow())
    asked = await chat.ask("question one")
    await chat.answer(asked, ANSWER, tries=3000)
    if isinstance(chat, SlackChat):
        assert chat.api.injected == [("chat.postMessage", 500)]  # type: ignore[attr-defined]
    await follow_up_is_consistent(chat)


async def test_a_reply_deleted_mid_stream_stops_the_generation_quietly(
    make_chat: ChatMaker,
) -> None:
    chat = await make_chat()
    # Still streaming when deleted: Slack tells the bot nothing, its next edit finds out.
    chat.llm.enqueue(Reply(text=" ".join(f"t{i}" for i in range(1000)), delay=0.01))
    asked = await chat.ask("question one")
    await wait_for(lambda: bool(chat.shown(asked)))
    if isinstance(chat, SlackChat):
        ((channel, ts),) = [k for k in chat.api.messages if k not in asked.seen]
        del chat.api.messages[(channel, ts)]  # someone deleted the answer
    else:
        assert isinstance(chat, DiscordChat)
        await chat.server.delete_message(chat.server.replies_to(asked.ref)[0].id)
    await wait_for(lambda: chat.llm.disconnects == 1)  # the LLM stream was closed
    await wait_for(lambda: not chat.engine.is_busy(chat.key) and chat.idle())
    reply = chat.engine.reply_for(chat.key)
    assert reply is not None
    assert reply.status is Status.CANCELLED
    assert chat.shown(asked) == []  # nothing was posted in its place
    await follow_up_is_consistent(chat)


async def test_slack_dropped_connection_on_update_is_retried(
    make_bot: Any, slack_api: FaultySlackAPI, llm: FakeLLMServer
) -> None:
    """The Web API connection drops mid-stream (no answer at all): slack-sdk reconnects and the
    renderer carries on with the latest text."""
    chat = SlackChat(await make_bot(slack_streaming="update"), slack_api, llm)
    slack_api.inject("chat.update", 0, count=2)
    llm.enqueue(slow())
    asked = await chat.ask("question one")
    await chat.answer(asked, ANSWER)
    assert [s for _, s in slack_api.injected] == [0, 0]
    await follow_up_is_consistent(chat)


async def test_discord_gateway_drop_mid_stream_keeps_streaming_and_reconnects(
    world: World, llm: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    """The gateway connection drops while a reply streams (REST is unaffected): the reply
    completes, the client resumes, and the next mention is answered."""
    values: dict[str, object] = {
        "discord_api_url": world.server.api_url,
        "discord_gateway_url": world.server.gateway_url,
        "discord_edit_interval": 0.12,
        "llmconnect_model": "local/alpha",
        "user_rate_limit": 0,
    }
    settings = load_settings(**values)
    engine = ChatEngine(settings, env={"LOCAL_BASE_URL": llm.openai_base_url}, http_client=http)
    bot = DiscordBot(
        load_settings(DiscordSettings, **values),
        engine,
        out=io.StringIO(),
        guild_ready_timeout=0.01,
    )
    await bot.login(world.server.token)
    task = asyncio.create_task(bot.connect(reconnect=True))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 10)
        chat = DiscordChat(bot, world, llm)
        llm.enqueue(Reply(text=ANSWER, delay=0.03))
        asked = await chat.ask("question one")
        await wait_for(lambda: bool(chat.shown(asked)))
        for ws in list(world.server._sockets):
            await ws.close(code=1001)  # the gateway goes away mid-stream
        await chat.answer(asked, ANSWER, tries=3000)
        assert not any(MARKER in t for t in chat.shown(asked))
        await wait_for(lambda: bool(world.server._gateways), tries=3000)  # resumed
        await follow_up_is_consistent(chat)
    finally:
        await bot.close()
        await engine.aclose()
        await asyncio.wait_for(task, 10)


async def test_a_refused_edit_stops_the_generation(make_chat: ChatMaker) -> None:
    """The platform refuses the edits for good (not a 429, not a 5xx): nobody can see the rest,
    so the LLM stream is closed instead of generating for nothing, and the bot carries on."""
    chat = await make_chat()
    if isinstance(chat, SlackChat):
        chat.api.fail["chat.update"] = "restricted_action"
    else:
        assert isinstance(chat, DiscordChat)
        chat.server.inject_error(403, 1, methods=("PATCH",))
    chat.llm.enqueue(Reply(text=" ".join(f"t{i}" for i in range(1000)), delay=0.01))
    asked = await chat.ask("question one")
    await wait_for(lambda: chat.llm.disconnects == 1)
    await wait_for(lambda: not chat.engine.is_busy(chat.key) and chat.idle())
    reply = chat.engine.reply_for(chat.key)
    assert reply is not None
    assert reply.status is Status.CANCELLED
    assert len(chat.shown(asked)) == 1  # the first post, as far as it got
    if isinstance(chat, SlackChat):
        del chat.api.fail["chat.update"]
    await follow_up_is_consistent(chat)


async def _drive(clock: FakeClock, aw: Awaitable[_T], tries: int = 1500) -> _T:
    """Await ``aw`` whose sink talks to a stand-in over loopback while the renderer waits on
    ``clock``: whenever it sleeps on the clock, move the clock to that deadline."""
    task = asyncio.ensure_future(aw)
    for _ in range(tries):
        done, _pending = await asyncio.wait({task}, timeout=0.01)
        if done:
            return task.result()
        deadline = clock.next_deadline()
        if deadline is not None:
            await clock.advance_to(deadline)
    task.cancel()
    raise AssertionError("the renderer never finished")


FaultySink = Callable[
    [FakeClock], contextlib.AbstractAsyncContextManager[tuple[MessageSink, Callable[[int], None]]]
]


@pytest.fixture(params=PLATFORMS)
def faulty_sink(request: pytest.FixtureRequest) -> FaultySink:
    """``async with faulty_sink(clock) as (sink, fail)``: the platform's real sink against its
    stand-in, and ``fail(n)``: its next ``n`` posts are answered with a 500. A plain fixture, so
    that it can pull the platform's async fixtures by name."""
    if request.param == "slack":
        api: FaultySlackAPI = request.getfixturevalue("slack_api")

        @contextlib.asynccontextmanager
        async def make_slack(
            clock: FakeClock,
        ) -> AsyncIterator[tuple[MessageSink, Callable[[int], None]]]:
            client = AsyncWebClient(token=api.bot_token, base_url=api.api_url)
            yield SlackSink(client, SLACK_CHANNEL), lambda n: api.inject("chat.postMessage", 500, n)

        return make_slack
    world: World = request.getfixturevalue("world")

    @contextlib.asynccontextmanager
    async def make_discord(
        clock: FakeClock,
    ) -> AsyncIterator[tuple[MessageSink, Callable[[int], None]]]:
        rest = DiscordRest(world.server.api_url, clock=clock)
        rest.open(SecretStr(world.server.token))
        try:
            yield (
                ChannelSink(rest, world.general),
                lambda n: world.server.inject_error(500, n, methods=("POST",)),
            )
        finally:
            await rest.close()

    return make_discord


async def test_a_500_is_retried_by_the_renderer_and_not_counted_as_a_rate_limit(
    faulty_sink: FaultySink,
) -> None:
    """A server error is not a 429: the sink only says "transient", the renderer waits a little
    longer each time (1 s, then 2 s) and counts it apart from rate limits."""
    clock = FakeClock()
    async with faulty_sink(clock) as (sink, fail):
        fail(2)
        renderer = StreamRenderer(sink, min_interval=0.5, clock=clock)
        await renderer.feed(ANSWER)
        result = await _drive(clock, renderer.finish())
    assert result.texts == (ANSWER,)
    assert (renderer.rate_limited, renderer.transient) == (0, 2)
    assert clock.now() == TRANSIENT_WAIT * (1 + 2)


async def test_a_lasting_500_stops_the_reply_with_the_platform_error(
    faulty_sink: FaultySink,
) -> None:
    """Past the retries the sink's own error (not a rate limit) ends the reply: nothing hangs."""
    clock = FakeClock()
    async with faulty_sink(clock) as (sink, fail):
        fail(TRANSIENT_RETRIES + 1)
        renderer = StreamRenderer(sink, min_interval=0.5, clock=clock)
        await renderer.feed(ANSWER)
        with pytest.raises((DiscordRestError, SlackApiError)):
            await _drive(clock, renderer.finish())
    assert (renderer.rate_limited, renderer.transient) == (0, TRANSIENT_RETRIES + 1)
    assert renderer.texts == []
