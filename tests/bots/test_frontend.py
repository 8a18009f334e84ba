"""The front-end protocol (:mod:`bots.frontend`): a fourth front end, written here, runs under the
same runner as Discord, Slack and the web chat without a line of ``core/`` changing; the runner's
exit codes; the one setting of the life cycle (``SHUTDOWN_GRACE``); and ``llmconnect web``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from pydantic import Field

from bots.frontend import DEFAULT_GRACE, RunError, RunSettings
from bots.registry import FRONT_ENDS, settings_classes
from bots.run import NOTHING_TO_RUN, Runner, configured
from core.conversations import ConversationKey
from core.engine import ChatEngine, Reply
from core.settings import EnvSettings, SettingsError, load_settings

CLI = [sys.executable, "-m", "bots.console"]


@pytest.fixture(autouse=True)
def no_machine_settings(clean_settings_env: None) -> None:
    """Every test here: no setting from this machine, no ``.env`` (tests/conftest.py)."""


# --------------------------------------------------------------------------- a fourth front end


class PipeSettings(EnvSettings):
    """Its own settings, read like any other (``PIPE_CHANNEL``, ``PIPE_ENABLED``)."""

    pipe_enabled: bool = Field(False, description="Start the pipe under `llmconnect run`.")
    pipe_channel: str = Field("main", description="The conversation it talks in.")


class PipeFrontEnd:
    """A minimal front end: prompts arrive on a queue, answers are collected in a list."""

    name = "Pipe"
    label: ClassVar[str] = "Pipe"
    hint: ClassVar[str] = "PIPE_ENABLED=1"
    settings_class: ClassVar[type[PipeSettings]] = PipeSettings

    @classmethod
    def configured(cls, settings: PipeSettings) -> bool:
        return settings.pipe_enabled

    def __init__(self, settings: PipeSettings) -> None:
        self.settings = settings
        self.notes = ["Prompts go to PipeFrontEnd.inbox."]
        self.inbox: asyncio.Queue[str] = asyncio.Queue()
        self.answers: list[str] = []
        self.answered = asyncio.Event()
        self.engine: ChatEngine | None = None
        self.closed_with: float | None = None
        self.hurried = 0
        self._replies: list[Reply] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, engine: ChatEngine) -> str:
        self.engine = engine
        self._task = asyncio.create_task(self._serve(engine))
        return f"reading prompts for #{self.settings.pipe_channel}"

    async def _serve(self, engine: ChatEngine) -> None:
        key = ConversationKey("pipe", self.settings.pipe_channel)
        while True:
            text = await self.inbox.get()
            reply = await engine.submit(key, text)
            self._replies.append(reply)
            await reply
            self.answers.append(reply.text)
            self.answered.set()

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def aclose(self, grace: float) -> None:
        self.closed_with = grace
        for reply in self._replies:
            if reply.task is not None and not reply.done:
                reply.task.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    def hurry(self) -> None:
        self.hurried += 1


class Broken(PipeFrontEnd):
    """Dies on its own after start: ``cause`` says how."""

    cause: BaseException = ConnectionResetError("the platform hung up")

    async def _serve(self, engine: ChatEngine) -> None:
        raise self.cause


class Refusing(PipeFrontEnd):
    """Refuses to start, as a front end with a missing setting does, after taking a resource."""

    async def start(self, engine: ChatEngine) -> str:
        self.engine = engine  # a half-started front end still gets aclose
        raise RunError("PIPE_CHANNEL is not set: name the channel.")


async def started(runner: Runner) -> asyncio.Task[int]:
    task = asyncio.create_task(runner.run(install_signal_handlers=False))
    ready = asyncio.create_task(runner.started.wait())
    await asyncio.wait([task, ready], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    assert runner.started.is_set(), "the runner did not start"
    return task


async def test_a_fourth_front_end_runs_under_the_runner_with_no_core_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It is configured by its own settings (from the environment), starts with the shared
    engine, answers through it, and is closed with ``SHUTDOWN_GRACE``."""
    monkeypatch.setenv("PIPE_ENABLED", "1")
    monkeypatch.setenv("PIPE_CHANNEL", "lab")
    monkeypatch.setenv("SHUTDOWN_GRACE", "3.5")
    grace = load_settings(RunSettings).shutdown_grace
    frontends, hints = configured([PipeFrontEnd])
    assert hints == []
    (pipe,) = frontends
    assert isinstance(pipe, PipeFrontEnd)
    out = StringIO()
    runner = Runner(load_settings(), frontends, env={}, grace=grace, out=out)
    task = await started(runner)

    assert pipe.engine is runner.engine
    await pipe.inbox.put("hello pipe")
    await asyncio.wait_for(pipe.answered.wait(), 30)
    runner.request_stop()
    code = await asyncio.wait_for(task, 30)

    assert code == 0
    assert pipe.answers == ["[echo] You said: hello pipe"]
    stored = await runner.engine.store.get(ConversationKey("pipe", "lab"))
    assert stored is not None
    assert [m.content for m in stored.messages] == ["hello pipe", "[echo] You said: hello pipe"]
    assert pipe.closed_with == 3.5
    banner = out.getvalue()
    assert "  Pipe:         reading prompts for #lab" in banner
    assert "Prompts go to PipeFrontEnd.inbox." in banner
    assert "Stopped." in banner


async def test_the_registry_decides_what_runs_and_what_is_hinted() -> None:
    """``llmconnect run``'s choice, as :func:`configured` makes it from each class: the web chat
    always, the others when their settings say so; a hint for each of the rest."""
    frontends, hints = configured([*FRONT_ENDS, PipeFrontEnd])
    assert [fe.name for fe in frontends] == ["Web chat"]
    assert hints == [
        ("Discord", "DISCORD_TOKEN"),
        (
            "Slack",
            "SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP)",
        ),
        ("Pipe", "PIPE_ENABLED=1"),
    ]
    frontends, hints = configured(
        [*FRONT_ENDS, PipeFrontEnd], discord_token="t", pipe_enabled=True, web_port=0
    )
    assert [fe.name for fe in frontends] == ["Web chat", "Discord bot", "Pipe"]
    assert [label for label, _ in hints] == ["Slack"]
    runner = Runner(load_settings(), [], env={}, hints=hints, out=StringIO())
    assert runner.hints()[-1] == hints[0]  # after the model's


async def test_every_wrong_setting_of_every_front_end_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        configured([*FRONT_ENDS, PipeFrontEnd], web_port="eighty", pipe_enabled="perhaps")
    message = str(info.value)
    assert message.splitlines()[0] == "Invalid configuration:"
    assert "WEB_PORT" in message
    assert "PIPE_ENABLED" in message


async def test_a_front_end_that_stops_on_its_own_stops_the_rest_with_exit_code_1() -> None:
    pipe, broken = PipeFrontEnd(PipeSettings()), Broken(PipeSettings())
    out = StringIO()
    code = await Runner(load_settings(), [pipe, broken], env={}, out=out).run(
        install_signal_handlers=False
    )
    assert code == 1
    assert "Pipe stopped: ConnectionResetError: the platform hung up" in out.getvalue()
    assert pipe.closed_with == DEFAULT_GRACE  # the others were closed with the grace
    assert broken.closed_with == DEFAULT_GRACE
    assert "Stopped." in out.getvalue()


async def test_a_configuration_problem_that_leaves_nothing_running_is_exit_code_2() -> None:
    """As ``llmconnect discord`` with a token Discord rejects: the only front end could not run."""

    class Rejected(Broken):
        cause = RunError("the platform rejected PIPE_TOKEN")

    out = StringIO()
    code = await Runner(load_settings(), [Rejected(PipeSettings())], env={}, out=out).run(
        install_signal_handlers=False
    )
    assert code == 2
    assert "Pipe stopped: the platform rejected PIPE_TOKEN" in out.getvalue()


async def test_a_front_end_that_cannot_start_is_exit_code_2_and_is_still_closed() -> None:
    first, refusing = PipeFrontEnd(PipeSettings()), Refusing(PipeSettings())
    out = StringIO()
    code = await Runner(load_settings(), [first, refusing], env={}, out=out).run(
        install_signal_handlers=False
    )
    assert code == 2
    assert "PIPE_CHANNEL is not set: name the channel." in out.getvalue()
    assert first.closed_with == refusing.closed_with == DEFAULT_GRACE
    assert "Stopped." in out.getvalue()


async def test_nothing_to_run_is_exit_code_2() -> None:
    out = StringIO()
    code = await Runner(load_settings(), [], env={}, out=out).run(install_signal_handlers=False)
    assert code == 2
    assert NOTHING_TO_RUN in out.getvalue()


async def test_a_second_stop_hurries_every_front_end() -> None:
    pipe = PipeFrontEnd(PipeSettings())
    runner = Runner(load_settings(), [pipe], env={}, brief=True, out=StringIO())
    task = await started(runner)
    runner.request_stop()
    runner.request_stop()
    assert await asyncio.wait_for(task, 30) == 0
    assert pipe.hurried == 1
    assert runner.out.getvalue().startswith("Pipe reading prompts for #main\n")  # type: ignore[attr-defined]


def test_shutdown_grace_has_a_default_and_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(RunSettings).shutdown_grace == DEFAULT_GRACE == 10.0
    assert load_settings(RunSettings, shutdown_grace=0).shutdown_grace == 0  # at the limit
    with pytest.raises(SettingsError, match="SHUTDOWN_GRACE"):
        load_settings(RunSettings, shutdown_grace=-1)
    monkeypatch.setenv("SHUTDOWN_GRACE", "2.5")
    assert load_settings(RunSettings).shutdown_grace == 2.5
    assert RunSettings in settings_classes()


# --------------------------------------------------------------------------- processes


def test_doctor_and_the_registry_load_no_platform_library() -> None:
    """``llmconnect doctor`` reads every front end's settings without importing FastAPI, uvicorn,
    discord.py or slack-bolt (they load only when a front end starts)."""
    code = (
        "import sys, bots.doctor, bots.registry, bots.run; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'discord', 'slack_bolt', 'starlette') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def empty_env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {**{k: v for k, v in os.environ.items() if k in keep}, **extra}


async def test_llmconnect_web_serves_the_web_chat_alone(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "web",
        "--port",
        "0",
        env=empty_env(DISCORD_TOKEN="never-used", SHUTDOWN_GRACE="1"),
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        match = re.match(r"Web chat (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        async with httpx.AsyncClient(base_url=match.group(1), timeout=30) as client:
            page = await client.get("/")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert page.status_code == 200
    assert proc.returncode == 0, err.decode()
    assert "Discord" not in err.decode()  # the web chat alone, even with a token set
    assert "Stopped." in err.decode()
    assert out == b""


def test_run_without_the_web_chat_and_without_a_bot_is_exit_code_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "run", "--no-web"],
        env=empty_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert NOTHING_TO_RUN in result.stdout


def test_a_wrong_front_end_setting_stops_run_before_anything_starts(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "run"],
        env=empty_env(SLACK_STREAMING="sometimes", SHUTDOWN_GRACE="-1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "SLACK_STREAMING" in result.stderr
    assert "SHUTDOWN_GRACE" in result.stderr
    assert "Web chat" not in result.stdout
