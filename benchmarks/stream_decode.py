"""How fast can we read an OpenAI-style stream? llmconnect side by side with the alternatives.

One local server (tests/fakes/llm_server.py, in a child process so its CPU is not counted) sends a
20,000-chunk OpenAI-style stream, once written in large pieces and once one event per write. In the
same run, alternating, three rounds each, it is consumed by:

- ``llmconnect``      — ``await client.chat(..., stream=True)``, the library under test
- ``openai``          — the official SDK, ``AsyncOpenAI(base_url=...)``
- ``httpx-sse``       — ``aconnect_sse`` + ``json.loads`` (the maintained SSE library we could use)
- ``bare``            — ``httpx`` ``aiter_lines()`` + ``json.loads``: the practical floor for pure Python

Prints chunks/second (wall) and CPU seconds of this process for each, and the ratios the design
targets: llmconnect ≥ 8x the openai SDK's chunks/s, and ≤ 1.25x the bare loop's CPU per chunk.

    python benchmarks/stream_decode.py [--chunks 20000] [--rounds 3]
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

from llmconnect import APIClientFactory, RetryPolicy
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


Consumer = Callable[[str, httpx.AsyncClient], Awaitable[int]]


async def read_llmconnect(url: str, http: httpx.AsyncClient) -> int:
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


def make_openai_reader() -> Consumer:
    from openai import AsyncOpenAI

    clients: dict[str, AsyncOpenAI] = {}

    async def read_openai(url: str, http: httpx.AsyncClient) -> int:
        sdk = clients.get(url)
        if sdk is None:
            sdk = clients[url] = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
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


async def measure(
    consumer: Consumer, url: str, http: httpx.AsyncClient
) -> tuple[float, float, int]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    n = await consumer(url, http)
    return time.perf_counter() - wall0, time.process_time() - cpu0, n


async def run_mode(
    url: str, consumers: dict[str, Consumer], rounds: int, chunks: int
) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in consumers}
    async with httpx.AsyncClient(timeout=60) as http:
        for consumer in consumers.values():  # warm-up: connections, imports, caches
            await consumer(url, http)
        for _ in range(rounds):
            for name, consumer in consumers.items():
                wall, cpu, n = await measure(consumer, url, http)
                if n != chunks:
                    raise SystemExit(f"{name} read {n} chunks, expected {chunks}")
                results[name].append((wall, cpu))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    deltas = [f"tok{i % 97} " for i in range(args.chunks)]
    body = openai_stream_body(deltas, MODEL)
    # Event sizes, so "one event per write" writes exactly one SSE event each time.
    event_sizes = [len(part) + 2 for part in body.split(b"\n\n")[:-1]]
    consumers: dict[str, Consumer] = {
        "llmconnect": read_llmconnect,
        "openai": make_openai_reader(),
        "httpx-sse": read_httpx_sse,
        "bare": read_bare,
    }
    per_mode = (args.rounds + 1) * len(consumers)
    print(f"{args.chunks} chunks per stream, {args.rounds} rounds, {len(body):,} bytes per stream")
    for mode, sizes in (
        ("large pieces (64 KiB writes)", 65536),
        ("one event per write", event_sizes),
    ):
        parent, child = mp.Pipe()
        proc = mp.get_context("fork").Process(target=_serve, args=(child, body, sizes, per_mode))
        proc.start()
        url = parent.recv()
        try:
            results = asyncio.run(run_mode(url, consumers, args.rounds, args.chunks))
        finally:
            parent.send("stop")
            proc.join(10)
        print(f"\n## {mode}")
        print(f"{'consumer':<12} {'chunks/s':>12} {'CPU s':>8} {'CPU us/chunk':>13}")
        rate, cpu = {}, {}
        for name, samples in results.items():
            rate[name] = args.chunks / statistics.median(w for w, _ in samples)
            cpu[name] = statistics.median(c for _, c in samples)
            print(
                f"{name:<12} {rate[name]:>12,.0f} {cpu[name]:>8.3f} {cpu[name] / args.chunks * 1e6:>13.2f}"
            )
        print(
            f"llmconnect / openai chunks/s: {rate['llmconnect'] / rate['openai']:.1f}x (target >= 8x)"
        )
        print(
            f"llmconnect / bare CPU per chunk: {cpu['llmconnect'] / cpu['bare']:.2f}x (target <= 1.25x)"
        )
        print(f"httpx-sse / bare CPU per chunk: {cpu['httpx-sse'] / cpu['bare']:.2f}x")


if __name__ == "__main__":
    main()
