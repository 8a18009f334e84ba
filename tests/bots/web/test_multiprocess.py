"""Two real ``llmconnect run`` processes sharing one Redis (``STORE_URL``): one conversation, two
doors. What a user does through either process acts on the conversation wherever it runs."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from tests.bots.test_run import WEB_URL, Process, empty_env, started
from tests.fakes.llm_server import FakeLLMServer, Reply


@contextlib.asynccontextmanager
async def web_process(env: dict[str, str], cwd: Path) -> AsyncIterator[tuple[Process, str]]:
    async with started(env, cwd) as process:
        output = await process.read_until("Ctrl-C stops.")
        match = WEB_URL.search(output)
        assert match, output
        yield process, match.group(1)
        assert await process.stop() == 0


async def test_stop_sent_to_one_process_ends_the_reply_streaming_in_the_other(
    fresh_redis_url: str, tmp_path: Path
) -> None:
    async with FakeLLMServer(models=["slow"]) as llm:
        # The answer stops after three words and would hang there until the client goes away.
        llm.enqueue(Reply(text="one two three four five six", hang_after=3))
        env = empty_env(
            WEB_PORT="0",
            STORE_URL=fresh_redis_url,
            LOCAL_BASE_URL=llm.openai_base_url,
            LLMCONNECT_MODEL="local/slow",
        )
        async with (
            web_process(env, tmp_path) as (_, first_url),
            web_process(env, tmp_path) as (_, second_url),
            httpx.AsyncClient(base_url=first_url, timeout=30) as first,
            httpx.AsyncClient(base_url=second_url, timeout=30) as second,
        ):
            await first.post("/chat/shared/send-message", json={"text": "count"})
            events: list[tuple[str, str]] = []
            stopped: dict[str, object] = {}
            async with aconnect_sse(first, "GET", "/chat/shared/bot-stream") as source:
                async for event in source.aiter_sse():
                    events.append((event.event, event.data))
                    if event.event == "delta" and "three" in event.data and not stopped:
                        stopped = (await second.post("/chat/shared/stop", json={})).json()
            # The other process sees the conversation as the first one left it.
            seen = (await second.get("/chat/shared")).json()
            again = (await second.post("/chat/shared/stop", json={})).json()

    assert stopped == {"id": "shared", "stopped": True}
    assert events[-1][0] == "end"
    end = json.loads(events[-1][1])
    assert end["status"] == "cancelled"
    assert end["content"] == "one two three "
    assert llm.disconnects == 1  # the LLM stream was closed, not left hanging
    assert again == {"id": "shared", "stopped": False}
    assert [m["status"] for m in seen["messages"]] == ["complete", "cancelled"]
    assert seen["messages"][-1]["content"] == "one two three "
