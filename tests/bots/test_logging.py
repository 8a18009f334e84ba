"""Logs of a real serving process: ``llmconnect web`` with ``LOG_FORMAT=json``, one chat request,
SIGTERM; its standard error parsed line by line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

CLI = [sys.executable, "-m", "bots.console", "web", "--port", "0"]
URL = re.compile(r"(http://127\.0\.0\.1:\d+)")
PROMPT = "my launch code is swordfish"


@pytest.fixture(autouse=True)
def no_machine_settings(clean_settings_env: None) -> None:
    """No setting from this machine, no ``.env`` (tests/conftest.py)."""


def env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {**{k: v for k, v in os.environ.items() if k in keep}, **extra}


async def serve_one(tmp_path: Path, **settings: str) -> tuple[int, list[str], dict[str, Any]]:
    """Start ``llmconnect web``, send one prompt, stop it: (exit code, stderr lines, end event)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        env=env(**settings),
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        while not (match := URL.search("".join(lines))):
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "".join(lines)
            lines.append(line.decode())
        async with httpx.AsyncClient(base_url=match.group(1), timeout=30) as client:
            await client.post("/chat/logs/send-message", json={"text": PROMPT})
            async with aconnect_sse(client, "GET", "/chat/logs/bot-stream") as source:
                end = [json.loads(e.data) async for e in source.aiter_sse() if e.event == "end"]
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return code, "".join([*lines, rest.decode()]).splitlines(), end[0]


async def test_json_logs_of_a_real_process_have_one_line_per_reply(tmp_path: Path) -> None:
    code, lines, end = await serve_one(tmp_path, LOG_FORMAT="json")
    assert code == 0
    assert end["status"] == "complete"
    assert "swordfish" in end["content"]
    # The runner's own lines (where it serves, "Stopping") are plain text; every log line is JSON.
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    ends = [line for line in logged if line["message"].startswith("reply end")]
    assert len(ends) == 1
    (line,) = ends
    assert line["frontend"] == "web"
    assert (line["provider"], line["model"], line["status"]) == ("echo", "echo", "complete")
    assert line["chars"] == len(end["content"])
    assert line["deltas"] > 1
    assert re.fullmatch(r"[0-9a-f]{12}", line["conversation"])
    assert isinstance(line["duration"], float)
    assert isinstance(line["ttft"], float)
    assert not any("swordfish" in text for text in lines)


async def test_log_content_true_puts_the_text_in_the_reply_line(tmp_path: Path) -> None:
    code, lines, end = await serve_one(tmp_path, LOG_FORMAT="json", LOG_CONTENT="true")
    assert code == 0
    (line,) = [json.loads(line) for line in lines if line.startswith("{") and "reply end" in line]
    assert line["prompt"] == PROMPT
    assert line["text"] == end["content"]


async def test_log_level_error_keeps_the_reply_line_out(tmp_path: Path) -> None:
    code, lines, _ = await serve_one(tmp_path, LOG_FORMAT="json", LOG_LEVEL="ERROR")
    assert code == 0
    assert not any(line.startswith("{") for line in lines)
