"""Self-test of the fake LLM server over raw httpx, so the fake itself is trusted."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fakes.llm_server import (
    Fail,
    FakeLLMServer,
    FakeToolCall,
    RawStream,
    ReceivedPart,
    ReceivedToolCall,
    ReceivedToolResult,
    Reply,
    openai_stream_body,
    split_deltas,
)


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(models=["fake-a", "fake-b"]) as srv:
        yield srv


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as c:
        yield c


def _openai_request(stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake-a",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
        **extra,
    }


def _data_lines(body: bytes) -> list[str]:
    text = body.decode()
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


async def _post_raw(client: httpx.AsyncClient, url: str, payload: dict[str, Any]) -> bytes:
    async with client.stream("POST", url, json=payload) as resp:
        assert resp.status_code == 200
        return b"".join([chunk async for chunk in resp.aiter_raw()])


def test_split_deltas_round_trips() -> None:
    for text in ["", "a", "  lead and trail  ", "x\ny\r\nz", "héllo wörld 😀 ok"]:
        assert "".join(split_deltas(text)) == text


async def test_openai_stream_joins_and_ends_with_done(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Reply(text="Hello, wörld! 😀  two  spaces"))
    body = await _post_raw(
        client,
        server.openai_base_url + "/chat/completions",
        _openai_request(stream_options={"include_usage": True}),
    )
    assert b"event:" not in body
    data = _data_lines(body)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello, wörld! 😀  two  spaces"
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    assert all(c["model"] == "fake-a" for c in chunks)
    recorded = server.requests[-1]
    assert recorded.path == "/v1/chat/completions"
    assert recorded.json["messages"][0]["content"] == "hello there"
    assert recorded.headers["Content-Type"] == "application/json"


async def test_openai_default_reply_echoes_and_no_usage_unless_asked(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    body = await _post_raw(client, server.openai_base_url + "/chat/completions", _openai_request())
    chunks = [json.loads(d) for d in _data_lines(body)[:-1]]
    assert all("usage" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "You said: hello there"
    assert body == openai_stream_body(split_deltas("You said: hello there"), model="fake-a")


async def test_openai_non_stream(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Reply(text="full answer", finish_reason="length", usage=(3, 4)))
    resp = await client.post(
        server.openai_base_url + "/chat/completions", json=_openai_request(stream=False)
    )
    assert resp.status_code == 200
    data = resp.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == "full answer"
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize("write_sizes", [1, [1, 3, 7], 5])
async def test_write_sizes_gives_identical_bytes(
    server: FakeLLMServer, client: httpx.AsyncClient, write_sizes: int | list[int]
) -> None:
    url = server.openai_base_url + "/chat/completions"
    payload = _openai_request(stream_options={"include_usage": True})
    text = "naïve café — 日本語 done"
    server.enqueue(
        Reply(text=text, crlf=True), Reply(text=text, crlf=True, write_sizes=write_sizes)
    )
    whole = await _post_raw(client, url, payload)
    pieces = await _post_raw(client, url, payload)
    assert pieces == whole
    assert b"\r\n\r\n" in whole


async def test_raw_stream_verbatim(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    raw = openai_stream_body(["a", "b"] * 50, include_usage=True)
    server.set_stream(raw, write_sizes=[2, 1])
    server.enqueue(RawStream(b"data: x\n\n", content_type="text/plain"))
    url = server.openai_base_url + "/chat/completions"
    assert await _post_raw(client, url, _openai_request()) == raw
    async with client.stream("POST", url, json=_openai_request()) as resp:
        assert resp.headers["content-type"].startswith("text/plain")
        assert await resp.aread() == b"data: x\n\n"


async def test_fail_returns_status_and_headers(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Fail(429, headers={"Retry-After": "2"}), Fail(500, body="oops"))
    url = server.openai_base_url + "/chat/completions"
    resp = await client.post(url, json=_openai_request())
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "2"
    assert resp.json()["error"]["code"] == "rate_limit_exceeded"
    resp = await client.post(url, json=_openai_request())
    assert resp.status_code == 500
    assert resp.text == "oops"
    assert len(server.requests) == 2


async def test_openai_in_stream_error(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Reply(text="one two three", error_after=1, keepalive=True))
    body = await _post_raw(client, server.openai_base_url + "/chat/completions", _openai_request())
    assert body.count(b": keep-alive\n\n") == 3
    data = _data_lines(body)
    assert json.loads(data[1])["choices"][0]["delta"] == {"content": "one "}
    assert json.loads(data[-1]) == {
        "error": {"message": "upstream failure", "type": "server_error", "code": None}
    }


async def test_malformed_line_is_inserted(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Reply(text="a b", malformed_after=1))
    body = await _post_raw(client, server.openai_base_url + "/chat/completions", _openai_request())
    data = _data_lines(body)
    assert data[2] == "{not json"
    assert data[-1] == "[DONE]"


async def _read_until_error(
    client: httpx.AsyncClient, url: str, payload: dict[str, Any]
) -> tuple[bytes, Exception | None]:
    """Everything received before the stream failed, and the failure (if any)."""
    received = b""
    try:
        async with client.stream("POST", url, json=payload) as resp:
            async for chunk in resp.aiter_raw():
                received += chunk
    except httpx.HTTPError as exc:
        return received, exc
    return received, None


async def test_drop_after_gives_client_protocol_error(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Reply(text="one two three", drop_after=1))
    received, error = await _read_until_error(
        client, server.openai_base_url + "/chat/completions", _openai_request()
    )
    assert isinstance(error, httpx.RemoteProtocolError)
    assert b'"content":"one "' in received
    assert b"[DONE]" not in received


async def test_anthropic_stream_parses(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Reply(text="hi there friend", usage=(11, 0)))
    body = await _post_raw(
        client,
        server.anthropic_base_url + "/v1/messages",
        {
            "model": "claude-fake",
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "yo"}]}],
        },
    )
    events = body.decode().split("\n\n")
    assert events[-1] == ""
    parsed: list[tuple[str, dict[str, Any]]] = []
    for block in events[:-1]:
        name_line, data_line = block.split("\n")
        name = name_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        parsed.append((name, data))
    names = [n for n, _ in parsed]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert parsed[0][1]["message"]["usage"]["input_tokens"] == 11
    text = "".join(d["delta"]["text"] for n, d in parsed if n == "content_block_delta")
    assert text == "hi there friend"
    assert parsed[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert parsed[-2][1]["usage"] == {"output_tokens": 3}


async def test_anthropic_error_event(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Reply(text="a b c", error_after=2))
    body = await _post_raw(
        client,
        server.anthropic_base_url + "/v1/messages",
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    )
    assert body.endswith(
        b'event: error\ndata: {"type":"error","error":'
        b'{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    assert body.count(b"content_block_delta") == 4  # two events, each names it twice


async def test_gemini_stream_parses(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Reply(finish_reason="MAX_TOKENS"))
    body = await _post_raw(
        client,
        server.gemini_base_url + "/models/gemini-fake:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "ping"}]}]},
    )
    assert body.endswith(b"\r\n\r\n")
    assert b"[DONE]" not in body
    events = [json.loads(e.removeprefix(b"data: ")) for e in body.split(b"\r\n\r\n")[:-1]]
    text = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)
    assert text == "You said: ping"
    assert all(e["candidates"][0]["content"]["role"] == "model" for e in events)
    assert events[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert events[-1]["usageMetadata"] == {
        "promptTokenCount": 7,
        "candidatesTokenCount": 3,
        "totalTokenCount": 10,
    }
    assert "finishReason" not in events[0]["candidates"][0]
    recorded = server.requests[-1]
    assert recorded.path == "/v1beta/models/gemini-fake:streamGenerateContent"
    assert recorded.query == {"alt": "sse"}


async def test_models_list(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    resp = await client.get(server.openai_base_url + "/models")
    assert resp.status_code == 200
    data = resp.json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["fake-a", "fake-b"]
    assert all(m["object"] == "model" for m in data["data"])


async def test_hang_can_be_abandoned_and_stream_is_released(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Reply(text="one two three", hang_after=1))
    async with client.stream(
        "POST", server.openai_base_url + "/chat/completions", json=_openai_request()
    ) as resp:
        first = b""
        async for chunk in resp.aiter_raw():
            first += chunk
            if b'"content":"one "' in first:
                break
        assert server.open_streams == 1
    for _ in range(200):
        if server.open_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert server.open_streams == 0
    assert server.disconnects == 1


async def test_hang_is_released_by_server_close(client: httpx.AsyncClient) -> None:
    srv = await FakeLLMServer().start()
    srv.enqueue(Reply(hang_after=0))
    async with client.stream(
        "POST", srv.openai_base_url + "/chat/completions", json=_openai_request()
    ) as resp:
        await srv.close()
        with pytest.raises(httpx.RemoteProtocolError):
            await resp.aread()
    assert srv.open_streams == 0
    assert srv.disconnects == 0


# --------------------------------------------------------------------------- issue 14 additions


@pytest.mark.parametrize("way", ["reasoning_content", "reasoning"])
async def test_openai_reasoning_fields_before_the_content(
    server: FakeLLMServer, client: httpx.AsyncClient, way: str
) -> None:
    server.enqueue(Reply(text="Yes.", reasoning=["Hm", "m."], reasoning_as=way))  # type: ignore[arg-type]
    body = await _post_raw(client, server.openai_base_url + "/chat/completions", _openai_request())
    deltas = [json.loads(d)["choices"][0]["delta"] for d in _data_lines(body)[:-1]]
    assert [d[way] for d in deltas if d.get(way)] == ["Hm", "m."]
    assert [d["content"] for d in deltas if d.get("content")] == ["Yes."]
    assert deltas.index({"content": None, way: "m."}) < deltas.index({"content": "Yes."})


async def test_openai_think_tag_is_split_across_chunks(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Reply(text="Yes.", reasoning="Hmm.", reasoning_as="think"))
    body = await _post_raw(client, server.openai_base_url + "/chat/completions", _openai_request())
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for d in _data_lines(body)[:-1]]
    assert [c for c in contents if c] == ["<th", "ink>", "Hmm.", "</thi", "nk>\n\n", "Yes."]


async def test_anthropic_thinking_block_then_text(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Reply(text="Yes.", reasoning=["Hm", "m."], usage=(5, 9)))
    payload = {"model": "c", "max_tokens": 9, "stream": True, "messages": []}
    body = await _post_raw(client, server.anthropic_base_url + "/v1/messages", payload)
    events = [json.loads(d) for d in _data_lines(body)]
    deltas = [(e["index"], e["delta"]) for e in events if e["type"] == "content_block_delta"]
    assert deltas == [
        (0, {"type": "thinking_delta", "thinking": "Hm"}),
        (0, {"type": "thinking_delta", "thinking": "m."}),
        (0, {"type": "signature_delta", "signature": deltas[2][1]["signature"]}),
        (1, {"type": "text_delta", "text": "Yes."}),
    ]
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text"]
    assert events[0]["message"]["usage"]["input_tokens"] == 5
    assert [e["usage"] for e in events if e["type"] == "message_delta"] == [{"output_tokens": 9}]


async def test_gemini_thought_parts_then_text(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Reply(text="Yes.", reasoning=["Hm", "m."], usage=(5, 9)))
    url = server.gemini_base_url + "/models/g:streamGenerateContent?alt=sse"
    body = await _post_raw(client, url, {"contents": [{"parts": [{"text": "q"}]}]})
    responses = [json.loads(d) for d in _data_lines(body)]
    parts = [r["candidates"][0]["content"]["parts"][0] for r in responses]
    assert parts == [
        {"text": "Hm", "thought": True},
        {"text": "m.", "thought": True},
        {"text": "Yes."},
    ]
    assert responses[-1]["usageMetadata"]["promptTokenCount"] == 5
    assert responses[-1]["usageMetadata"]["candidatesTokenCount"] == 9
    assert responses[-1]["usageMetadata"]["thoughtsTokenCount"] == 2


@pytest.mark.parametrize(
    ("protocol", "url", "payload"),
    [
        ("openai", "/v1/chat/completions", {"model": "m", "messages": [], "stream": True}),
        ("anthropic", "/v1/messages", {"model": "m", "messages": [], "stream": True}),
        ("gemini", "/v1beta/models/m:streamGenerateContent?alt=sse", {"contents": []}),
    ],
)
async def test_down_and_missing_models(
    server: FakeLLMServer,
    client: httpx.AsyncClient,
    protocol: str,
    url: str,
    payload: dict[str, Any],
) -> None:
    server.enqueue(Reply(text="kept for the next model"))
    server.down_models.add("m")
    for _ in range(3):  # every request, not just the first
        resp = await client.post(server.base_url + url, json=payload)
        assert resp.status_code == 503
    server.down_models.clear()
    server.missing_models.add("m")
    resp = await client.post(server.base_url + url, json=payload)
    assert resp.status_code == 404
    if protocol == "openai":
        assert resp.json()["error"]["code"] == "model_not_found"
    assert server.pending == 1  # neither consumed the scripted reply


async def test_anthropic_models_paged(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.models = ["a", "b", "c"]
    server.page_size = 2
    headers = {"anthropic-version": "2023-06-01"}
    first = (await client.get(server.base_url + "/v1/models", headers=headers)).json()
    assert [m["id"] for m in first["data"]] == ["a", "b"]
    assert (first["has_more"], first["last_id"]) == (True, "b")
    assert first["data"][0]["type"] == "model"
    params = {"after_id": "b"}
    second = (
        await client.get(server.base_url + "/v1/models", headers=headers, params=params)
    ).json()
    assert [m["id"] for m in second["data"]] == ["c"]
    assert second["has_more"] is False
    # without anthropic-version: OpenAI's list, never paged
    plain = (await client.get(server.base_url + "/v1/models")).json()
    assert [m["id"] for m in plain["data"]] == ["a", "b", "c"]


async def test_gemini_models_paged_with_embeddings(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.models = ["g1"]
    server.embedding_models = ["e1"]
    first = (await client.get(server.gemini_base_url + "/models", params={"pageSize": 1})).json()
    assert first["models"] == [
        {
            "name": "models/g1",
            "displayName": "g1",
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }
    ]
    params = {"pageSize": 1, "pageToken": first["nextPageToken"]}
    second = (await client.get(server.gemini_base_url + "/models", params=params)).json()
    assert second["models"][0]["supportedGenerationMethods"] == ["embedContent"]
    assert "nextPageToken" not in second


async def test_list_failure(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.list_failure = Fail(503)
    assert (await client.get(server.gemini_base_url + "/models")).status_code == 503
    assert (await client.get(server.openai_base_url + "/models")).status_code == 503


async def test_parts_are_read_alike_in_every_protocol_and_text_only_models_refuse_them(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    png = base64.b64encode(b"png-bytes").decode()
    gemini = {
        "contents": [
            {
                "role": "user",
                "parts": [{"text": "a"}, {"inlineData": {"mimeType": "image/png", "data": png}}],
            },
            {"role": "model", "parts": [{"text": "b"}]},
            {
                "role": "user",
                "parts": [
                    {"file_data": {"mime_type": "application/pdf", "file_uri": "https://x/y.pdf"}}
                ],
            },
        ]
    }
    url = server.gemini_base_url + "/models/fake-a:generateContent"
    assert (await client.post(url, json=gemini)).status_code == 200
    assert server.requests[-1].turns() == [
        (
            "user",
            [
                ReceivedPart("text", "text", text="a"),
                ReceivedPart("image", "inline_data", media_type="image/png", data=b"png-bytes"),
            ],
        ),
        ("assistant", [ReceivedPart("text", "text", text="b")]),
        (
            "user",
            [
                ReceivedPart(
                    "document", "file_data", media_type="application/pdf", url="https://x/y.pdf"
                )
            ],
        ),
    ]
    server.text_only_models.add("fake-a")
    assert (await client.post(url, json=gemini)).status_code == 400
    openai = _openai_request(stream=False)
    openai["messages"][0]["content"] = [{"type": "text", "text": "only text"}]
    response = await client.post(server.openai_base_url + "/chat/completions", json=openai)
    assert response.status_code == 200
    assert server.requests[-1].parts() == [ReceivedPart("text", "text", text="only text")]
    anthropic = {
        "model": "fake-a",
        "max_tokens": 5,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "url", "url": "https://x/c.png"}}],
            }
        ],
    }
    response = await client.post(server.anthropic_base_url + "/v1/messages", json=anthropic)
    assert response.status_code == 400
    assert server.requests[-1].parts() == [ReceivedPart("image", "image", url="https://x/c.png")]


# --------------------------------------------------------------------------- tool calls

CALLS = [
    FakeToolCall("get_weather", {"city": "Paris"}, id="c1"),
    FakeToolCall("get_time", {"city": "Oslo", "tz": True}, id="c2", pieces=4),
]


async def test_openai_tool_calls_arrive_in_pieces_one_index_after_another(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Reply(text="Checking.", tool_calls=CALLS, text_after=" Done."))
    body = await _post_raw(client, server.openai_base_url + "/chat/completions", _openai_request())
    chunks = [json.loads(d) for d in _data_lines(body)[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    entries = [e for d in deltas for e in d.get("tool_calls") or []]
    heads = [e for e in entries if "id" in e]
    assert [(h["index"], h["id"], h["function"]["name"]) for h in heads] == [
        (0, "c1", "get_weather"),
        (1, "c2", "get_time"),
    ]
    for index, call in enumerate(CALLS):
        pieces = [e["function"]["arguments"] for e in entries if e["index"] == index]
        assert len([p for p in pieces if p]) == call.pieces
        assert json.loads("".join(pieces)) == call.arguments
    indexes = [e["index"] for e in entries]
    assert indexes == sorted(indexes)  # one call after the other
    texts = [d.get("content") for d in deltas if d.get("content")]
    assert "".join(texts) == "Checking. Done."
    first_call = next(i for i, d in enumerate(deltas) if d.get("tool_calls"))
    assert "".join(d.get("content") or "" for d in deltas[:first_call]) == "Checking."
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_anthropic_tool_use_blocks_with_input_json_deltas(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Reply(text="Checking.", tool_calls=CALLS))
    payload = {"model": "fake-a", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    body = await _post_raw(client, server.anthropic_base_url + "/v1/messages", payload)
    events = [json.loads(d) for d in _data_lines(body)]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use", "tool_use"]
    assert [s["content_block"].get("id") for s in starts[1:]] == ["c1", "c2"]
    for start, call in zip(starts[1:], CALLS, strict=True):
        index = start["index"]
        pieces = [
            e["delta"]["partial_json"]
            for e in events
            if e["type"] == "content_block_delta" and e["index"] == index
        ]
        assert pieces[0] == ""
        assert len(pieces) == call.pieces + 1
        assert json.loads("".join(pieces)) == call.arguments
        stop = next(
            i for i, e in enumerate(events) if e == {"type": "content_block_stop", "index": index}
        )
        assert stop > max(
            i
            for i, e in enumerate(events)
            if e.get("index") == index and e["type"] != "content_block_stop"
        )
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"


async def test_gemini_function_call_parts_in_one_response(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(
        Reply(
            text="Checking.",
            tool_calls=[FakeToolCall("get_weather", {"city": "Paris"}, signature="c2ln"), CALLS[1]],
        )
    )
    payload = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    url = server.gemini_base_url + "/models/fake-a:streamGenerateContent?alt=sse"
    body = await _post_raw(client, url, payload)
    responses = [json.loads(d) for d in _data_lines(body)]
    parts = [p for r in responses for p in r["candidates"][0]["content"]["parts"]]
    assert "".join(p.get("text", "") for p in parts) == "Checking."
    calls = [p for p in parts if "functionCall" in p]
    assert calls == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": "c2ln",
        },
        {"functionCall": {"name": "get_time", "args": {"city": "Oslo", "tz": True}, "id": "c2"}},
    ]
    assert len(responses[-1]["candidates"][0]["content"]["parts"]) == 2  # together, last
    assert responses[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "usageMetadata" in responses[-1]


async def test_malformed_arguments_are_sent_as_they_are(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Reply(tool_calls=[FakeToolCall("t", '{"city": "Par', pieces=2)]))
    body = await _post_raw(client, server.openai_base_url + "/chat/completions", _openai_request())
    chunks = [json.loads(d) for d in _data_lines(body)[:-1]]
    pieces = [
        e["function"]["arguments"]
        for c in chunks
        for e in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert "".join(pieces) == '{"city": "Par'


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "gemini"])
async def test_whole_bodies_carry_the_calls(
    server: FakeLLMServer, client: httpx.AsyncClient, protocol: str
) -> None:
    server.enqueue(Reply(tool_calls=CALLS))
    if protocol == "openai":
        resp = await client.post(
            server.openai_base_url + "/chat/completions", json=_openai_request(stream=False)
        )
        message = resp.json()["choices"][0]["message"]
        assert message["content"] is None
        assert [json.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [
            c.arguments for c in CALLS
        ]
    elif protocol == "anthropic":
        payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        resp = await client.post(server.anthropic_base_url + "/v1/messages", json=payload)
        blocks = resp.json()["content"]
        assert [b["type"] for b in blocks] == ["tool_use", "tool_use"]
        assert [b["input"] for b in blocks] == [c.arguments for c in CALLS]
    else:
        payload = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        resp = await client.post(server.gemini_base_url + "/models/m:generateContent", json=payload)
        parts = resp.json()["candidates"][0]["content"]["parts"]
        assert [p["functionCall"]["args"] for p in parts] == [c.arguments for c in CALLS]


async def test_recorded_tool_results_read_alike_in_every_protocol(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    openai = {
        "model": "m",
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    }
    anthropic = {
        "model": "m",
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "c1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "c1",
                        "content": "sunny",
                        "is_error": True,
                    }
                ],
            },
        ],
    }
    gemini = {
        "tools": [{"functionDeclarations": [{"name": "get_weather"}]}],
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "s",
                    }
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}
                ],
            },
        ],
    }
    await client.post(server.openai_base_url + "/chat/completions", json=openai)
    await client.post(server.anthropic_base_url + "/v1/messages", json=anthropic)
    await client.post(server.gemini_base_url + "/models/m:generateContent", json=gemini)
    o, a, g = server.requests[-3:]
    assert [r.tool_names() for r in (o, a, g)] == [["get_weather"]] * 3
    assert o.tool_calls() == [ReceivedToolCall("c1", "get_weather", {"city": "Paris"})]
    assert a.tool_calls() == [ReceivedToolCall("c1", "get_weather", {"city": "Paris"})]
    assert g.tool_calls() == [ReceivedToolCall(None, "get_weather", {"city": "Paris"}, "s")]
    assert o.tool_results() == [ReceivedToolResult("c1", "get_weather", "sunny", None, "tool")]
    assert a.tool_results() == [
        ReceivedToolResult("c1", "get_weather", "sunny", True, "user/tool_result")
    ]
    assert g.tool_results() == [
        ReceivedToolResult(None, "get_weather", "sunny", False, "user/functionResponse")
    ]
    assert [p.kind for _, parts in a.turns() for p in parts] == ["text", "tool_call", "tool_result"]


async def test_a_model_without_tools_refuses_a_request_that_declares_some(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.no_tool_models = {"fake-a"}
    tools = [{"type": "function", "function": {"name": "t", "parameters": {}}}]
    resp = await client.post(
        server.openai_base_url + "/chat/completions",
        json=_openai_request(stream=False, tools=tools),
    )
    assert resp.status_code == 400
    assert "does not support tools" in resp.text
    resp = await client.post(
        server.openai_base_url + "/chat/completions", json=_openai_request(stream=False)
    )
    assert resp.status_code == 200
