"""Each wire protocol end to end: text, finish reason, usage, and what the server received."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from llmconnect import APIClientFactory
from tests.fakes.llm_server import FakeLLMServer, RawStream, Reply

from .conftest import KEY, ClientMaker, collect

HISTORY = [
    {"role": "user", "content": "earlier question"},
    {"role": "assistant", "content": "earlier answer"},
]
DELTAS = ["Grüße ", "aus ", "😀 ", "Köln", "!"]

# --------------------------------------------------------------------------- all protocols


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize(
    "fault",
    [{}, {"write_sizes": 1}, {"write_sizes": [3, 7, 1]}, {"crlf": True}, {"keepalive": True}],
    ids=["plain", "bytewise", "3-7-1", "crlf", "keepalive"],
)
async def test_stream_deltas_exact_however_bytes_arrive(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str, fault: dict[str, Any]
) -> None:
    llm_server.enqueue(Reply(deltas=DELTAS, **fault))
    client = make_client(provider, "m")
    assert await collect(client, "hi") == DELTAS
    assert client.finish_reason == "stop"
    assert client.messages[-1] == {"role": "assistant", "content": "".join(DELTAS)}


@pytest.mark.parametrize(
    ("provider", "server_reason"),
    [("openai", "length"), ("anthropic", "max_tokens"), ("gemini", "MAX_TOKENS")],
)
async def test_token_limit_maps_to_length(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str, server_reason: str
) -> None:
    llm_server.enqueue(Reply(text="cut off mid", finish_reason=server_reason))
    client = make_client(provider, "m")
    assert await client.chat("hi") == "cut off mid"
    assert client.finish_reason == "length"
    assert client.truncated is True


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_usage_reported(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    llm_server.enqueue(Reply(text="one two three", usage=(21, 9)))
    client = make_client(provider, "m")
    await client.chat("hi")
    assert client.usage is not None
    assert client.usage.input_tokens == 21
    assert client.usage.output_tokens == 9
    assert client.usage.total_tokens == 30


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_history_and_default_reply(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    client = make_client(provider, "m", messages=HISTORY)
    assert await client.chat("how are you") == "You said: how are you"
    assert await client.chat("and now") == "You said: and now"
    assert len(client.messages) == 6


# --------------------------------------------------------------------------- OpenAI


async def test_openai_request(llm_server: FakeLLMServer, make_client: ClientMaker) -> None:
    client = make_client("openai", "gpt-4o-mini", messages=HISTORY, system="You are terse.")
    llm_server.enqueue(Reply(text="Sure.", usage=(5, 2)))
    assert await client.chat("hello") == "Sure."

    request = llm_server.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "text/event-stream" in request.headers["accept"]
    body = request.json
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        *HISTORY,
        {"role": "user", "content": "hello"},
    ]
    assert client.finish_reason == "stop"
    assert client.usage is not None
    assert (client.usage.input_tokens, client.usage.output_tokens) == (5, 2)


async def test_openai_without_system_prompt_sends_no_system_message(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    await make_client().chat("hello")
    assert [m["role"] for m in llm_server.requests[-1].json["messages"]] == ["user"]


async def test_mistral_gets_no_stream_options(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client("mistral", "mistral-small-latest")
    assert await client.chat("hi") == "You said: hi"
    assert "stream_options" not in llm_server.requests[-1].json
    assert client.usage is None  # the server was not asked for usage and sent none


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_echo_options_are_not_sent_to_a_provider(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    # echo's pacing and length (the engine passes them to every model in benchmarks) stay
    # home; the other options still go out.
    client = make_client(provider, "m", words=500, delay=0.5, temperature=0.5, seed=3)
    assert client.options["words"] == 500  # kept on the client, as given
    assert await client.chat("hi") == "You said: hi"
    body = llm_server.requests[-1].json
    sent = {**body, **body.get("generationConfig", {})}
    assert "words" not in sent
    assert "delay" not in sent
    assert sent["seed"] == 3
    assert sent["temperature"] == 0.5


async def test_echo_still_reads_its_options() -> None:
    client = APIClientFactory.create(model="echo", env={}, words=6)
    assert await client.chat("a b") == "[echo] You said: a b a"


async def test_openai_usage_none_without_usage_chunk(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"plain"},"finish_reason":null}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    llm_server.enqueue(RawStream(body))
    client = make_client()
    assert await client.chat("hi") == "plain"
    assert client.usage is None
    assert client.finish_reason == "stop"


async def test_groq_usage_in_x_groq(llm_server: FakeLLMServer, make_client: ClientMaker) -> None:
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hey"},"finish_reason":null}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        b'"x_groq":{"usage":{"prompt_tokens":4,"completion_tokens":1}}}\n\n'
        b"data: [DONE]\n\n"
    )
    llm_server.enqueue(RawStream(body))
    client = make_client("groq", "llama")
    assert await client.chat("hi") == "hey"
    assert client.usage is not None
    assert (client.usage.input_tokens, client.usage.output_tokens) == (4, 1)


# --------------------------------------------------------------------------- Anthropic


async def test_anthropic_request(llm_server: FakeLLMServer, make_client: ClientMaker) -> None:
    client = make_client("anthropic", "claude-x", messages=HISTORY, system="You are terse.")
    llm_server.enqueue(Reply(deltas=["Bon", "jour"], usage=(8, 3)))
    assert await collect(client, "hello") == ["Bon", "jour"]

    request = llm_server.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    body = request.json
    assert body["model"] == "claude-x"
    assert body["stream"] is True
    assert body["system"] == "You are terse."
    assert body["messages"] == [*HISTORY, {"role": "user", "content": "hello"}]
    assert all(m["role"] != "system" for m in body["messages"])
    assert body["max_tokens"] == 4096  # required by the API: a default is always sent
    assert client.finish_reason == "stop"  # end_turn
    assert client.usage is not None
    assert (client.usage.input_tokens, client.usage.output_tokens) == (8, 3)


async def test_anthropic_options_mapped(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client("anthropic", "claude-x", max_tokens=64, stop="END", temperature=0.1)
    await client.chat("hi")
    body = llm_server.requests[-1].json
    assert body["max_tokens"] == 64
    assert body["stop_sequences"] == ["END"]
    assert "stop" not in body
    assert body["temperature"] == 0.1
    assert "system" not in body


async def test_anthropic_stop_sequence_is_stop(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    llm_server.enqueue(Reply(text="ok", finish_reason="stop_sequence"))
    client = make_client("anthropic", "claude-x")
    await client.chat("hi")
    assert client.finish_reason == "stop"
    assert client.truncated is False


# --------------------------------------------------------------------------- Gemini


async def test_gemini_request(llm_server: FakeLLMServer, make_client: ClientMaker) -> None:
    client = make_client("gemini", "gemini-2.5-flash", messages=HISTORY, system="You are terse.")
    llm_server.enqueue(Reply(text="Hallo Welt", usage=(6, 2)))
    assert await client.chat("hello") == "Hallo Welt"

    request = llm_server.requests[-1]
    assert request.method == "POST"
    assert request.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert request.query == {"alt": "sse"}
    assert request.headers["x-goog-api-key"] == KEY
    assert "authorization" not in request.headers
    assert KEY not in request.path
    assert all(KEY not in k and KEY not in v for k, v in request.query.items())
    body = request.json
    assert body["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "earlier question"}]},
        {"role": "model", "parts": [{"text": "earlier answer"}]},
        {"role": "user", "parts": [{"text": "hello"}]},
    ]
    assert client.finish_reason == "stop"
    assert client.usage is not None
    assert (client.usage.input_tokens, client.usage.output_tokens) == (6, 2)


async def test_gemini_options_mapped(llm_server: FakeLLMServer, make_client: ClientMaker) -> None:
    client = make_client("gemini", "g", max_tokens=32, temperature=0.5, top_p=0.8, stop=["x", "y"])
    await client.chat("hi")
    body = llm_server.requests[-1].json
    assert body["generationConfig"] == {
        "maxOutputTokens": 32,
        "temperature": 0.5,
        "topP": 0.8,
        "stopSequences": ["x", "y"],
    }
    assert "systemInstruction" not in body


async def test_gemini_key_from_env_goes_in_header(
    llm_server: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    env = {"GOOGLE_API_KEY": "g-key-123456", "GEMINI_BASE_URL": llm_server.gemini_base_url}
    client = APIClientFactory.create(model="gemini/g", env=env, http_client=http)
    await client.chat("hi")
    request = llm_server.requests[-1]
    assert request.headers["x-goog-api-key"] == "g-key-123456"
    assert "g-key-123456" not in request.path
    assert request.query == {"alt": "sse"}


async def test_gemini_safety_finish(llm_server: FakeLLMServer, make_client: ClientMaker) -> None:
    llm_server.enqueue(Reply(text="partial", finish_reason="SAFETY"))
    client = make_client("gemini", "g")
    await client.chat("hi")
    assert client.finish_reason == "content_filter"
    assert client.truncated is False


# --------------------------------------------------------------------------- echo


async def test_echo_end_to_end() -> None:
    client = APIClientFactory.create(model="echo", env={}, system="ignored offline")
    deltas = await collect(client, "ping pong")
    assert deltas == ["[echo] ", "You ", "said: ", "ping ", "pong"]
    assert client.finish_reason == "stop"
    assert client.usage is not None
    assert (client.usage.input_tokens, client.usage.output_tokens) == (2, 5)
    assert await client.chat("   ") == "[echo] You said: (nothing)"


async def test_echo_words_option() -> None:
    client = APIClientFactory.create(model="echo", env={}, words=10)
    deltas = await collect(client, "a b")
    assert len(deltas) == 10
    assert "".join(deltas) == "[echo] You said: a b a b a b a"
