"""Load: hundreds of conversations streaming at once through the real Slack and Discord bots.

Three processes on loopback (``fork``):

- the LLM stand-in (``tests/fakes/llm_server.py``) in a child process, so its CPU is not counted:
  every reply echoes its prompt (``You said: <prompt>``: ``--tokens`` words plus two) as one SSE
  event per word, paced at a fixed rate per reply drawn from 2/3..4/3 of ``--rate`` tokens/s
  (30-60 tokens/s by default), the first word ``--ttft`` seconds after the request;
- the platform stand-ins (``tests/fakes/discord_server.py`` and ``tests/fakes/slack_api.py``,
  rate limits on) in a second child process, which also plays the users: each conversation is one
  channel where one user mentions the bot (Discord ``MESSAGE_CREATE`` on the gateway, a signed
  Slack ``app_mention`` posted to the bot's HTTP endpoint), the mentions spread over ``--ramp`` s;
- this process, the one measured: one :class:`~bots.discord.DiscordBot` (real discord.py client)
  and one :class:`~bots.slack.SlackBot` (slack-bolt over HTTP; top-level mentions are answered by
  ``chat.postMessage`` + ``chat.update``) sharing one :class:`~core.engine.ChatEngine` (by
  default on llmconnect's production LLM connection pool, see ``--llm-transport``), with
  production settings (edit intervals, Discord's 45 requests/s bot-wide budget).

Timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on Linux): the
LLM stand-in's write time of each reply's first and last content event, and the platform
stand-ins' receive time of each bot message's post and of its last change.

Prints completed replies, replies whose visible text is not exactly what the LLM sent, 429s, the
latency the bot adds before the first delta is visible and after the last one (p50/p99), CPU
seconds of this process per 1,000 deltas, its event-loop lag and its peak RSS. Exits 1 if any reply
is lost or differs.

First-visible latency is split into the *budget floor* (the wait a reply's first post cannot avoid
under the platform's request budget, given the order in which the first LLM chunks arrived: the
k-th of 200 simultaneous first posts at 45 requests/s goes out ~k/45 s later) and the latency above
it, which is what the bot adds. ``--ramp auto`` spreads the users over long enough that the
replies' requests use about half of each budget, so the budget is not the bottleneck.
``--llm-transport`` chooses how the bots read the LLM: ``pool`` (the default) is llmconnect's
production pool (no ``http_client=``: ``shared_http_client()``, httpx's API on aiohttp's
connections and C parser via ``httpx-aiohttp``); ``httpx`` passes the engine a plain
``httpx.AsyncClient`` on httpx's own transport (httpcore + anyio + h11, no connection cap), which is
what the pool was before, and what a caller passing its own ``http_client=`` still gets.
``--loop both`` runs the bots' process on asyncio's loop and on uvloop, ``--llm-transport both`` on
both transports; with ``--repeat N`` the alternatives run alternately (A, B, B, A, ...) and the runs
are printed side by side.

    python benchmarks/load.py [--conversations 500] [--split 0.5] [--tokens 300] [--rate 45]
                              [--ramp SECONDS|auto] [--loop asyncio|uvloop|both] [--repeat N]
                              [--llm-transport pool|httpx|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import logging
import math
import multiprocessing as mp
import os
import random
import resource
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import httpx
from aiohttp import web

from bots.discord import DiscordBot, DiscordSettings
from bots.slack import EVENTS_PATH, SlackBot, SlackSettings
from bots.slack.mrkdwn import to_mrkdwn
from bots.slack.sink import UPDATE_MAX_LEN
from core.conversations import ConversationKey
from core.engine import ChatEngine
from core.settings import Settings, load_settings
from core.split import split_message
from llmconnect import Timeouts, aclose_shared_clients
from tests.bots.slack.conftest import SlackClient, slack_settings
from tests.fakes.discord_server import FakeDiscordServer, StoredMessage
from tests.fakes.llm_server import FakeLLMServer, _Outcome, split_deltas
from tests.fakes.slack_api import SLACK_LIMITS, Call, FakeSlackAPI, Message

try:  # what llmconnect's runner does once the front ends are up (absent from earlier checkouts)
    from bots.run import settle_heap
except ImportError:
    settle_heap = None

MODEL = "alpha"
DISCORD_MAX_LEN = 2000
#: Plain words (Slack's mrkdwn conversion leaves them unchanged) the prompts are made of.
WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
)
POLL = 0.1  # seconds between checks whether every reply is done
#: ``--llm-transport`` choices: how the bots' process reads the LLM.
TRANSPORTS = {
    "pool": "pool (llmconnect's shared pool: httpx-aiohttp)",
    "httpx": "httpx (own http_client=: httpcore + anyio + h11)",
}

#: One visible bot message: (text, receive time of its post, receive time of its last change).
Shown = tuple[str, float, float]


def prompt_for(i: int, tokens: int) -> str:
    """Conversation ``i``'s prompt: ``q<i>`` and ``tokens - 1`` words (the LLM echoes it)."""
    rnd = random.Random(i)
    return " ".join([f"q{i}", *(rnd.choice(WORDS) for _ in range(tokens - 1))])


def reply_for(prompt: str) -> str:
    """What the LLM stand-in answers to ``prompt`` (its default ``Reply()``)."""
    return f"You said: {prompt}"


def rate_for(i: int, rate: float) -> float:
    """Conversation ``i``'s tokens/s: fixed per reply, between 2/3 and 4/3 of ``rate``."""
    return rate * random.Random(-1 - i).uniform(2 / 3, 4 / 3)


def platforms(n: int, split: float) -> list[str]:
    """``"slack"`` or ``"discord"`` per conversation, the Slack ones evenly interleaved."""
    return ["slack" if int((i + 1) * split) > int(i * split) else "discord" for i in range(n)]


def slack_channel(i: int) -> str:
    return f"C{i:07d}"


# --------------------------------------------------------------------------- LLM child


class PacedLLMServer(FakeLLMServer):
    """The LLM stand-in, pacing each reply at its own rate and noting when deltas were written."""

    def __init__(self, rate: float, ttft: float) -> None:
        super().__init__(models=[MODEL])
        self.rate = rate
        self.ttft = ttft
        #: conversation id (``q<i>``) -> (write time of the first content event, of the last).
        self.times: dict[str, tuple[float, float]] = {}

    async def _chat(
        self,
        request: web.Request,
        protocol: Any,
        ctx: Any,
        *,
        stream: bool,
        json_array: bool = False,
    ) -> web.StreamResponse:
        request["bench_prompt"] = ctx.prompt
        return await super()._chat(request, protocol, ctx, stream=stream, json_array=json_array)

    async def _write_events(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        plan: Any,
        write_sizes: Any,
        delay: float,
    ) -> _Outcome:
        """One event per write: the role preamble at once, content event k at ttft + k / rate."""
        prompt: str = request["bench_prompt"]
        qid = prompt.split(" ", 1)[0]
        n = len(split_deltas(reply_for(prompt)))  # the content events are events[1 : n + 1]
        interval = 1.0 / rate_for(int(qid[1:]), self.rate)
        loop = asyncio.get_running_loop()
        start = loop.time() + self.ttft
        first = last = 0.0
        for k, event in enumerate(plan.events):
            if 1 <= k <= n:
                wait = start + (k - 1) * interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            await resp.write(event)
            if k == 1:
                first = time.monotonic()
            elif k == n:
                last = time.monotonic()
        self.times[qid] = (first, last)
        return _Outcome.DONE


def _serve_llm(conn: Connection, rate: float, ttft: float) -> None:
    """Child process: serve until told to stop; answer with the recorded send times."""

    async def main() -> None:
        server = await PacedLLMServer(rate, ttft).start()
        conn.send(server.openai_base_url)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # "times"
        conn.send(server.times)
        await loop.run_in_executor(None, conn.recv)  # "stop"
        await server.close()

    with contextlib.suppress(EOFError, KeyboardInterrupt):
        asyncio.run(main())


# --------------------------------------------------------------------------- platform child


class TimedDiscord(FakeDiscordServer):
    """The Discord stand-in, noting when each bot message was posted and last changed."""

    def __init__(self) -> None:
        super().__init__()  # Discord's limits: 5 creates and 5 edits / 5 s per channel, 50/s
        self.times: dict[str, list[float]] = {}
        #: Receive time of every request the bot-wide window counts.
        self.limited_times: list[float] = []

    def _store(self, channel_id: str, body: dict[str, Any], **kwargs: Any) -> StoredMessage:
        message = super()._store(channel_id, body, **kwargs)
        now = time.monotonic()
        self.times[message.id] = [now, now]
        return message

    def _limit_global(self, request: web.Request) -> web.Response | None:
        self.limited_times.append(time.monotonic())  # every request the 50/s window counts
        return super()._limit_global(request)

    def _edit(self, message: StoredMessage, body: dict[str, Any]) -> None:
        before = message.content
        super()._edit(message, body)
        if message.content != before:
            self.times[message.id][1] = time.monotonic()


class TimedSlack(FakeSlackAPI):
    """The Slack stand-in, noting when each bot message was posted and last changed."""

    def __init__(self, update_interval: float, limits: bool) -> None:
        # With ``limits``: Slack's per-method limits too (chat.update 50/min per workspace...).
        super().__init__(limits=SLACK_LIMITS if limits else None)
        self.update_interval = update_interval  # 429 when one message is updated faster
        self.times: dict[tuple[str, str], list[float]] = {}

    def _store(self, message: Message) -> None:
        super()._store(message)
        now = time.monotonic()
        self.times[(message.channel, message.ts)] = [now, now]

    def _m_chat_update(self, call: Call) -> Any:
        key = (call.args.get("channel", ""), call.args.get("ts", ""))
        message = self.messages.get(key)
        before = message.text if message is not None else None
        result = super()._m_chat_update(call)
        if message is not None and message.text != before:
            self.times[key][1] = time.monotonic()
        return result


@dataclass
class PlatformReport:
    """What the platform child hands back: every conversation's messages, 429s, request counts."""

    shown: list[list[Shown]]
    discord_429: int
    discord_429_global: int
    slack_429: int
    discord_requests: int
    slack_calls: int
    #: Receive times of the Discord requests the bot-wide 50/s window counts.
    discord_times: list[float] = field(default_factory=list)


async def _users(
    discord: TimedDiscord,
    user: str,
    channels: dict[int, str],
    slack: SlackClient,
    plan: list[str],
    tokens: int,
    ramp: float,
) -> None:
    """Each conversation's user mentions the bot once, spread over ``ramp`` seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sends: list[asyncio.Task[Any]] = []
    for i, platform in enumerate(plan):
        wait = start + ramp * i / len(plan) - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        prompt = prompt_for(i, tokens)
        if platform == "discord":
            coro: Any = discord.send_message(channels[i], user, prompt)
        else:
            coro = slack.mention(prompt, channel=slack_channel(i), user=f"U{i:07d}")
        sends.append(asyncio.create_task(coro))
    await asyncio.gather(*sends)


def _report(
    discord: TimedDiscord, slack: TimedSlack, plan: list[str], channels: dict[int, str]
) -> PlatformReport:
    shown: list[list[Shown]] = []
    for i, platform in enumerate(plan):
        if platform == "discord":
            found = [(m.content, *discord.times[m.id]) for m in discord.bot_messages(channels[i])]
        else:
            found = [
                (m.text, *slack.times[(m.channel, m.ts)]) for m in slack.thread(slack_channel(i))
            ]
        shown.append([(str(text), float(t0), float(t1)) for text, t0, t1 in found])
    events = discord.rate_limited
    return PlatformReport(
        shown=shown,
        discord_429=sum(1 for e in events if not e.is_global),
        discord_429_global=sum(1 for e in events if e.is_global),
        slack_429=sum(1 for c in slack.calls if c.status == 429),
        discord_requests=len(discord.requests),
        slack_calls=len(slack.calls),
        discord_times=list(discord.limited_times),
    )


def _serve_platforms(
    conn: Connection,
    plan: list[str],
    tokens: int,
    ramp: float,
    slack_interval: float,
    slack_limits: bool,
) -> None:
    """Child process: run both stand-ins, play the users when told, then report."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with TimedDiscord() as discord, TimedSlack(slack_interval, slack_limits) as slack:
            guild = discord.add_guild("Load")
            user = discord.add_member(guild, "user")
            channels = {
                i: discord.add_channel(guild, f"c{i}") for i, p in enumerate(plan) if p == "discord"
            }
            conn.send((discord.api_url, discord.gateway_url, discord.token, slack.port))
            events_url = await loop.run_in_executor(None, conn.recv)
            async with aiohttp.ClientSession() as session:
                client = SlackClient(events_url, session, slack)
                await _users(discord, user, channels, client, plan, tokens, ramp)
                await loop.run_in_executor(None, conn.recv)  # "report"
                conn.send(_report(discord, slack, plan, channels))
                await loop.run_in_executor(None, conn.recv)  # "stop"

    with contextlib.suppress(EOFError, KeyboardInterrupt):
        asyncio.run(main())


# --------------------------------------------------------------------------- the bots


@dataclass
class BotRun:
    """What this process measured about itself."""

    wall: float
    cpu: float
    finished: bool
    discord_rest_requests: int
    discord_rest_429: int
    #: (rate, per, burst) of the bot's budgets: Discord's bot-wide one, Slack's workspace one.
    budgets: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    #: How late each 10 ms heartbeat of this process's event loop woke up, in seconds.
    lags: list[float] = field(default_factory=list)
    #: Garbage collections of this process during the run: generation -> (count, CPU seconds,
    #: longest pause in wall seconds).
    gc: dict[int, tuple[int, float, float]] = field(default_factory=dict)
    #: Busy core-seconds of the whole machine (``/proc/stat``) during the run; NaN if unknown.
    machine_cpu: float = float("nan")


class GCWatch:
    """Counts this process's garbage collections and the CPU and pause time they take."""

    def __init__(self) -> None:
        self.stats: dict[int, list[float]] = {0: [0, 0.0, 0.0], 1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}
        self._cpu = self._wall = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._cpu, self._wall = time.thread_time(), time.perf_counter()
            return
        entry = self.stats[info["generation"]]
        entry[0] += 1
        entry[1] += time.thread_time() - self._cpu
        entry[2] = max(entry[2], time.perf_counter() - self._wall)

    def __enter__(self) -> GCWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def result(self) -> dict[int, tuple[int, float, float]]:
        return {g: (int(n), cpu, pause) for g, (n, cpu, pause) in self.stats.items()}


def machine_busy() -> float:
    """Busy core-seconds of the whole machine since boot (``/proc/stat``); NaN if unknown."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def _heartbeat(lags: list[float], period: float = 0.01) -> None:
    """Event-loop lag: how much later than asked a ``period`` sleep returns."""
    loop = asyncio.get_running_loop()
    while True:
        t0 = loop.time()
        await asyncio.sleep(period)
        lags.append(max(0.0, loop.time() - t0 - period))


def llm_http_client(transport: str) -> httpx.AsyncClient | None:
    """The ``http_client=`` the engine gets for ``--llm-transport``.

    ``pool``: ``None``, i.e. llmconnect's production pool (``shared_http_client()``: httpx's API
    on aiohttp's connections, ``httpx-aiohttp``). ``httpx``: a plain ``httpx.AsyncClient`` on
    httpx's own transport (httpcore + anyio + h11), set up as the pool was before it moved to
    aiohttp: no connection cap, llmconnect's timeouts.
    """
    if transport == "pool":
        return None
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        timeout=Timeouts().to_httpx(),
        follow_redirects=False,
    )


async def run_bots(
    args: argparse.Namespace,
    plan: list[str],
    llm_url: str,
    platform: Connection,
    transport: str,
) -> BotRun:
    """Start both bots on one engine, let the users in, wait (bounded) until every reply is done."""
    discord_api, gateway, token, slack_port = platform.recv()
    stub = FakeSlackAPI()  # not started: only its tokens and the child's port, for the settings
    stub.port = slack_port
    slack_defaults = {k: f.default for k, f in SlackSettings.model_fields.items()}
    values: dict[str, object] = {
        "slack_edit_interval": slack_defaults["slack_edit_interval"],
        # With the stand-in enforcing Slack's limits the bot runs on its defaults (the same
        # numbers); without, on --slack-rate for posts and updates alike.
        "slack_workspace_edit_rate": args.slack_rate,
        "slack_workspace_post_rate": (
            slack_defaults.get("slack_workspace_post_rate")
            if args.slack_limits
            else args.slack_rate
        ),
        # The test settings this builds on turn these off; the bot's own defaults apply here.
        "slack_channel_post_rate": slack_defaults.get("slack_channel_post_rate"),
        "slack_channel_post_burst": slack_defaults.get("slack_channel_post_burst"),
        "slack_stream_rate": slack_defaults.get("slack_stream_rate"),
        "discord_api_url": discord_api,
        "discord_gateway_url": gateway,
        "llmconnect_model": f"local/{MODEL}",
        "max_conversations": max(len(plan), 1),
    }
    known = {*Settings.model_fields, *SlackSettings.model_fields, *DiscordSettings.model_fields}
    # Only the settings this version has: the same benchmark runs on an earlier checkout.
    values = {k: v for k, v in values.items() if k in known}
    settings, slack_only = slack_settings(stub, **values)
    http = llm_http_client(transport)
    engine = ChatEngine(settings, env={"LOCAL_BASE_URL": llm_url}, http_client=http)
    discord_bot = DiscordBot(
        load_settings(DiscordSettings, **values),
        engine,
        out=io.StringIO(),
        guild_ready_timeout=0.01,
    )
    await discord_bot.login(token)
    connection = asyncio.create_task(discord_bot.connect(reconnect=False))
    await asyncio.wait_for(discord_bot.wait_until_ready(), 30)
    slack_bot = SlackBot(slack_only, engine)
    port = await slack_bot.serve_http("127.0.0.1", 0)
    if settle_heap is not None:
        settle_heap()  # as the process's runner does once every front end started

    keys = [
        ConversationKey("slack", slack_channel(i))
        if p == "slack"
        else ConversationKey("discord", "")  # filled in below from the bot's view
        for i, p in enumerate(plan)
    ]
    discord_channels = sorted(
        (ch for g in discord_bot.guilds for ch in g.text_channels), key=lambda ch: ch.id
    )
    it = iter(discord_channels)
    keys = [
        k if k.platform == "slack" else ConversationKey("discord", str(next(it).id)) for k in keys
    ]

    def done() -> bool:
        if discord_bot.streaming or slack_bot._tasks:
            return False
        for key in keys:
            reply = engine.reply_for(key)
            if reply is None or not reply.done:
                return False
        return True

    slowest = args.rate * 2 / 3
    deadline = args.ramp + args.ttft + (args.tokens + 2) / slowest + args.grace
    lags: list[float] = []
    heartbeat = asyncio.create_task(_heartbeat(lags))
    wall0, cpu0, machine0 = time.perf_counter(), time.process_time(), machine_busy()
    platform.send(f"http://127.0.0.1:{port}{EVENTS_PATH}")
    finished = False
    with GCWatch() as collections:
        for _ in range(int(deadline / POLL) + 1):
            await asyncio.sleep(POLL)
            if done():
                finished = True
                break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    machine = machine_busy() - machine0
    heartbeat.cancel()
    rest = discord_bot.rest
    requests, limited = rest.requests, rest.rate_limited
    slack_budgets = next(iter(slack_bot._budgets.values()), None)
    # First posts: Discord's bot-wide budget, Slack's workspace posts; finals: the same on
    # Discord, Slack's workspace updates (a version with one Slack budget: that one for both).
    budgets = {
        name: (b.rate, b.per, b.burst)
        for name, b in (
            ("discord", discord_bot.budget),
            ("slack", getattr(slack_budgets, "posts", slack_budgets)),
            ("discord final", discord_bot.budget),
            ("slack final", getattr(slack_budgets, "updates", slack_budgets)),
        )
        if b is not None
    }
    await slack_bot.aclose()
    await discord_bot.close()
    await engine.aclose()
    await asyncio.wait_for(connection, 10)
    await aclose_shared_clients()
    if http is not None:
        await http.aclose()
    return BotRun(
        wall, cpu, finished, requests, limited, budgets, lags, collections.result(), machine
    )


# --------------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def expected_messages(platform: str, text: str) -> list[str]:
    """The texts the platform should show at the end for a reply ``text``."""
    if platform == "discord":
        return split_message(text, DISCORD_MAX_LEN)
    return [to_mrkdwn(part) for part in split_message(text, UPDATE_MAX_LEN)]


def budget_floor(arrivals: list[float], rate: float, per: float, burst: int) -> list[float]:
    """For each reply, the wait its first post cannot avoid under the bot's request budget.

    ``arrivals``: when each reply's first LLM chunk was written. The floor is what an
    :class:`~core.budget.EditBudget` of ``rate`` per ``per`` s (``burst``) would impose if it
    served nothing but these first posts, first come first served, at no CPU cost: the k-th of
    200 simultaneous first posts at 45/s waits about k/45 s. Anything above it is latency the bot
    adds (CPU, event-loop lag, other requests sharing the budget, the HTTP round trip).
    """
    interval = per / rate
    tau = (burst - 1) * interval
    tat = -math.inf
    window: deque[float] | None = deque(maxlen=int(rate)) if burst > 1 else None
    floors = [0.0] * len(arrivals)
    for i in sorted(range(len(arrivals)), key=arrivals.__getitem__):
        at = max(arrivals[i], tat - tau)
        if window is not None and len(window) == window.maxlen:
            at = max(at, window[0] + per)
        tat = max(tat, at) + interval
        if window is not None:
            window.append(at)
        floors[i] = at - arrivals[i]
    return floors


def requests_per_reply(platform: str, args: argparse.Namespace) -> float:
    """Budget requests one reply makes on average: typing (Discord), post, edits, final edit."""
    mean_seconds = (args.tokens + 2) * math.log(2) / (args.rate * 2 / 3)  # E[1/rate], U(a, 2a)
    fields = (DiscordSettings if platform == "discord" else SlackSettings).model_fields
    interval = fields[f"{platform}_edit_interval"].default
    return (2 if platform == "discord" else 1) + mean_seconds / interval + 1


def budget_rate(platform: str, args: argparse.Namespace) -> float:
    """The bot's request budget per second for ``platform`` in this benchmark."""
    if platform == "discord":
        return float(DiscordSettings.model_fields["discord_requests_per_second"].default)
    return args.slack_rate / 60


def auto_ramp(args: argparse.Namespace, plan: list[str], share: float = 0.5) -> float:
    """A ramp over which the users' request demand stays near ``share`` of each budget."""
    return max(
        plan.count(p) * requests_per_reply(p, args) / (share * budget_rate(p, args))
        for p in ("discord", "slack")
    )


@dataclass
class Summary:
    """One run's headline numbers, for the side-by-side table of several runs."""

    loop: str
    transport: str
    ok: bool
    wall: float
    cpu_per_1k: float
    lag_p99: float
    lag_max: float
    #: platform -> (first p50, first p99, above-floor p50, above-floor p99, floor p50,
    #: complete-after p50, complete-after p99), seconds.
    platforms: dict[str, tuple[float, ...]] = field(default_factory=dict)


def run(args: argparse.Namespace, loop: str, transport: str, *, earlier: bool = False) -> Summary:
    n = args.conversations
    plan = platforms(n, args.split)
    ctx = mp.get_context("fork")
    llm_conn, llm_child_conn = ctx.Pipe()
    plat_conn, plat_child_conn = ctx.Pipe()
    llm = ctx.Process(target=_serve_llm, args=(llm_child_conn, args.rate, args.ttft), daemon=True)
    stand_ins = ctx.Process(
        target=_serve_platforms,
        args=(
            plat_child_conn,
            plan,
            args.tokens,
            args.ramp,
            args.slack_update_interval,
            args.slack_limits,
        ),
        daemon=True,
    )
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    llm.start()
    stand_ins.start()
    try:
        llm_url = llm_conn.recv()
        with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            bots = runner.run(run_bots(args, plan, llm_url, plat_conn, transport))
        plat_conn.send("report")
        report: PlatformReport = plat_conn.recv()
        llm_conn.send("times")
        sent: dict[str, tuple[float, float]] = llm_conn.recv()
    finally:
        for conn in (plat_conn, llm_conn):
            with contextlib.suppress(OSError):
                conn.send("stop")
        for proc in (stand_ins, llm):
            proc.join(15)
            if proc.is_alive():
                proc.terminate()
    # KiB on Linux; a high-water mark of the whole process (so a later run may show an earlier's).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    kids_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)

    first: dict[str, list[float]] = {"discord": [], "slack": []}
    arrived: dict[str, list[float]] = {"discord": [], "slack": []}
    ended: dict[str, list[float]] = {"discord": [], "slack": []}
    after: dict[str, list[float]] = {"discord": [], "slack": []}
    bad: list[int] = []
    for i, platform in enumerate(plan):
        prompt = prompt_for(i, args.tokens)
        shown = report.shown[i]
        if [text for text, _, _ in shown] != expected_messages(platform, reply_for(prompt)):
            bad.append(i)
            continue
        t_first, t_last = sent[f"q{i}"]
        first[platform].append(shown[0][1] - t_first)
        arrived[platform].append(t_first)
        ended[platform].append(t_last)
        after[platform].append(max(t1 for _, _, t1 in shown) - t_last)

    n_slack = plan.count("slack")
    deltas = n * (args.tokens + 2)
    ramp = f"ramp {args.ramp:g} s" + (" (auto)" if args.ramp_auto else "")
    print(
        f"{n} conversations ({n - n_slack} Discord, {n_slack} Slack) x {args.tokens + 2} deltas "
        f"at {args.rate * 2 / 3:.0f}-{args.rate * 4 / 3:.0f} tokens/s, ttft {args.ttft:g} s, "
        f"{ramp}; Slack chat.update >= {args.slack_update_interval:g} s apart, "
        + (
            "Slack's per-method limits enforced"
            if args.slack_limits
            else f"workspace budget {args.slack_rate:g}/min"
        )
        + f"; bots' event loop: {loop}; LLM transport: {TRANSPORTS[transport]}"
    )
    print(
        f"wall                        {bots.wall:8.2f} s"
        + ("" if bots.finished else " (TIMED OUT)")
    )
    print(f"completed replies           {n - len(bad):8d} / {n}")
    print(f"lost or differing replies   {len(bad):8d}")
    print(
        f"429s received               {report.discord_429 + report.discord_429_global + report.slack_429:8d}"
        f"  (Discord per-route {report.discord_429}, global {report.discord_429_global}; "
        f"Slack {report.slack_429})"
    )
    summary = Summary(
        loop,
        transport,
        False,
        bots.wall,
        bots.cpu / deltas * 1000,
        pct(bots.lags, 0.99),
        max(bots.lags, default=float("nan")),
    )
    for name, label in (("discord", "Discord"), ("slack", "Slack")):
        if not first[name]:
            continue
        f, a = first[name], after[name]
        rate, per, burst = bots.budgets.get(name, (budget_rate(name, args), 1.0, 1))
        floors = budget_floor(arrived[name], rate, per, burst)
        above = [v - fl for v, fl in zip(f, floors, strict=True)]
        unit = f"{rate:g}/s" if per == 1 else f"{rate:g}/{per:g} s"
        # The earliest each final could have gone: the budget serving nothing but the finals,
        # in the order the LLM ended (one request per reply is all any reply must make).
        f_rate, f_per, f_burst = bots.budgets.get(f"{name} final", (rate, per, burst))
        final_floors = budget_floor(ended[name], f_rate, f_per, f_burst)
        final_above = [v - fl for v, fl in zip(a, final_floors, strict=True)]
        needed = len(f) / (f_rate / f_per)
        print(
            f"{label:<8} first delta visible  p50 {pct(f, 0.5) * 1e3:8.1f} ms  p99 {pct(f, 0.99) * 1e3:8.1f} ms"
            f"  max {max(f) * 1e3:8.1f} ms"
        )
        print(
            f"{label:<8} budget floor         p50 {pct(floors, 0.5) * 1e3:8.1f} ms  p99 "
            f"{pct(floors, 0.99) * 1e3:8.1f} ms  max {max(floors) * 1e3:8.1f} ms"
            f"  ({unit}, burst {burst}, first posts alone)"
        )
        print(
            f"{label:<8} visible above floor  p50 {pct(above, 0.5) * 1e3:8.1f} ms  p99 "
            f"{pct(above, 0.99) * 1e3:8.1f} ms  max {max(above) * 1e3:8.1f} ms"
        )
        print(
            f"{label:<8} complete after last  p50 {pct(a, 0.5):8.2f} s   p99 {pct(a, 0.99):8.2f} s"
            f"   max {max(a):8.2f} s"
        )
        if name == "discord" and report.discord_times:
            # How fast the platform actually took requests while first posts were going out.
            start = min(arrived[name])
            end = max(t + v for t, v in zip(arrived[name], f, strict=True))
            taken = sum(1 for t in report.discord_times if start <= t <= end)
            span = max(end - start, 1e-9)
            print(
                f"{label:<8} requests received while first posts went out: {taken} in "
                f"{span:.2f} s = {taken / span:.1f}/s (budget {rate:g}/{per:g} s)"
            )
        print(
            f"{label:<8} final floor          p50 {pct(final_floors, 0.5):8.2f} s   p99 "
            f"{pct(final_floors, 0.99):8.2f} s   max {max(final_floors):8.2f} s  (finals alone: "
            f"{len(f)} requests at {f_rate:g}/{f_per:g} s, burst {f_burst}; at the bare rate "
            f"{needed:.1f} s)"
        )
        print(
            f"{label:<8} complete above floor p50 {pct(final_above, 0.5):8.2f} s   p99 "
            f"{pct(final_above, 0.99):8.2f} s   max {max(final_above):8.2f} s"
        )
        summary.platforms[name] = (
            pct(f, 0.5),
            pct(f, 0.99),
            pct(above, 0.5),
            pct(above, 0.99),
            pct(floors, 0.5),
            pct(a, 0.5),
            pct(a, 0.99),
        )
    print(
        f"CPU (this process)          {bots.cpu:8.2f} s  ({summary.cpu_per_1k:.3f} s per 1,000 deltas)"
    )
    print(
        f"event-loop lag (this process)  p50 {pct(bots.lags, 0.5) * 1e3:.1f} ms  p99 "
        f"{summary.lag_p99 * 1e3:.1f} ms  max {summary.lag_max * 1e3:.1f} ms (10 ms heartbeat)"
    )
    stalls = [lag for lag in bots.lags if lag >= 0.1]
    print(
        f"event-loop stalls (this process)  >= 100 ms: {len(stalls)} ({sum(stalls):.2f} s in all), "
        f">= 250 ms: {sum(1 for lag in stalls if lag >= 0.25)}"
    )
    if bots.gc:
        gcs = ", ".join(
            f"gen{g} {n} ({cpu:.2f} s, longest {pause * 1e3:.0f} ms)"
            for g, (n, cpu, pause) in sorted(bots.gc.items())
        )
        print(f"garbage collections (this process, CPU s)  {gcs}")
    cores = os.cpu_count() or 1
    print(
        f"machine CPU during the run   {bots.machine_cpu:8.2f} core-s of {cores * bots.wall:.2f} "
        f"({cores} cores); this process {bots.cpu:.2f}, everything else {bots.machine_cpu - bots.cpu:.2f} "
        f"(the stand-ins' children over their whole life: {kids_cpu:.2f})"
    )
    note = "" if rss > rss0 or not earlier else " (the process's high-water mark: an upper bound)"
    print(f"peak RSS (this process)     {rss / 1024:8.1f} MB{note}")
    print(
        f"Discord REST by the bot's sinks: {bots.discord_rest_requests} "
        f"({bots.discord_rest_429} answered 429); all requests at the stand-in: "
        f"{report.discord_requests}; Slack Web API calls: {report.slack_calls}"
    )
    for i in bad[:3]:
        shown = report.shown[i]
        last = shown[-1][0][-60:] if shown else "(nothing posted)"
        print(f"BAD: conversation {i} ({plan[i]}): {len(shown)} messages, ends {last!r}")
    if bad or not bots.finished:
        print(f"FAIL: {len(bad)} of {n} replies lost or not exactly the LLM's text")
        return summary
    print(f"OK: all {n} replies complete and exactly the LLM's text")
    summary.ok = True
    return summary


def print_table(summaries: list[Summary]) -> None:
    """Several runs side by side."""
    names = [p for p in ("discord", "slack") if any(p in s.platforms for s in summaries)]
    print("\n## side by side: first visible and above the budget floor in ms (p50/p99),")
    print("## complete after the LLM's last chunk in s (p50/p99), event-loop lag in ms (p99/max)")
    head = f"{'loop':<8} {'LLM':<6} {'ok':<3} {'wall s':>7} {'CPU s/1k':>8} {'lag':>13}"
    for p in names:
        head += f"  {p + ' first':>19} {'above floor':>17} {'complete':>13}"
    print(head)
    for s in summaries:
        row = (
            f"{s.loop:<8} {s.transport:<6} {'ok' if s.ok else 'NO':<3} {s.wall:7.2f} {s.cpu_per_1k:8.3f} "
            f"{s.lag_p99 * 1e3:6.0f}/{s.lag_max * 1e3:<6.0f}"
        )
        for p in names:
            f50, f99, a50, a99, _, c50, c99 = s.platforms.get(p, (float("nan"),) * 7)
            row += (
                f"  {f50 * 1e3:>9.1f}/{f99 * 1e3:<9.1f} {a50 * 1e3:>8.1f}/{a99 * 1e3:<8.1f}"
                f" {c50:>6.2f}/{c99:<6.2f}"
            )
        print(row)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The bots' event loop for ``--loop``: ``None`` is asyncio's default loop."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument(
        "--split", type=float, default=0.5, help="fraction on Slack (0: Discord only)"
    )
    parser.add_argument("--tokens", type=int, default=300, help="words per reply (plus two)")
    parser.add_argument("--rate", type=float, default=45.0, help="mean tokens/s per reply")
    parser.add_argument("--ttft", type=float, default=0.25, help="seconds to the first token")
    parser.add_argument(
        "--ramp",
        default="0",
        help="seconds over which users ask; auto: long enough that the replies' requests use "
        "about half of each platform budget (the budget is then not the bottleneck)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="asyncio",
        help="event loop of the bots' process; both: alternate them (stand-ins stay on asyncio)",
    )
    parser.add_argument(
        "--llm-transport",
        choices=(*TRANSPORTS, "both"),
        default="pool",
        help="how the bots read the LLM: pool (llmconnect's production pool, httpx-aiohttp), "
        "httpx (a plain httpx.AsyncClient on httpx's own transport, what the pool was before); "
        "both: alternate them",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the whole case this many times (per loop and transport)",
    )
    parser.add_argument(
        "--slack-update-interval",
        type=float,
        default=1.0,
        help="the Slack stand-in's 429 limit: seconds between updates of one message",
    )
    parser.add_argument(
        "--slack-rate",
        type=float,
        default=None,
        help="SLACK_WORKSPACE_EDIT_RATE for the bot (chat.update per minute; without "
        "--slack-limits also SLACK_WORKSPACE_POST_RATE); default 3000, or Slack's 50 with "
        "--slack-limits",
    )
    parser.add_argument(
        "--slack-limits",
        action="store_true",
        help="the Slack stand-in enforces Slack's per-method limits (chat.update 50/min per "
        "workspace, chat.postMessage 1/s per channel with bursts of 3 and 300/min per "
        "workspace, streaming methods 100/min) and the bot runs on its default budgets",
    )
    parser.add_argument("--grace", type=float, default=120.0, help="extra seconds before giving up")
    args = parser.parse_args()
    if args.conversations < 1 or args.tokens < 2 or args.rate <= 0 or not 0 <= args.split <= 1:
        parser.error("need --conversations >= 1, --tokens >= 2, --rate > 0, 0 <= --split <= 1")
    if args.slack_rate is None:
        args.slack_rate = 50.0 if args.slack_limits else 3000.0
    args.ramp_auto = args.ramp == "auto"
    try:
        args.ramp = (
            auto_ramp(args, platforms(args.conversations, args.split))
            if args.ramp_auto
            else float(args.ramp)
        )
    except ValueError:
        parser.error("--ramp takes seconds or auto")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    transports = list(TRANSPORTS) if args.llm_transport == "both" else [args.llm_transport]
    variants = [(loop, transport) for loop in loops for transport in transports]
    summaries: list[Summary] = []
    for r in range(max(1, args.repeat)):
        # A, B, B, A, ...: the alternatives share the machine's noise and neither always goes first
        for loop, transport in variants if r % 2 == 0 else variants[::-1]:
            if summaries:
                print()
            summaries.append(run(args, loop, transport, earlier=bool(summaries)))
    if len(summaries) > 1:
        print_table(summaries)
    sys.exit(0 if all(s.ok for s in summaries) else 1)


if __name__ == "__main__":
    main()
