"""core.mcp: MCP_SERVERS checked, real servers (tests/fakes/mcp_server.py, the ``mcp`` SDK's
MCPServer) connected over stdio and streamable HTTP, their tools called within the limits, a
dead stdio server started again after the backoff, and no secret anywhere."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import tests.fakes.mcp_server
from core.clock import FakeClock
from core.mcp import (
    McpManager,
    McpServerConfig,
    ServerStatus,
    ToolResult,
    ToolSpec,
    cut_result,
    parse_mcp_servers,
    validate_arguments,
)
from tests.fakes.mcp_server import serve_http

from .conftest import wait_for

SERVER_SCRIPT = str(Path(tests.fakes.mcp_server.__file__))
ENV_SECRET = "env-LEAKCHECK-5e1f0a"
HEADER_TOKEN = "hdr-LEAKCHECK-77aa01"
URL_PASSWORD = "pw-LEAKCHECK-0b0b"
QUERY_KEY = "q-LEAKCHECK-c4c4"
SECRETS = (ENV_SECRET, HEADER_TOKEN, URL_PASSWORD, QUERY_KEY)


def stdio_entry(**extra: Any) -> dict[str, Any]:
    return {"command": [sys.executable, SERVER_SCRIPT], **extra}


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


@pytest.fixture
async def managers() -> AsyncIterator[list[McpManager]]:
    made: list[McpManager] = []
    yield made
    for manager in made:
        await manager.aclose()


def manager_for(made: list[McpManager], servers: Mapping[str, Any], **options: Any) -> McpManager:
    manager = McpManager(parse_mcp_servers(servers), **options)
    made.append(manager)
    manager.start()
    return manager


async def call(
    manager: McpManager,
    name: str,
    arguments: Mapping[str, Any],
    *,
    allowed: tuple[str, ...] = ("files",),
    time_limit: float = 30.0,
    max_chars: int = 20_000,
) -> ToolResult:
    return await manager.call(
        name, arguments, allowed=allowed, time_limit=time_limit, max_chars=max_chars
    )


# ----------------------------------------------------------------------------- configuration


def test_stdio_and_http_servers_are_read() -> None:
    servers = parse_mcp_servers(
        '{"files": {"command": ["python", "-m", "x", "/srv"], "env": {"K": "v"}},'
        ' "search": {"url": "https://h.test/mcp", "headers": {"Authorization": "Bearer t"},'
        ' "confirm": true}}'
    )
    files, search = servers["files"], servers["search"]
    assert (files.kind, files.command, dict(files.env), files.confirm) == (
        "stdio",
        ("python", "-m", "x", "/srv"),
        {"K": "v"},
        False,
    )
    assert (search.kind, search.url, dict(search.headers), search.confirm) == (
        "http",
        "https://h.test/mcp",
        {"Authorization": "Bearer t"},
        True,
    )
    assert parse_mcp_servers("") == {} == parse_mcp_servers("  ")


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("[1]", "a JSON object of servers"),
        ('{"a.b": {"command": ["x"]}}', "server name"),
        ('{"a__b": {"command": ["x"]}}', "no __"),
        (f'{{"{"x" * 33}": {{"command": ["x"]}}}}', "1 to 32"),
        ('{"f": 3}', "f: an object with command"),
        ('{"f": {}}', "f: give either command"),
        ('{"f": {"command": ["x"], "url": "https://h"}}', "f: give either command"),
        ('{"f": {"command": "python -m x"}}', "f: command is a list of strings"),
        ('{"f": {"command": []}}', "f: command is a list of strings"),
        ('{"f": {"command": ["x", ""]}}', "f: command is a list of strings"),
        ('{"f": {"command": ["x"], "env": {"K": 1}}}', "f: env is an object of strings"),
        ('{"f": {"command": ["x"], "headers": {}}}', "f: headers go with url"),
        ('{"f": {"url": "https://h", "env": {}}}', "f: env goes with command"),
        ('{"f": {"url": "ftp://h/mcp"}}', "f: url must be http:// or https://"),
        ('{"f": {"url": "https:///mcp"}}', "f: url must be http:// or https:// with a host"),
        ('{"f": {"url": "https://h:port/"}}', "f: url is not a valid URL"),
        ('{"f": {"url": 3}}', "f: url is a string"),
        ('{"f": {"url": "https://h", "headers": ["a"]}}', "f: headers is an object of strings"),
        ('{"f": {"url": "https://h", "confirm": "yes"}}', "f: confirm is true or false"),
        ('{"f": {"url": "https://h", "timeout": 3}}', "f: unknown key 'timeout'"),
        ("{not json", "not valid JSON (line 1)"),
    ],
)
def test_a_wrong_configuration_says_what_is_wrong(raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_mcp_servers(raw)


def test_errors_never_show_a_value() -> None:
    cases = [
        f'{{"f": {{"url": "ftp://u:{URL_PASSWORD}@h", "headers": {{"A": "{HEADER_TOKEN}"}}}}}}',
        f'{{"f": {{"command": ["x"], "env": {{"K": "{ENV_SECRET}"}}, "headers": {{}}}}}}',
        f'{{"f": {{"url": "https://h", "{HEADER_TOKEN}": 1}}}}',
        f'{{"{HEADER_TOKEN}-with/slash": {{"url": "https://h"}}}}',
        f'{{"f": {{"command": ["x"]}}, oops "{HEADER_TOKEN}"}}',
    ]
    for raw in cases:
        with pytest.raises(ValueError, match=r".") as info:
            parse_mcp_servers(raw)
        assert leaks(str(info.value)) == [], raw


def test_a_configuration_shows_no_secret() -> None:
    servers = parse_mcp_servers(
        {
            "web": {
                "url": f"https://me:{URL_PASSWORD}@h.test:8443/mcp?key={QUERY_KEY}",
                "headers": {"Authorization": f"Bearer {HEADER_TOKEN}"},
            },
            "files": stdio_entry(env={"TOKEN": ENV_SECRET}),
        }
    )
    web = servers["web"]
    assert web.where == "https://h.test:8443/mcp"
    shown = repr(servers) + str(web) + repr(McpManager(servers))
    assert leaks(shown) == []
    assert "web" in shown
    assert "files" in shown
    said = f"failed at https://me:{URL_PASSWORD}@h.test/mcp?key={QUERY_KEY}: {HEADER_TOKEN}"
    assert leaks(web.redact(said)) == []
    assert servers["files"].redact(f"got {ENV_SECRET}") == "got ***"


# ----------------------------------------------------------------------------- results


def test_a_result_is_cut_past_the_limit_only() -> None:
    assert cut_result("x" * 100, 100) == "x" * 100
    cut = cut_result("x" * 101, 100)
    assert cut.startswith("x" * 100 + "\n[cut: 1 more characters")
    assert "TOOL_MAX_RESULT_CHARS=100" in cut


def test_arguments_are_checked_against_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "p": {"type": "object"}},
        "required": ["a"],
    }
    assert validate_arguments(schema, {"a": 1}) is None
    assert validate_arguments(schema, {}) == "'a' is a required property"
    assert validate_arguments(schema, {"a": "1"}) == "a: '1' is not of type 'integer'"
    assert "not valid JSON Schema" in str(validate_arguments({"type": 3}, {}))


# ----------------------------------------------------------------------------- stdio


async def test_a_stdio_server_lists_its_tools_and_runs_them(managers: list[McpManager]) -> None:
    manager = manager_for(managers, {"files": stdio_entry()})
    await manager.wait_ready()
    state = manager.states["files"]
    assert state.status is ServerStatus.READY
    tools = manager.tools(["files"])
    assert [t.name for t in tools] == [
        "files.add",
        "files.echo",
        "files.slow",
        "files.fail",
        "files.env",
        "files.die",
    ]
    assert [t.wire_name for t in tools][:2] == ["files__add", "files__echo"]
    add = tools[0]
    assert add.description == "Add two integers."
    assert add.schema["required"] == ["a", "b"]
    assert manager.tools(["other"]) == []
    assert manager.find("files__add") is add is manager.find("files.add")

    assert await call(manager, "files__add", {"a": 2, "b": 3}) == ToolResult("5")
    assert await call(manager, "files.add", {"a": 2, "b": 40}) == ToolResult("42")


async def test_bad_calls_become_error_results(managers: list[McpManager]) -> None:
    manager = manager_for(managers, {"files": stdio_entry(), "other": stdio_entry()})
    await manager.wait_ready()

    unknown = await call(manager, "files__nope", {})
    assert unknown.is_error
    assert "Unknown tool 'files__nope'" in unknown.text
    # A server the conversation may not use is as unknown as a tool that does not exist.
    other = await call(manager, "other__add", {"a": 1, "b": 2})
    assert other.is_error
    assert "Unknown tool" in other.text

    bad = await call(manager, "files__add", {"a": "two", "b": 3})
    assert bad == ToolResult(
        "Invalid arguments for files.add: a: 'two' is not of type 'integer'", True
    )
    missing = await call(manager, "files__add", {"a": 1})
    assert missing == ToolResult(
        "Invalid arguments for files.add: 'b' is a required property", True
    )

    failed = await call(manager, "files__fail", {"message": "boom"})
    assert failed.is_error
    assert failed.text.startswith("files.fail failed: ")
    # The server still serves after a failing tool.
    assert await call(manager, "files__add", {"a": 1, "b": 1}) == ToolResult("2")


async def test_the_env_reaches_the_server(managers: list[McpManager]) -> None:
    manager = manager_for(managers, {"files": stdio_entry(env={"MY_SETTING": "on"})})
    await manager.wait_ready()
    assert await call(manager, "files__env", {"name": "MY_SETTING"}) == ToolResult("on")
    # Only a few safe variables are inherited (the SDK's rule), not the bot's environment.
    assert await call(manager, "files__env", {"name": "PYTEST_CURRENT_TEST"}) == ToolResult("")


async def test_a_result_is_cut_at_tool_max_result_chars(managers: list[McpManager]) -> None:
    manager = manager_for(managers, {"files": stdio_entry()})
    await manager.wait_ready()
    at = await call(manager, "files__echo", {"text": "ab", "times": 50}, max_chars=100)
    assert at == ToolResult("ab" * 50)
    over = await call(manager, "files__echo", {"text": "ab", "times": 50}, max_chars=99)
    assert not over.is_error
    assert over.text == cut_result("ab" * 50, 99)
    assert over.text.endswith("[cut: 1 more characters not shown (TOOL_MAX_RESULT_CHARS=99)]")


async def test_a_call_is_cancelled_at_tool_timeout(managers: list[McpManager]) -> None:
    clock = FakeClock()
    manager = manager_for(managers, {"files": stdio_entry()}, clock=clock)
    await manager.wait_ready()
    slow = asyncio.create_task(call(manager, "files__slow", {"seconds": 60}, time_limit=30))
    await wait_for(lambda: clock.next_deadline() == 30.0)
    await clock.advance(29.999)
    assert not slow.done()
    await clock.advance(0.001)
    assert await slow == ToolResult("files.slow timed out after 30 s (TOOL_TIMEOUT).", True)
    # The server goes on serving the next call.
    assert await call(manager, "files__add", {"a": 1, "b": 2}) == ToolResult("3")


async def test_cancelling_the_caller_cancels_the_call(managers: list[McpManager]) -> None:
    manager = manager_for(managers, {"files": stdio_entry()})
    await manager.wait_ready()
    slow = asyncio.create_task(call(manager, "files__slow", {"seconds": 60}))
    await asyncio.sleep(0.2)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await call(manager, "files__add", {"a": 1, "b": 2}) == ToolResult("3")


async def test_a_dead_stdio_server_is_started_again_after_the_backoff(
    managers: list[McpManager],
) -> None:
    clock = FakeClock()
    manager = manager_for(
        managers, {"files": stdio_entry()}, clock=clock, backoff=2.0, max_backoff=5.0
    )
    state = manager.states["files"]
    await manager.wait_ready()
    assert state.starts == 1

    died = await call(manager, "files__die", {})
    assert died.is_error
    assert died.text.startswith("files.die failed")
    # Down, waiting out the first backoff on the clock: no new process before it.
    await wait_for(lambda: clock.next_deadline() == 2.0)
    assert state.status is ServerStatus.DOWN
    assert state.starts == 1
    assert manager.tools(["files"]) == []
    down = await call(manager, "files__add", {"a": 1, "b": 2})
    assert down.is_error
    await clock.advance(1.999)
    assert state.starts == 1
    await clock.advance(0.001)
    await wait_for(lambda: state.status is ServerStatus.READY, tries=2000)
    assert state.starts == 2
    assert await call(manager, "files__add", {"a": 1, "b": 2}) == ToolResult("3")

    # Dying again soon: the backoff doubles, up to max_backoff.
    await call(manager, "files__die", {})
    await wait_for(lambda: clock.next_deadline() == clock.now() + 4.0)
    await clock.advance(4.0)
    await wait_for(lambda: state.status is ServerStatus.READY, tries=2000)
    await call(manager, "files__die", {})
    await wait_for(lambda: clock.next_deadline() == clock.now() + 5.0)
    await clock.advance(5.0)
    await wait_for(lambda: state.status is ServerStatus.READY, tries=2000)
    assert state.starts == 4

    # Up for max_backoff seconds before it dies: the backoff starts over.
    await clock.advance(5.0)
    await call(manager, "files__die", {})
    await wait_for(lambda: clock.next_deadline() == clock.now() + 2.0)


async def test_a_server_that_cannot_start_is_down_and_retried(
    managers: list[McpManager], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    manager = manager_for(
        managers,
        {"gone": {"command": ["/nonexistent/mcp-server"], "env": {"KEY": ENV_SECRET}}},
        clock=clock,
    )
    await manager.wait_ready()
    state = manager.states["gone"]
    assert state.status is ServerStatus.DOWN
    assert state.problem
    await wait_for(lambda: clock.next_deadline() == 1.0)
    await clock.advance(1.0)
    await wait_for(lambda: state.starts == 2)
    assert "mcp gone (mcp-server) is down" in caplog.text


async def test_a_confirm_server_is_offered_and_runs_only_approved_calls(
    managers: list[McpManager],
) -> None:
    """Its tools are offered (the engine asks the asker to approve each call); a call without
    the approval is refused here too, a safety net; the checks come before any approval."""
    manager = manager_for(managers, {"files": stdio_entry(confirm=True)})
    await manager.wait_ready()
    assert manager.confirming
    [add] = [t for t in manager.tools(["files"]) if t.tool == "add"]
    assert manager.needs_approval(add)
    denied = await call(manager, "files__add", {"a": 1, "b": 2})
    assert denied.is_error
    assert "needs the user's approval" in denied.text
    approved = await manager.call(
        "files__add",
        {"a": 1, "b": 2},
        allowed=["files"],
        time_limit=30,
        max_chars=100,
        approved=True,
    )
    assert approved == ToolResult("3")
    spec, refused = manager.check("files__add", {"a": "x"}, allowed=["files"])
    assert spec is add
    assert refused is not None
    assert "Invalid arguments" in refused.text


async def test_a_confirm_server_asks_its_approver_before_each_call(
    managers: list[McpManager],
) -> None:
    """With ``approve`` (the terminal chat's y/N) its tools are offered, each call is asked
    about with its checked arguments, and a no is an error result; nothing is asked for bad
    arguments, nor for a server without ``confirm``."""
    asked: list[tuple[str, dict[str, Any]]] = []
    answers = [True, False]

    async def approve(spec: ToolSpec, arguments: Mapping[str, Any]) -> bool:
        asked.append((spec.name, dict(arguments)))
        return answers.pop(0)

    manager = manager_for(
        managers,
        {"files": stdio_entry(confirm=True), "plain": stdio_entry()},
        approve=approve,
    )
    await manager.wait_ready()
    assert [t.name for t in manager.tools(["files"])][:2] == ["files.add", "files.echo"]

    allowed = await call(manager, "files__add", {"a": 1, "b": 2})
    denied = await call(manager, "files__add", {"a": 3, "b": 4})
    invalid = await call(manager, "files__add", {"a": "one"})
    unconfirmed = await call(manager, "plain__add", {"a": 5, "b": 6}, allowed=("plain",))

    assert (allowed.text, allowed.is_error) == ("3", False)
    assert (denied.text, denied.is_error) == ("The user denied the call to files.add.", True)
    assert invalid.is_error
    assert invalid.text.startswith("Invalid arguments for files.add")
    assert (unconfirmed.text, unconfirmed.is_error) == ("11", False)
    assert asked == [("files.add", {"a": 1, "b": 2}), ("files.add", {"a": 3, "b": 4})]


# ----------------------------------------------------------------------------- HTTP


async def test_a_streamable_http_server_with_headers(managers: list[McpManager]) -> None:
    async with serve_http("search", token=HEADER_TOKEN) as server:
        manager = manager_for(
            managers,
            {"search": {"url": server.url, "headers": {"Authorization": f"Bearer {HEADER_TOKEN}"}}},
        )
        await manager.wait_ready()
        assert manager.states["search"].status is ServerStatus.READY
        assert [t.name for t in manager.tools(["search"])][:2] == ["search.add", "search.echo"]
        result = await call(manager, "search__add", {"a": 20, "b": 22}, allowed=("search",))
        assert result == ToolResult("42")
        slow = await call(
            manager, "search__slow", {"seconds": 5}, allowed=("search",), time_limit=0.2
        )
        assert slow == ToolResult("search.slow timed out after 0.2 s (TOOL_TIMEOUT).", True)
        assert server.authorization
        assert set(server.authorization) == {f"Bearer {HEADER_TOKEN}"}
        await manager.aclose()


async def test_secrets_stay_out_of_logs_states_and_results(
    managers: list[McpManager], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve_http("search", token="the-right-one") as server:
        host = server.url.removeprefix("http://")
        manager = manager_for(
            managers,
            {
                # Refused (401): its error and every request line carry what it was given.
                "search": {
                    "url": f"http://me:{URL_PASSWORD}@{host}?key={QUERY_KEY}",
                    "headers": {"Authorization": f"Bearer {HEADER_TOKEN}"},
                },
                "files": stdio_entry(env={"TOKEN": ENV_SECRET}),
            },
            backoff=0.05,
        )
        await manager.wait_ready()
        search = manager.states["search"]
        # Refused, and tried again every 0.05 s: down, or starting its next attempt.
        assert search.status in (ServerStatus.DOWN, ServerStatus.STARTING)
        assert search.problem
        await wait_for(lambda: search.starts >= 2, tries=1000)
        failed = await call(manager, "files__fail", {"message": ENV_SECRET})
        await manager.aclose()
    assert failed.is_error
    shown = caplog.text + "".join(r.getMessage() for r in caplog.records)
    shown += repr(manager) + repr(manager.states) + search.problem + failed.text
    assert "mcp search" in caplog.text  # it was logged, without them
    assert leaks(shown) == []


def test_a_config_repr_is_the_same_for_equal_configs() -> None:
    a = McpServerConfig("f", command=("x",), env={"K": ENV_SECRET})
    assert a == McpServerConfig("f", command=("x",), env={"K": ENV_SECRET})
    assert leaks(repr(a)) == []
