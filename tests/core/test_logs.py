"""core.logs: LOG_FORMAT, LOG_LEVEL, LOG_CONTENT and the one line per reply at its end.

Replies run through a real engine against the loopback LLM stand-in; the log lines are what
:func:`configure_logging` writes (to a string instead of standard error), parsed back.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.clock import FakeClock
from core.conversations import ConversationKey, Status
from core.logs import configure_logging, conversation_hash, set_hash_salt
from core.settings import SettingsError, load_settings
from tests.conftest import restored_logging
from tests.fakes.llm_server import Fail, FakeLLMServer
from tests.fakes.llm_server import Reply as Scripted

from .conftest import EngineMaker, wait_for

KEY = ConversationKey("test", "C-RAW-CHANNEL-42")
PROMPT = "my launch code is swordfish"
ANSWER = "the password is marmalade, keep it safe"
KEY_ECHO = {"error": {"message": "Incorrect API key provided: sk-LOGCHECK-1234", "code": "x"}}


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Where :func:`configure_logging` writes in these tests; the root logger restored after."""
    with restored_logging() as out:
        yield out


def setup(out: io.StringIO, **overrides: Any) -> None:
    configure_logging(load_settings(**overrides), stream=out)


def json_lines(out: io.StringIO) -> list[dict[str, Any]]:
    lines = out.getvalue().splitlines()
    assert lines
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


def reply_ends(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["message"].startswith("reply end")]


async def run_one(
    make_engine: EngineMaker,
    server: FakeLLMServer,
    http: httpx.AsyncClient,
    *actions: Scripted | Fail,
    **overrides: Any,
) -> Any:
    server.enqueue(*actions)
    clock = FakeClock()
    engine = make_engine(
        env={"LOCAL_BASE_URL": server.openai_base_url, "LOCAL_API_KEY": "sk-LOGCHECK-1234"},
        clock=clock,
        http_client=http,
        llmconnect_model="local/fake",
        llm_max_retries=0,
        **overrides,
    )
    return await (await engine.submit(KEY, PROMPT))


async def test_json_lines_carry_the_reply_figures_once_and_no_text(
    logs: io.StringIO,
    make_engine: EngineMaker,
    llm_server: FakeLLMServer,
    http: httpx.AsyncClient,
) -> None:
    setup(logs, log_format="json")
    reply = await run_one(make_engine, llm_server, http, Scripted(text=ANSWER))
    assert reply.status is Status.COMPLETE

    lines = json_lines(logs)
    (end,) = reply_ends(lines)
    for field in ("time", "level", "logger"):
        assert end[field]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", end["time"])
    assert end["level"] == "INFO"
    assert end["logger"] == "llmconnect.engine"
    assert end["frontend"] == "test"
    assert re.fullmatch(r"[0-9a-f]{12}", end["conversation"])
    assert end["conversation"] == conversation_hash(KEY)
    assert end["reply_id"] == reply.id
    assert (end["provider"], end["model"], end["status"]) == ("local", "fake", "complete")
    assert end["chars"] == len(ANSWER)
    assert end["deltas"] == len(ANSWER.split())
    assert end["ttft"] == 0.0
    assert end["duration"] == 0.0
    assert "error_kind" not in end
    text = logs.getvalue()
    for private in ("swordfish", "marmalade", "C-RAW-CHANNEL-42"):
        assert private not in text


async def test_usage_tokens_are_on_the_line_when_the_provider_reports_them(
    logs: io.StringIO,
    make_engine: EngineMaker,
    llm_server: FakeLLMServer,
    http: httpx.AsyncClient,
) -> None:
    setup(logs, log_format="json")
    llm_server.enqueue(Scripted(text=ANSWER, usage=(11, 5)))
    engine = make_engine(
        env={"GROQ_BASE_URL": llm_server.openai_base_url, "GROQ_API_KEY": "gsk_test"},
        clock=FakeClock(),
        http_client=http,
        llmconnect_model="groq/fake",
    )
    await (await engine.submit(KEY, PROMPT))
    (end,) = reply_ends(json_lines(logs))
    assert (end["provider"], end["model"]) == ("groq", "fake")
    assert (end["input_tokens"], end["output_tokens"]) == (11, 5)


async def test_a_provider_error_is_logged_with_its_kind_and_without_the_key(
    logs: io.StringIO,
    make_engine: EngineMaker,
    llm_server: FakeLLMServer,
    http: httpx.AsyncClient,
) -> None:
    setup(logs, log_format="json")
    reply = await run_one(make_engine, llm_server, http, Fail(401, body=KEY_ECHO))
    assert reply.status is Status.ERROR

    lines = json_lines(logs)
    (end,) = reply_ends(lines)
    assert end["status"] == "error"
    assert end["error_kind"] == "AuthenticationError"
    assert end["deltas"] == 0
    assert end["chars"] == 0
    assert "ttft" not in end  # no token ever came
    # The failure's own warning carries the reply's context (set when its task started).
    (failed,) = [line for line in lines if line["message"].startswith("reply failed")]
    assert failed["reply_id"] == reply.id
    assert failed["conversation"] == end["conversation"]
    assert failed["level"] == "WARNING"
    text = logs.getvalue()
    for private in ("sk-LOGCHECK-1234", "swordfish", "C-RAW-CHANNEL-42"):
        assert private not in text


async def test_log_content_adds_the_prompt_and_the_text(
    logs: io.StringIO,
    make_engine: EngineMaker,
    llm_server: FakeLLMServer,
    http: httpx.AsyncClient,
) -> None:
    setup(logs, log_format="json", log_content=True)
    await run_one(make_engine, llm_server, http, Scripted(text=ANSWER), log_content=True)
    (end,) = reply_ends(json_lines(logs))
    assert end["prompt"] == PROMPT
    assert end["text"] == ANSWER


async def test_log_level_warning_drops_the_reply_line_and_keeps_warnings(
    logs: io.StringIO,
    make_engine: EngineMaker,
    llm_server: FakeLLMServer,
    http: httpx.AsyncClient,
) -> None:
    setup(logs, log_format="json", log_level="warning")
    await run_one(make_engine, llm_server, http, Scripted(text=ANSWER))
    await run_one(make_engine, llm_server, http, Fail(401, body=KEY_ECHO))
    lines = json_lines(logs)
    assert reply_ends(lines) == []
    assert {line["level"] for line in lines} == {"WARNING"}


async def test_text_format_names_the_reply_and_keeps_text_out(
    logs: io.StringIO,
    make_engine: EngineMaker,
    llm_server: FakeLLMServer,
    http: httpx.AsyncClient,
) -> None:
    setup(logs)
    reply = await run_one(make_engine, llm_server, http, Scripted(text=ANSWER))
    (line,) = [line for line in logs.getvalue().splitlines() if "reply end" in line]
    assert " INFO llmconnect.engine: reply end: local/fake status=complete" in line
    assert f"chars={len(ANSWER)}" in line
    assert line.endswith(f"[test {conversation_hash(KEY)} {reply.id}]")
    assert "marmalade" not in logs.getvalue()
    assert "swordfish" not in logs.getvalue()


async def test_a_configured_salt_gives_the_same_hash_in_every_process(
    logs: io.StringIO,
) -> None:
    setup(logs, log_hash_salt="pepper")
    first = conversation_hash(KEY)
    set_hash_salt(None)  # another process, without the salt: another hash
    assert conversation_hash(KEY) != first
    setup(logs, log_hash_salt="pepper")
    assert conversation_hash(KEY) == first
    assert conversation_hash(ConversationKey("test", "other")) != first


def test_log_settings_are_read_and_checked() -> None:
    settings = load_settings(log_level="debug", log_format="JSON")
    assert (settings.log_level, settings.log_format, settings.log_content) == (
        "DEBUG",
        "json",
        False,
    )
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        load_settings(log_format="xml")
    with pytest.raises(SettingsError, match="LOG_LEVEL"):
        load_settings(log_level="chatty")
    with pytest.raises(SettingsError) as err:
        load_settings(log_hash_salt="s3cr3t-salt", log_level="nope")
    assert "s3cr3t-salt" not in str(err.value)


async def test_a_stopped_reply_and_a_queued_one_each_log_one_line(
    logs: io.StringIO,
    make_engine: EngineMaker,
    llm_server: FakeLLMServer,
    http: httpx.AsyncClient,
) -> None:
    setup(logs, log_format="json")
    llm_server.enqueue(Scripted(text=ANSWER, hang_after=1))
    engine = make_engine(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        clock=FakeClock(),
        http_client=http,
        llmconnect_model="local/fake",
    )
    running = await engine.submit(KEY, PROMPT)
    queued = await engine.submit(KEY, "next")
    await wait_for(lambda: running.text != "")
    await engine.reset(KEY)  # stops the one that runs, drops the queued one
    await running
    await queued
    ends = {end["reply_id"]: end for end in reply_ends(json_lines(logs))}
    assert len(ends) == 2
    assert ends[running.id]["status"] == ends[queued.id]["status"] == "cancelled"
    assert ends[running.id]["deltas"] == 1
    assert ends[running.id]["ttft"] == 0.0
    assert ends[queued.id]["deltas"] == 0
    assert "ttft" not in ends[queued.id]
