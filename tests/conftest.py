"""Suite-wide test settings and the real Redis the store and multi-process tests share.

Redis comes from ``TEST_REDIS_URL`` when set, else a ``redis-server`` this session starts on a
private Unix socket (Debian: ``apt-get install redis-server``). Without either the Redis cases
skip, saying so; with ``LLMCONNECT_REQUIRE_REDIS=1`` (CI) they fail instead.

Hypothesis explores new random examples on every developer run; under CI (``CI`` is set, as
``.ci/run`` has it) the examples are derandomized, so a landing never depends on the draw. A rare
failure found locally is a real finding: keep its example as an explicit test.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from hypothesis import settings

from bots.registry import settings_classes
from core.logs import BOLT_LOGGER, set_hash_salt

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def _no_redis(reason: str) -> None:
    if os.environ.get("LLMCONNECT_REQUIRE_REDIS"):
        pytest.fail(f"{reason} (LLMCONNECT_REQUIRE_REDIS is set)")
    pytest.skip(reason)


def _wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    client = redis.Redis.from_url(url)
    try:
        for _ in range(500):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {proc.returncode}")
            try:
                if client.ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.01)
        raise RuntimeError(f"Redis at {url} never answered PING")
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis every test may use (each test keeps to its own keys)."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        _wait_ready(url)
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        _no_redis(
            "no Redis for the store tests: set TEST_REDIS_URL or install redis-server "
            "(apt-get install redis-server)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="llmc-redis-"))  # short: a socket path has a limit
    sock = workdir / "redis.sock"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"unix://{sock}?db=0"
    try:
        _wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def clean_settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting comes from the developer's machine (every variable of the core's and each front
    end's settings is removed from the environment) and no ``.env`` is read (the test runs in an
    empty directory)."""
    names = {name for cls in settings_classes() for name in cls.model_fields}
    for var in list(os.environ):
        if var.lower() in names:
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


#: The database bot-level tests get (the store tests keep to their own key prefixes in 0).
BOT_DB = 1


@pytest.fixture
def fresh_redis_url(redis_url: str) -> str:
    """``redis_url`` on a database emptied for this test: bots there use the default key
    prefix, so what one test's processes leave (heartbeats, event ids) must not meet the next."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":  # unix:///path.sock?db=N (urlunsplit would drop the "//")
        url = f"{redis_url.split('?', 1)[0]}?db={BOT_DB}"
    else:
        url = urlunsplit(parts._replace(path=f"/{BOT_DB}"))
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


#: The loggers ``core.logs.configure_logging`` sets a level on.
CONFIGURED_LOGGERS = ("", "llmconnect", BOLT_LOGGER, "httpx", "httpcore")


@contextlib.contextmanager
def restored_logging() -> Iterator[io.StringIO]:
    """A stream for ``configure_logging(..., stream=)`` in a test; the handlers and levels it
    changed, and the conversation-hash salt, are put back after."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in CONFIGURED_LOGGERS}
    try:
        yield io.StringIO()
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        set_hash_salt(None)
