"""``GET /metrics``, ``/healthz`` and ``/readyz`` (bots/health.py, core/metrics.py), through the
real runner and front ends against the stand-ins: the web chat, the Discord server and the Slack
API, a FakeLLMServer as the model, and a redis-server of the test's own.

The exposition is parsed with ``prometheus_client.parser``, as Prometheus reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families

from bots.discord import DiscordFrontEnd, DiscordSettings
from bots.frontend import RunSettings
from bots.run import Runner
from bots.slack import SlackFrontEnd, SlackSettings
from bots.web import WebFrontEnd, WebSettings
from core.settings import load_settings
from tests.bots.test_run import CLI, empty_env, mention
from tests.bots.web.conftest import serve_web
from tests.fakes.discord_server import FakeDiscordServer
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.slack_api import FakeSlackAPI

ANSWER = "Metrics are counted per reply."

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def no_machine_settings(clean_settings_env: None) -> None:
    """Every test here: no setting from this machine, no ``.env`` (tests/conftest.py)."""


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def wait_until(predicate: Callable[[], Any], limit: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await predicate():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(runner: Runner) -> AsyncIterator[Runner]:
    task = asyncio.create_task(runner.run(install_signal_handlers=False))
    try:
        await asyncio.wait_for(runner.started.wait(), 30)
        yield runner
    finally:
        runner.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def web_reply(client: httpx.AsyncClient, conv: str, text: str) -> dict[str, Any]:
    sent = await client.post(f"/chat/{conv}/send-message", json={"text": text})
    assert sent.status_code < 300, sent.text
    async with aconnect_sse(client, "GET", f"/chat/{conv}/bot-stream") as source:
        ends = [json.loads(e.data) async for e in source.aiter_sse() if e.event == "end"]
    return ends[-1]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- metrics


async def test_replies_through_each_front_end_are_counted_without_ids_or_text() -> None:
    """One reply each through the web chat, Discord and Slack (one engine, a model that reports
    usage): every metric counts them under the front end's name, and no label value carries a
    user, a channel or the text."""
    async with (
        FakeLLMServer(models=["fake"]) as llm,
        FakeSlackAPI() as slack,
        FakeDiscordServer() as discord,
    ):
        guild = discord.add_guild()
        general = discord.add_channel(guild, "general")
        alice = discord.add_member(guild, "alice")
        values: dict[str, object] = {
            "web_port": 0,
            "llmconnect_model": "local/fake",
            "user_rate_limit": 0,
            "discord_token": discord.token,
            "discord_api_url": discord.api_url,
            "discord_gateway_url": discord.gateway_url,
            "discord_edit_interval": 0.05,
            "slack_bot_token": slack.bot_token,
            "slack_app_token": slack.app_token,
            "slack_api_url": slack.api_url,
            "slack_streaming": "update",
            "slack_edit_interval": 0.05,
        }
        web = WebFrontEnd(load_settings(WebSettings, **values))
        frontends = [
            web,
            DiscordFrontEnd(load_settings(DiscordSettings, **values), out=StringIO()),
            SlackFrontEnd(load_settings(SlackSettings, **values)),
        ]
        env = {"LOCAL_BASE_URL": llm.openai_base_url}
        runner = Runner(load_settings(**values), frontends, env=env, out=StringIO())
        async with running(runner):
            await slack.wait_connected()
            await discord.wait_ready(tries=3000)
            assert web.url is not None
            async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:
                llm.enqueue(Reply(text=ANSWER, usage=(5, 3)))
                end = await web_reply(client, "metricsconv", "secret web words")
                assert end["content"] == ANSWER

                llm.enqueue(Reply(text=ANSWER, usage=(5, 3)))
                asked = await discord.send_message(general, alice, "secret discord words")

                async def discord_done() -> bool:
                    return [m.content for m in discord.replies_to(asked)] == [ANSWER]

                await wait_until(discord_done)

                llm.enqueue(Reply(text=ANSWER, usage=(5, 3)))
                await slack.send_envelope("events_api", mention(slack, "secret slack words"))

                async def all_shown() -> bool:
                    samples = await scrape(client)
                    shown = "llmconnect_reply_final_lag_seconds_count"
                    return all(value(samples, shown, frontend=p) == 1 for p in ("discord", "slack"))

                await wait_until(all_shown)
                samples = await scrape(client)
                text = (await client.get("/metrics")).text

    for frontend in ("web", "discord", "slack"):
        labels = {"frontend": frontend, "provider": "local", "status": "complete"}
        assert value(samples, "llmconnect_replies_total", **labels) == 1, frontend
        assert value(samples, "llmconnect_reply_first_token_seconds_count", frontend=frontend) == 1
        assert value(samples, "llmconnect_active_replies", frontend=frontend) == 0
    assert value(samples, "llmconnect_tokens_total", provider="local", direction="input") == 15
    assert value(samples, "llmconnect_tokens_total", provider="local", direction="output") == 9
    for platform in ("discord", "slack"):
        assert value(samples, "llmconnect_platform_requests_total", platform=platform, outcome="ok")
        assert not value(
            samples, "llmconnect_platform_requests_total", platform=platform, outcome="error"
        )
        assert value(samples, "llmconnect_budget_wait_seconds_count", platform=platform) == 1
    # The web chat has no platform requests; its final lag is the end event reaching the page.
    assert not value(samples, "llmconnect_platform_requests_total", platform="web", outcome="ok")
    assert value(samples, "llmconnect_reply_final_lag_seconds_count", frontend="web") == 1
    assert not any(name == "llmconnect_llm_errors_total" for name, _ in samples)

    # No label value names a user, a channel, a guild, a conversation or any text.
    private = [
        alice,
        general,
        guild.id,
        asked.id,
        "U0USER",
        "C0GENERAL",
        slack.team_id,
        "metricsconv",
        "secret",
        "words",
        ANSWER,
    ]
    values_seen = {v for _, labels in samples for k, v in labels if k != "le"}
    assert values_seen <= {
        "web",
        "discord",
        "slack",
        "local",
        "complete",
        "ok",
        "input",
        "output",
    }, values_seen
    for word in private:
        assert word not in text.replace("llmconnect_", ""), word


async def test_an_llm_error_is_counted_by_provider_and_class() -> None:
    async with FakeLLMServer(models=["fake"]) as llm:
        llm.enqueue(Reply(text=ANSWER, error_after=1))
        env = {"LOCAL_BASE_URL": llm.openai_base_url}
        async with (
            serve_web(env=env, llmconnect_model="local/fake") as server,
            httpx.AsyncClient(base_url=server.url, timeout=30) as client,
        ):
            end = await web_reply(client, "failing", "hello")
            samples = await scrape(client)
    assert end["status"] == "error"
    labels = {"frontend": "web", "provider": "local", "status": "error"}
    assert value(samples, "llmconnect_replies_total", **labels) == 1
    errors = [
        labels
        for (name, labels), count in samples.items()
        if name == "llmconnect_llm_errors_total" and count == 1
    ]
    assert len(errors) == 1
    kinds = dict(errors[0])
    assert kinds["provider"] == "local"
    assert kinds["kind"].endswith("Error")
    assert value(samples, "llmconnect_active_replies", frontend="web") == 0


async def test_metrics_and_health_need_the_token_when_web_auth_token_is_set() -> None:
    async with (
        serve_web(auth_token="s3cret-token") as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as client,
    ):
        refused = [await client.get(path) for path in ("/metrics", "/healthz", "/readyz")]
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        bearer = {"Authorization": "Bearer s3cret-token"}
        allowed = [
            await client.get(path, headers=bearer) for path in ("/metrics", "/healthz", "/readyz")
        ]
    assert [r.status_code for r in refused] == [401, 401, 401]
    assert wrong.status_code == 401
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert "llmconnect_replies" in allowed[0].text
    assert allowed[2].json()["ready"] is True


# --------------------------------------------------------------------------- readiness


async def test_readyz_is_503_while_the_discord_gateway_is_down_and_200_after() -> None:
    async with FakeDiscordServer() as discord:
        values: dict[str, object] = {
            "web_port": 0,
            "discord_token": discord.token,
            "discord_api_url": discord.api_url,
            "discord_gateway_url": discord.gateway_url,
        }
        web = WebFrontEnd(load_settings(WebSettings, **values))
        bot = DiscordFrontEnd(load_settings(DiscordSettings, **values), out=StringIO())
        runner = Runner(load_settings(**values), [web, bot], env={}, out=StringIO())
        async with running(runner):
            assert web.url is not None
            async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:

                async def status(code: int) -> bool:
                    return (await client.get("/readyz")).status_code == code

                await wait_until(lambda: status(200))
                await discord.drop_gateway()
                await wait_until(lambda: status(503))
                down = (await client.get("/readyz")).json()
                alive = await client.get("/healthz")
                discord.gateway_refused = False
                await wait_until(lambda: status(200), limit=60)
                up = (await client.get("/readyz")).json()
    assert down["ready"] is False
    assert down["not_ready"] == ["Discord bot"]
    assert down["checks"]["Discord bot"] == "gateway not connected"
    assert down["checks"]["store"] == "ok"
    assert alive.status_code == 200
    assert up == {"ready": True, "checks": {"store": "ok", "Web chat": "ok", "Discord bot": "ok"}}


class PrivateRedis:
    """A redis-server of this test's own on a private Unix socket, stopped and started again."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.sock = workdir / "redis.sock"
        self.url = f"unix://{self.sock}?db=0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", "0", "--unixsocket", str(self.sock)),
                *("--unixsocketperm", "700", "--save", "", "--appendonly", "no"),
                *("--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:
            for _ in range(500):
                with contextlib.suppress(redis.exceptions.ConnectionError):
                    if client.ping():
                        return
                assert self.proc.poll() is None, "redis-server exited"
                time.sleep(0.01)
            raise AssertionError("redis-server did not start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server (apt-get install redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="llmc-metrics-"))
    server = PrivateRedis(binary, workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def test_readyz_is_503_while_redis_is_stopped_and_200_after(
    private_redis: PrivateRedis,
) -> None:
    values: dict[str, object] = {"web_port": 0, "store_url": private_redis.url}
    web = WebFrontEnd(load_settings(WebSettings, **values))
    runner = Runner(load_settings(**values), [web], env={}, out=StringIO())
    async with running(runner):
        assert web.url is not None
        async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:
            ready = await client.get("/readyz")
            private_redis.stop()
            down = await client.get("/readyz")
            alive = await client.get("/healthz")
            private_redis.start()

            async def back() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await wait_until(back)
    assert ready.status_code == 200
    assert down.status_code == 503
    assert down.json()["not_ready"] == ["store"]
    assert down.json()["checks"]["store"] == "unreachable"
    assert private_redis.url not in down.text
    assert alive.status_code == 200


# --------------------------------------------------------------------------- METRICS_PORT


def test_metrics_port_is_a_run_setting() -> None:
    settings = load_settings(RunSettings)
    assert settings.metrics_port is None
    assert settings.metrics_host == "127.0.0.1"
    assert load_settings(RunSettings, metrics_port=65535).metrics_port == 65535
    with pytest.raises(Exception, match="METRICS_PORT"):
        load_settings(RunSettings, metrics_port=65536)


async def test_without_the_web_chat_metrics_port_serves_the_three_routes() -> None:
    """``--no-web`` with a Slack bot: ``/metrics``, ``/healthz``, ``/readyz`` on METRICS_PORT,
    counting the Slack reply; nothing there once stopped."""
    async with FakeSlackAPI() as slack:
        values: dict[str, object] = {
            "slack_bot_token": slack.bot_token,
            "slack_app_token": slack.app_token,
            "slack_api_url": slack.api_url,
            "slack_streaming": "update",
            "slack_edit_interval": 0.05,
        }
        bot = SlackFrontEnd(load_settings(SlackSettings, **values))
        out = StringIO()
        runner = Runner(load_settings(**values), [bot], env={}, out=out, metrics_port=0)
        async with running(runner):
            await slack.wait_connected()
            assert runner.metrics_server is not None
            url = f"http://127.0.0.1:{runner.metrics_server.bound}"
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                await slack.send_envelope("events_api", mention(slack, "hello"))

                async def counted() -> bool:
                    samples = await scrape(client)
                    return (
                        value(samples, "llmconnect_reply_final_lag_seconds_count", frontend="slack")
                        == 1
                    )

                await wait_until(counted)
                samples = await scrape(client)
                health = await client.get("/healthz")
                ready = await client.get("/readyz")
    labels = {"frontend": "slack", "provider": "echo", "status": "complete"}
    assert value(samples, "llmconnect_replies_total", **labels) == 1
    assert health.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"store": "ok", "Slack bot": "ok"}
    assert f"{url}/metrics" in out.getvalue()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            await client.get("/healthz")


async def test_llmconnect_run_no_web_with_metrics_port_serves_metrics(tmp_path: Path) -> None:
    """The real command: ``llmconnect run --no-web`` with a Slack bot and ``METRICS_PORT=0``."""
    async with FakeSlackAPI() as slack:
        env = empty_env(
            METRICS_PORT="0",
            SLACK_BOT_TOKEN=slack.bot_token,
            SLACK_APP_TOKEN=slack.app_token,
            SLACK_API_URL=slack.api_url,
        )
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "--no-web",
            env=env,
            cwd=tmp_path,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            assert proc.stdout is not None
            output = ""
            while "Metrics and health:" not in output:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line, output
                output += line.decode()
            url = output.split("Metrics and health: ", 1)[1].split()[0]
            assert url.startswith("http://127.0.0.1:")
            async with httpx.AsyncClient(timeout=30) as client:
                metrics = await client.get(url)
                health = await client.get(url.replace("/metrics", "/healthz"))
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
    assert metrics.status_code == 200
    assert "llmconnect_active_replies" in metrics.text
    assert health.status_code == 200
