"""Function calling through the real client against the stand-in, in each protocol.

The stand-in streams tool calls the way each provider does (OpenAI-compatible ``tool_calls``
deltas, Anthropic ``tool_use`` blocks with ``input_json_delta``, Gemini ``functionCall`` parts),
two parallel calls with their arguments in pieces; the client hands out one :class:`ToolCall`
shape, and the results it sends back are read from the recorded request in the protocol's format.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from llmconnect import (
    NOT_RUN,
    PROVIDERS,
    TEXT,
    TOOL_CALL,
    AsyncAPIClient,
    ReplyStream,
    StreamInterruptedError,
    Tool,
    ToolCall,
    ToolResult,
    assistant_turn,
    supports_tools,
    tool_results_turn,
)
from llmconnect.tools import GENERATED_ID_PREFIX, parse_arguments
from tests.fakes.llm_server import FakeLLMServer, FakeToolCall, Reply

from .conftest import ClientMaker

WEATHER = Tool(
    "get_weather",
    "The current weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool("get_time", "The local time in a city.", {"properties": {"city": {"type": "string"}}})
TOOLS = [WEATHER, TIME]

#: provider → a model of it that takes tools.
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
PROVIDER_IDS = list(MODELS)

PARIS = {"city": "Paris", "note": 'naïve ☀ "quoted"'}
TWO_CALLS = [
    FakeToolCall("get_weather", PARIS, id="call_w"),
    FakeToolCall("get_time", {"city": "Oslo"}, id="call_t", pieces=5),
]


def _two_calls(provider: str) -> list[FakeToolCall]:
    """Two parallel calls as the provider sends them: Gemini (before 3) gives no ids."""
    if provider != "gemini":
        return TWO_CALLS
    return [dataclasses.replace(call, id=None) for call in TWO_CALLS]


async def _events(stream: ReplyStream) -> list[tuple[str, Any]]:
    return [event async for event in stream.events()]


def _client(make_client: ClientMaker, provider: str, **kwargs: Any) -> AsyncAPIClient:
    return make_client(provider, MODELS[provider], **kwargs)


@pytest.mark.parametrize("provider", PROVIDER_IDS)
@pytest.mark.parametrize("write_sizes", [None, 7], ids=["events", "7-byte-writes"])
async def test_two_parallel_calls_between_text(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str, write_sizes: int | None
) -> None:
    llm_server.enqueue(
        Reply(
            text="Let me check. ",
            tool_calls=_two_calls(provider),
            text_after="One moment.",
            write_sizes=write_sizes,
        )
    )
    client = _client(make_client, provider)
    stream = await client.chat("Weather and time?", stream=True, tools=TOOLS)
    events = await _events(stream)

    kinds = [kind for kind, _ in events]
    first_call = kinds.index(TOOL_CALL)
    assert kinds[first_call : first_call + 2] == [TOOL_CALL, TOOL_CALL]
    text = [value for kind, value in events if kind == TEXT]
    before = "".join(v for k, v in events[:first_call] if k == TEXT)
    after = "".join(v for k, v in events[first_call + 2 :] if k == TEXT)
    assert before == "Let me check. "
    assert after == "One moment."
    assert all(type(t) is str for t in text)

    calls = [value for kind, value in events if kind == TOOL_CALL]
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert calls[0].arguments == PARIS
    assert calls[1].arguments == {"city": "Oslo"}
    assert all(isinstance(c, ToolCall) and c.error is None for c in calls)
    if provider == "gemini":  # Gemini sent no ids: made up, unique
        assert all(c.id.startswith(GENERATED_ID_PREFIX) for c in calls)
        assert calls[0].id != calls[1].id
    else:
        assert [c.id for c in calls] == ["call_w", "call_t"]

    assert stream.done
    assert stream.tool_calls == calls
    assert stream.finish_reason == "tool_calls"
    assert stream.text == "Let me check. One moment."
    assert client.tool_calls == calls
    assert client.messages[-1] == {
        "role": "assistant",
        "content": "Let me check. One moment.",
        "tool_calls": calls,
    }
    # the tools went out in the protocol's own shape
    request = llm_server.requests[-1]
    assert request.tool_names() == ["get_weather", "get_time"]
    body = request.json
    if provider == "openai":
        assert body["tools"][0] == {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": WEATHER.description,
                "parameters": dict(WEATHER.parameters),
            },
        }
        assert body["tools"][1]["function"]["parameters"]["type"] == "object"
    elif provider == "anthropic":
        assert body["tools"][0]["input_schema"] == dict(WEATHER.parameters)
    else:
        declaration = body["tools"][0]["functionDeclarations"][0]
        assert declaration["parametersJsonSchema"] == dict(WEATHER.parameters)


@pytest.mark.parametrize("provider", PROVIDER_IDS)
async def test_results_reach_the_model_in_its_format_and_the_answer_streams(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    llm_server.enqueue(
        Reply(tool_calls=_two_calls(provider)),
        Reply(text="Sunny in Paris, 10:00 in Oslo."),
        Reply(text="You are welcome."),
    )
    client = _client(make_client, provider)
    first = await client.chat("Weather and time?", stream=True, tools=TOOLS)
    assert [delta async for delta in first] == []  # the text iterator: no text, calls kept
    weather, time = first.tool_calls
    results = [weather.result("sunny, 21 °C"), time.result("clock broken", is_error=True)]

    second = await client.send_tool_results(results, stream=True, tools=TOOLS)
    events = await _events(second)
    assert "".join(v for k, v in events if k == TEXT) == "Sunny in Paris, 10:00 in Oslo."
    assert all(k == TEXT for k, _ in events)
    assert second.tool_calls == []
    assert second.finish_reason == "stop"

    request = llm_server.requests[-1]
    sent_calls = request.tool_calls()
    assert [(c.name, c.arguments) for c in sent_calls] == [
        ("get_weather", PARIS),
        ("get_time", {"city": "Oslo"}),
    ]
    received = request.tool_results()
    assert [r.content for r in received] == [
        "sunny, 21 °C",
        "Error: clock broken" if provider == "openai" else "clock broken",
    ]
    assert [r.name for r in received] == ["get_weather", "get_time"]
    if provider == "openai":
        assert [r.call_id for r in received] == ["call_w", "call_t"]
        assert [r.native for r in received] == ["tool", "tool"]
        assistant = request.json["messages"][-3]
        assert assistant["role"] == "assistant"
        assert assistant["content"] is None
    elif provider == "anthropic":
        assert [r.call_id for r in received] == ["call_w", "call_t"]
        assert [r.is_error for r in received] == [False, True]
        assert [r.native for r in received] == ["user/tool_result"] * 2
        roles = [m["role"] for m in request.json["messages"]]
        assert roles == ["user", "assistant", "user"]
    else:
        assert [r.call_id for r in received] == [None, None]  # made-up ids never go back
        assert [c.id for c in sent_calls] == [None, None]
        assert [r.is_error for r in received] == [False, True]
        assert [r.native for r in received] == ["user/functionResponse"] * 2
        roles = [c["role"] for c in request.json["contents"]]
        assert roles == ["user", "model", "user"]

    # The history keeps the exchange, in the neutral form, and a follow-up sends it all again.
    assert [m["role"] for m in client.messages] == ["user", "assistant", "tool", "assistant"]
    assert client.messages[2] == tool_results_turn(results)
    assert await client.chat("Thanks!", tools=TOOLS) == "You are welcome."
    again = llm_server.requests[-1]
    assert [r.content for r in again.tool_results()] == [r.content for r in received]
    assert len(again.tool_calls()) == 2


@pytest.mark.parametrize("provider", PROVIDER_IDS)
@pytest.mark.parametrize(
    ("arguments", "why"),
    [("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object but list")],
    ids=["malformed", "not-an-object"],
)
async def test_bad_arguments_are_a_call_with_an_error_not_a_crash(
    llm_server: FakeLLMServer,
    make_client: ClientMaker,
    provider: str,
    arguments: str,
    why: str,
) -> None:
    if provider == "gemini" and arguments.startswith("{"):
        arguments = '"{not json"'  # Gemini sends args as JSON values: a string, not an object
        why = "not a JSON object but str"
    llm_server.enqueue(
        Reply(tool_calls=[FakeToolCall("get_weather", arguments, id="call_bad")]),
        Reply(text="Sorry, let me retry."),
    )
    client = _client(make_client, provider)
    stream = await client.chat("Weather?", stream=True, tools=TOOLS)
    events = await _events(stream)
    (call,) = [value for kind, value in events if kind == TOOL_CALL]
    assert call.name == "get_weather"
    assert call.arguments == {}
    assert call.error is not None
    assert why in call.error
    assert stream.done

    answer = await client.send_tool_results([call.result(call.error, is_error=True)], tools=TOOLS)
    assert answer == "Sorry, let me retry."
    (result,) = llm_server.requests[-1].tool_results()
    assert why in result.content
    # the call goes back with no arguments rather than the broken text
    (sent,) = llm_server.requests[-1].tool_calls()
    assert sent.arguments == {}


@pytest.mark.parametrize("provider", PROVIDER_IDS)
async def test_no_tools_nothing_changes(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    llm_server.enqueue(Reply(text="plain answer"))
    client = _client(make_client, provider)
    stream = await client.chat("hi", stream=True)
    assert [d async for d in stream] == ["plain ", "answer"]
    assert stream.tool_calls == []
    assert not stream.tools_dropped
    body = llm_server.requests[-1].json
    assert "tools" not in body
    assert client.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "plain answer"},
    ]


@pytest.mark.parametrize("provider", PROVIDER_IDS)
async def test_whole_json_reply_with_calls(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    """A proxy that ignores ``stream: true``: the calls come from the one JSON body."""
    llm_server.enqueue(Reply(text="Checking.", tool_calls=_two_calls(provider), ignore_stream=True))
    client = _client(make_client, provider)
    stream = await client.chat("Weather and time?", stream=True, tools=TOOLS)
    events = await _events(stream)
    assert [k for k, _ in events] == [TEXT, TOOL_CALL, TOOL_CALL]
    assert events[0][1] == "Checking."
    assert [c.arguments for c in stream.tool_calls] == [PARIS, {"city": "Oslo"}]
    assert stream.finish_reason == "tool_calls"


async def test_model_without_tools_gets_none_and_says_so(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    """o1-mini takes no tools: the request carries none (the stand-in would answer 400), the
    reply goes on, and the stream says the tools were dropped."""
    llm_server.no_tool_models = {"o1-mini"}
    llm_server.enqueue(Reply(text="no tools here"))
    client = make_client("openai", "o1-mini")
    assert not client.supports_tools
    stream = await client.chat("Weather?", stream=True, tools=TOOLS)
    assert "".join([d async for d in stream]) == "no tools here"
    assert stream.tools_dropped
    assert stream.done
    assert "tools" not in llm_server.requests[-1].json


async def test_the_stand_in_refuses_tools_to_a_model_without_them(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    """The other side of the test above: forced on, the request would have failed."""
    llm_server.no_tool_models = {"o1-mini"}
    client = make_client("openai", "o1-mini")
    client.supports_tools = True
    with pytest.raises(Exception, match="does not support tools"):
        await client.chat("Weather?", tools=TOOLS)


@pytest.mark.parametrize("provider", PROVIDER_IDS)
async def test_tool_turns_become_text_for_a_request_without_tools(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    """A history with tool turns sent without tools (tools disabled, a fallback model that
    takes none): notes in the text, no tool blocks (Anthropic refuses those without tools)."""
    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    history = [
        {"role": "user", "content": "Weather?"},
        assistant_turn("", [call]),
        tool_results_turn([call.result("sunny")]),
        {"role": "assistant", "content": "It is sunny."},
    ]
    llm_server.enqueue(Reply(text="ok"))
    client = _client(make_client, provider, messages=history)
    assert await client.chat("And tomorrow?") == "ok"
    request = llm_server.requests[-1]
    assert request.tool_calls() == []
    assert request.tool_results() == []
    turns = request.turns()
    assert all(part.kind == "text" for _, parts in turns for part in parts)
    texts = [part.text for _, parts in turns for part in parts]
    assert '[called tool get_weather with {"city": "Paris"}]' in texts
    assert "[result of tool get_weather: sunny]" in texts


@pytest.mark.parametrize("provider", PROVIDER_IDS)
async def test_a_call_left_without_result_is_answered_not_run(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    """The caller stopped after the calls (no results): the next turn still pairs each call."""
    llm_server.enqueue(Reply(tool_calls=_two_calls(provider)), Reply(text="fine"))
    client = _client(make_client, provider)
    await client.chat("Weather and time?", tools=TOOLS)
    assert len(client.tool_calls) == 2
    assert await client.chat("Never mind.", tools=TOOLS) == "fine"
    results = llm_server.requests[-1].tool_results()
    assert [r.name for r in results] == ["get_weather", "get_time"]
    assert all(NOT_RUN in r.content for r in results)
    if provider != "openai":
        assert all(r.is_error for r in results)


@pytest.mark.parametrize("provider", PROVIDER_IDS)
async def test_stored_history_as_dicts_continues(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    """A conversation store keeps the turns as JSON (``to_dict``); a new client continues it."""
    llm_server.enqueue(Reply(tool_calls=TWO_CALLS[:1]), Reply(text="Sunny."))
    client = _client(make_client, provider)
    await client.chat("Weather?", tools=TOOLS)
    (call,) = client.tool_calls
    stored = json.loads(
        json.dumps(
            [
                {
                    **m,
                    "tool_calls": [c.to_dict() for c in m.get("tool_calls", [])],
                    "tool_results": [r.to_dict() for r in m.get("tool_results", [])],
                }
                for m in client.messages
            ]
        )
    )
    later = _client(make_client, provider, messages=stored)
    assert later.messages == client.messages
    assert await later.send_tool_results([call.result("sunny")], tools=TOOLS) == "Sunny."
    (result,) = llm_server.requests[-1].tool_results()
    assert result.content == "sunny"
    assert result.name == "get_weather"


async def test_gemini_ids_and_thought_signatures_go_back(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    llm_server.enqueue(
        Reply(tool_calls=[FakeToolCall("get_weather", PARIS, id="fc-1", signature="c2lnbmF0dXJl")]),
        Reply(text="Sunny."),
    )
    client = _client(make_client, "gemini")
    await client.chat("Weather?", tools=TOOLS)
    (call,) = client.tool_calls
    assert call.id == "fc-1"
    assert call.signature == "c2lnbmF0dXJl"
    assert "c2lnbmF0dXJl" not in repr(call)
    await client.send_tool_results([call.result("sunny")], tools=TOOLS)
    request = llm_server.requests[-1]
    (sent,) = request.tool_calls()
    assert (sent.id, sent.signature) == ("fc-1", "c2lnbmF0dXJl")
    (result,) = request.tool_results()
    assert result.call_id == "fc-1"


async def test_anthropic_ids_from_another_provider_are_made_safe(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    call = ToolCall("call:1.a", "get_weather", {})
    history = [{"role": "user", "content": "Weather?"}, assistant_turn("", [call])]
    llm_server.enqueue(Reply(text="ok"))
    client = _client(make_client, "anthropic", messages=history)
    await client.send_tool_results([call.result("sunny")], tools=TOOLS)
    request = llm_server.requests[-1]
    assert request.tool_calls()[0].id == "call_1_a"
    assert request.tool_results()[0].call_id == "call_1_a"


@pytest.mark.parametrize(("provider", "cut"), [("openai", 6), ("anthropic", 8)])
async def test_a_stream_cut_after_a_call_is_not_retried(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str, cut: int
) -> None:
    """Once a call reached the caller, a failure is raised, never answered twice. ``cut``
    events: the first call whole, the second begun. (Gemini sends its calls in one event.)"""
    llm_server.enqueue(Reply(tool_calls=TWO_CALLS, drop_after=cut), Reply(text="again"))
    client = _client(make_client, provider)
    stream = await client.chat("Weather?", stream=True, tools=TOOLS)
    seen: list[tuple[str, Any]] = []

    async def read() -> None:
        async for event in stream.events():
            seen.append(event)

    with pytest.raises(StreamInterruptedError):
        await read()
    assert [k for k, _ in seen] == [TOOL_CALL]
    assert seen[0][1].arguments == PARIS
    assert llm_server.pending == 1  # not retried
    assert client.messages == []  # the history takes nothing from a failed reply


def test_tool_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="invalid tool name"):
        Tool("files.read_file")
    with pytest.raises(ValueError, match="invalid tool name"):
        Tool("x" * 65)
    with pytest.raises(ValueError, match="object schema"):
        Tool("t", parameters={"type": "string"})
    assert Tool("t").schema == {"type": "object", "properties": {}}
    assert Tool("t", parameters={"properties": {}}).schema["type"] == "object"


async def test_two_tools_with_one_name_are_refused(make_client: ClientMaker) -> None:
    client = make_client("openai", "gpt-4o-mini")
    with pytest.raises(ValueError, match="same name"):
        await client.chat("hi", tools=[WEATHER, WEATHER])
    assert client.messages == []


def test_parse_arguments() -> None:
    assert parse_arguments("") == ({}, None)
    assert parse_arguments('{"a": 1}') == ({"a": 1}, None)
    assert parse_arguments({"a": 1}) == ({"a": 1}, None)
    arguments, error = parse_arguments("{" * 300)
    assert arguments == {}
    assert error is not None
    assert error.endswith("…")
    assert len(error) < 300


def test_round_trip_as_dicts() -> None:
    call = ToolCall("c1", "get_weather", {"city": "Paris"}, "bad", "sig")
    assert ToolCall.from_dict(json.loads(json.dumps(call.to_dict()))) == call
    result = ToolResult("c1", "get_weather", "sunny", is_error=True)
    assert ToolResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert call.result("x") == ToolResult("c1", "get_weather", "x", False)
    with pytest.raises(ValueError, match="at least one result"):
        tool_results_turn([])


@pytest.mark.parametrize(
    ("model", "env", "expected"),
    [
        ("openai/gpt-4o-mini", {}, True),
        ("openai/o1-mini", {}, False),
        ("openai/chatgpt-4o-latest", {}, False),
        ("anthropic/claude-sonnet-4-5", {}, True),
        ("gemini/gemini-2.5-flash", {}, True),
        ("gemini/gemma-3-27b-it", {}, False),
        ("gemini/gemini-2.5-flash-preview-tts", {}, False),
        ("groq/llama-3.3-70b-versatile", {}, True),
        ("groq/llama-guard-4-12b", {}, False),
        ("ollama/llama3.1:8b", {}, True),
        ("ollama/gemma2:2b", {}, False),
        ("ollama/gemma2:2b", {"LLMCONNECT_TOOL_MODELS": "ollama/gemma2*"}, True),
        ("ollama/gemma2:2b", {"LLMCONNECT_TOOL_MODELS": " x , GEMMA2:2B "}, True),
        ("ollama/gemma2:2b", {"LLMCONNECT_TOOL_MODELS": "groq/gemma2*"}, False),
        ("echo", {}, False),
        ("nosuch/model", {}, False),
        ("vllm/my-model", {"VLLM_BASE_URL": "http://127.0.0.1:1/v1"}, True),
    ],
)
def test_which_models_take_tools(model: str, env: dict[str, str], expected: bool) -> None:
    assert supports_tools(model, env) is expected


def test_every_provider_row_states_its_tool_models() -> None:
    for spec in PROVIDERS.values():
        assert isinstance(spec.tool_models, tuple)
        assert isinstance(spec.no_tool_models, tuple)
        assert bool(spec.tool_models) is (spec.protocol != "echo")
