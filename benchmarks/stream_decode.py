"""How fast can we read an OpenAI-style stream? llmconnect side by side with the alternatives.

One local server (tests/fakes/llm_server.py, in a child process so its CPU is not counted) sends a
20,000-chunk OpenAI-style stream, once written in large pieces and once one event per write. In the
same run, alternating, three rounds each, it is consumed by:

- ``llmconnect``       — ``await client.chat(..., stream=True)`` with no ``http_client=``: the
  library under test on its production pool (``shared_http_client()``: httpx's API over aiohttp's
  connections and C parser, ``httpx-aiohttp``)
- ``llmconnect-httpx`` — the same with ``http_client=`` a plain ``httpx.AsyncClient``: httpx's own
  transport (httpcore + anyio + h11), what the pool was before and what a caller's own client gets
- ``openai``           — the official SDK, ``AsyncOpenAI(base_url=...)``
- ``httpx-sse``        — ``aconnect_sse`` + ``json.loads`` (the maintained SSE library we could use)
- ``bare``             — ``httpx`` ``aiter_lines()`` + ``json.loads`` on a plain ``httpx.AsyncClient``:
  the practical floor for pure Python, and the reference for CPU per chunk
- ``bare-pool``        — the same loop on llmconnect's production pool client, to tell the
  transport's share from the decoder's

Prints chunks/second (wall) and CPU seconds of this process for each, and the ratios it is held to: llmconnect ≥ 8x the openai SDK's chunks/s, and ≤ 1.25x the bare loop's CPU per chunk.
``--loop both`` reads every round once on asyncio's event loop and once on uvloop (one long-lived
loop and HTTP clients each), so the two loops are compared in the same run.

    python benchmarks/stream_decode.py [--chunks 20000] [--rounds 3] [--loop asyncio|uvloop|both]
                          [--consumers llmconnect,llmconnect-httpx,openai,httpx-sse,bare,bare-pool]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmconnect import APIClientFactory, RetryPolicy, aclose_shared_clients
from llmconnect.transport import shared_http_client
from tests.fakes.llm_server import FakeLLMServer, RawStream, openai_stream_body

MESSAGES = [{"role": "user", "content": "benchmark"}]
MODEL = "fake"


def _serve(conn: mp.connection.Connection, body: bytes, sizes: int | list[int], count: int) -> None:
    async def run() -> None:
        server = await FakeLLMServer().start()
        server.enqueue(*(RawStream(body, write_sizes=sizes) for _ in range(count)))
        conn.send(server.openai_base_url)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.close()

    asyncio.run(run())


#: A reader: (base URL, a plain httpx.AsyncClient on httpx's own transport) -> chunks read.
Consumer = Callable[[str, httpx.AsyncClient], Awaitable[int]]


async def _read_llmconnect(url: str, http: httpx.AsyncClient | None) -> int:
    client = APIClientFactory.create(
        provider="openai",
        model=MODEL,
        api_key="bench",
        base_url=url,
        http_client=http,
        retry=RetryPolicy(max_retries=0),
    )
    n = 0
    async for _ in await client.chat("benchmark", stream=True):
        n += 1
    return n


async def read_llmconnect(url: str, http: httpx.AsyncClient) -> int:
    """llmconnect on its production pool (no ``http_client=``)."""
    return await _read_llmconnect(url, None)


async def read_llmconnect_httpx(url: str, http: httpx.AsyncClient) -> int:
    """llmconnect on a caller's plain ``httpx.AsyncClient`` (httpx's own transport)."""
    return await _read_llmconnect(url, http)


def make_openai_reader() -> Consumer:
    from openai import AsyncOpenAI

    clients: dict[tuple[str, int], AsyncOpenAI] = {}  # one per URL and event loop

    async def read_openai(url: str, http: httpx.AsyncClient) -> int:
        key = (url, id(asyncio.get_running_loop()))
        sdk = clients.get(key)
        if sdk is None:
            sdk = clients[key] = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
        n = 0
        stream = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                n += 1
        return n

    return read_openai


async def read_httpx_sse(url: str, http: httpx.AsyncClient) -> int:
    from httpx_sse import aconnect_sse

    n = 0
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    async with aconnect_sse(http, "POST", f"{url}/chat/completions", json=body) as source:
        async for event in source.aiter_sse():
            if event.data == "[DONE]":
                break
            choices = json.loads(event.data)["choices"]
            if choices and choices[0]["delta"].get("content"):
                n += 1
    return n


async def read_bare(url: str, http: httpx.AsyncClient) -> int:
    n = 0
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    async with http.stream("POST", f"{url}/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            choices = json.loads(data)["choices"]
            if choices and choices[0]["delta"].get("content"):
                n += 1
    return n


async def read_bare_pool(url: str, http: httpx.AsyncClient) -> int:
    """The bare loop on llmconnect's production pool client (httpx-aiohttp)."""
    return await read_bare(url, shared_http_client())


async def measure(
    consumer: Consumer, url: str, http: httpx.AsyncClient
) -> tuple[float, float, int]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    n = await consumer(url, http)
    return time.perf_counter() - wall0, time.process_time() - cpu0, n


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``--loop``: ``None`` is asyncio's default loop."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


async def one_round(
    url: str, consumers: dict[str, Consumer], http: httpx.AsyncClient, chunks: int
) -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    for name, consumer in consumers.items():
        wall, cpu, n = await measure(consumer, url, http)
        if n != chunks:
            raise SystemExit(f"{name} read {n} chunks, expected {chunks}")
        results[name] = (wall, cpu)
    return results


def run_mode(
    url: str, consumers: dict[str, Consumer], rounds: int, chunks: int, loops: list[str]
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Every round runs every consumer once on each loop in turn (A, B, A, B, ...), one
    long-lived event loop and HTTP clients (plain httpx, and llmconnect's pool) per loop kind."""
    results = {loop: {name: [] for name in consumers} for loop in loops}
    runners = {loop: asyncio.Runner(loop_factory=loop_factory(loop)) for loop in loops}

    async def warm_up() -> httpx.AsyncClient:
        http = httpx.AsyncClient(timeout=60)
        for consumer in consumers.values():  # connections, imports, caches
            await consumer(url, http)
        return http

    try:
        clients = {loop: runners[loop].run(warm_up()) for loop in loops}
        for _ in range(rounds):
            for loop in loops:
                for name, sample in (
                    runners[loop].run(one_round(url, consumers, clients[loop], chunks)).items()
                ):
                    results[loop][name].append(sample)
        for loop in loops:
            runners[loop].run(clients[loop].aclose())
            runners[loop].run(aclose_shared_clients())
    finally:
        for runner in runners.values():
            runner.close()
    return results


#: Every consumer, by name, as a factory (the openai SDK is imported only when asked for).
CONSUMERS: dict[str, Callable[[], Consumer]] = {
    "llmconnect": lambda: read_llmconnect,
    "llmconnect-httpx": lambda: read_llmconnect_httpx,
    "openai": make_openai_reader,
    "httpx-sse": lambda: read_httpx_sse,
    "bare": lambda: read_bare,
    "bare-pool": lambda: read_bare_pool,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="asyncio",
        help="event loop of this (the reading) process; both: alternate them round by round",
    )
    parser.add_argument(
        "--consumers",
        default=",".join(CONSUMERS),
        help=f"comma-separated subset of {','.join(CONSUMERS)}",
    )
    args = parser.parse_args()
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]

    deltas = [f"tok{i % 97} " for i in range(args.chunks)]
    body = openai_stream_body(deltas, MODEL)
    # Event sizes, so "one event per write" writes exactly one SSE event each time.
    event_sizes = [len(part) + 2 for part in body.split(b"\n\n")[:-1]]
    names = [name.strip() for name in args.consumers.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONSUMERS]
    if unknown or not names:
        parser.error(f"unknown consumers: {', '.join(unknown) or '(none given)'}")
    consumers = {name: CONSUMERS[name]() for name in names}
    per_mode = (args.rounds + 1) * len(consumers) * len(loops)
    print(
        f"{args.chunks} chunks per stream, {args.rounds} rounds, {len(body):,} bytes per stream; "
        f"reader on {' and '.join(loops)} (alternating)"
    )
    for mode, sizes in (
        ("large pieces (64 KiB writes)", 65536),
        ("one event per write", event_sizes),
    ):
        parent, child = mp.Pipe()
        proc = mp.get_context("fork").Process(target=_serve, args=(child, body, sizes, per_mode))
        proc.start()
        url = parent.recv()
        try:
            results = run_mode(url, consumers, args.rounds, args.chunks, loops)
        finally:
            parent.send("stop")
            proc.join(10)
        print(f"\n## {mode}")
        print(
            f"{'consumer':<26} {'chunks/s':>12} {'CPU s':>8} {'CPU us/chunk':>13}"
            "  (CPU us/chunk per round)"
        )
        rate: dict[tuple[str, str], float] = {}
        cpu: dict[tuple[str, str], float] = {}
        for name in consumers:
            for loop in loops:
                samples = results[loop][name]
                key = (loop, name)
                rate[key] = args.chunks / statistics.median(w for w, _ in samples)
                cpu[key] = statistics.median(c for _, c in samples)
                rounds = " ".join(f"{c / args.chunks * 1e6:.1f}" for _, c in samples)
                print(
                    f"{name + ' @' + loop:<26} {rate[key]:>12,.0f} {cpu[key]:>8.3f} "
                    f"{cpu[key] / args.chunks * 1e6:>13.2f}  ({rounds})"
                )
        for loop in loops:
            at = f" @{loop}" if len(loops) > 1 else ""
            for ours in ("llmconnect", "llmconnect-httpx"):
                if ours not in consumers:
                    continue
                if "openai" in consumers:
                    ratio = rate[(loop, ours)] / rate[(loop, "openai")]
                    print(f"{ours} / openai chunks/s{at}: {ratio:.1f}x (target >= 8x)")
                if "bare" in consumers:
                    ratio = cpu[(loop, ours)] / cpu[(loop, "bare")]
                    print(f"{ours} / bare CPU per chunk{at}: {ratio:.2f}x (target <= 1.25x)")
            for name, base in (
                ("llmconnect", "bare-pool"),  # the decoder's share, on the same transport
                ("bare-pool", "bare"),  # the transport's share, same loop on top
                ("httpx-sse", "bare"),
            ):
                if name in consumers and base in consumers:
                    ratio = cpu[(loop, name)] / cpu[(loop, base)]
                    print(f"{name} / {base} CPU per chunk{at}: {ratio:.2f}x")
        if len(loops) > 1:
            for name in consumers:
                ratio = cpu[("uvloop", name)] / cpu[("asyncio", name)]
                print(f"{name}: uvloop / asyncio CPU per chunk {ratio:.2f}x")


if __name__ == "__main__":
    main()
