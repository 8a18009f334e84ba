"""Reasoning ("thinking") as its own kind of event, for every way a provider streams it.

Through the real client against the stand-in: ``ReplyStream.events()`` yields ``("reasoning", …)``
and ``("text", …)``, the plain iterator only the answer, ``stream.reasoning`` the thinking; the
history never holds it, so the next request never sends it back.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmconnect import REASONING, TEXT, AsyncAPIClient, ProviderUnavailableError, ReplyStream
from llmconnect.protocols import THINK_DONE, ReplyState, Thought, split_think
from tests.fakes.llm_server import FakeLLMServer, Reply

from .conftest import ClientMaker

THINKING = ["Let me ", "think ", "about ", "it."]
ANSWER = ["The ", "answer ", "is ", "42."]

#: (provider, Reply options): the four ways, and both OpenAI-compatible fields.
WAYS = [
    ("openai", {"reasoning_as": "reasoning_content"}),  # DeepSeek, vLLM
    ("openai", {"reasoning_as": "reasoning"}),  # OpenRouter, Groq
    ("openai", {"reasoning_as": "think"}),  # Ollama, Qwen: <th + ink> ... </thi + nk>
    ("anthropic", {}),  # thinking blocks (and a signature_delta to ignore)
    ("gemini", {}),  # thought: true parts
]
IDS = ["reasoning_content", "reasoning", "think-tag", "anthropic", "gemini"]


async def _events(stream: ReplyStream) -> list[tuple[str, str]]:
    return [event async for event in stream.events()]


def _joined(events: list[tuple[str, str]], kind: str) -> str:
    return "".join(text for k, text in events if k == kind)


@pytest.mark.parametrize(("provider", "way"), WAYS, ids=IDS)
@pytest.mark.parametrize("write_sizes", [None, 1], ids=["events", "bytewise"])
async def test_reasoning_is_a_separate_kind_of_event(
    llm_server: FakeLLMServer,
    make_client: ClientMaker,
    provider: str,
    way: dict[str, Any],
    write_sizes: int | None,
) -> None:
    llm_server.enqueue(
        Reply(deltas=ANSWER, reasoning=THINKING, write_sizes=write_sizes, **way),
        Reply(text="second"),
    )
    client = make_client(provider, "m")
    stream = await client.chat("why?", stream=True)
    events = await _events(stream)
    assert _joined(events, REASONING) == "".join(THINKING)
    assert _joined(events, TEXT) == "".join(ANSWER)
    kinds = [kind for kind, _ in events]
    assert kinds.index(TEXT) > max(i for i, k in enumerate(kinds) if k == REASONING)
    assert all(type(text) is str for _, text in events)  # plain strings, no subclass leaks
    assert stream.reasoning == "".join(THINKING)
    assert stream.text == "".join(ANSWER)
    assert client.messages[-1] == {"role": "assistant", "content": "".join(ANSWER)}
    # never sent back: the next request's history holds the answer only
    await client.chat("and?")
    sent = str(llm_server.requests[-1].json)
    assert "think" not in sent.replace("thinking", "")
    assert "Let me" not in sent


@pytest.mark.parametrize(("provider", "way"), WAYS, ids=IDS)
async def test_plain_iterator_yields_the_answer_only(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str, way: dict[str, Any]
) -> None:
    llm_server.enqueue(Reply(deltas=ANSWER, reasoning=THINKING, **way))
    client = make_client(provider, "m")
    stream = await client.chat("why?", stream=True)
    deltas = [delta async for delta in stream]
    assert "".join(deltas) == "".join(ANSWER)
    assert all(type(delta) is str for delta in deltas)
    assert stream.reasoning == "".join(THINKING)


@pytest.mark.parametrize(("provider", "way"), WAYS, ids=IDS)
async def test_whole_json_reply_splits_reasoning_too(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str, way: dict[str, Any]
) -> None:
    llm_server.enqueue(Reply(text="Done.", reasoning="Hmm, fine.", ignore_stream=True, **way))
    client = make_client(provider, "m")
    stream = await client.chat("q", stream=True)
    events = await _events(stream)
    assert events == [(REASONING, "Hmm, fine."), (TEXT, "Done.")]


@pytest.mark.parametrize(
    "content",
    [
        ["<think>", "pondering", "</think>", "Answer"],
        ["<", "t", "h", "i", "n", "k", ">", "pon", "dering<", "/", "think", ">", "\n\nAn", "swer"],
        ["  \n<thi", "nk>pondering</think>\n", "\n", "Answer"],
        ["<think>pondering</think>Answer"],
        ["<think>pondering</th", "ink>Answer"],
    ],
    ids=["whole-tags", "char-by-char", "leading-space", "one-chunk", "close-split"],
)
async def test_think_tag_split_anywhere(
    llm_server: FakeLLMServer, make_client: ClientMaker, content: list[str]
) -> None:
    llm_server.enqueue(Reply(deltas=content))
    stream = await make_client("ollama", "qwen3").chat("q", stream=True)
    events = await _events(stream)
    assert _joined(events, REASONING) == "pondering"
    assert _joined(events, TEXT) == "Answer"


async def test_think_tag_never_closed_is_all_reasoning(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    llm_server.enqueue(Reply(deltas=["<think>", "still going", " </thi"]))
    client = make_client("ollama", "qwen3")
    stream = await client.chat("q", stream=True)
    events = await _events(stream)
    assert _joined(events, REASONING) == "still going </thi"
    assert _joined(events, TEXT) == ""
    assert stream.done
    assert client.messages[-1]["content"] == ""


@pytest.mark.parametrize(
    "content",
    [
        ["Use the <think> tag like this."],  # not at the start: plain text
        ["<", "b>bold</b>"],  # a start that only looked like the tag
        ["<th"],  # ends on what could have been the tag
        ["   "],  # whitespace only
        ["<thinking>", " is not the tag"],
    ],
)
async def test_text_that_is_not_a_think_tag_is_kept_exactly(
    llm_server: FakeLLMServer, make_client: ClientMaker, content: list[str]
) -> None:
    llm_server.enqueue(Reply(deltas=content))
    stream = await make_client("ollama", "qwen3").chat("q", stream=True)
    events = await _events(stream)
    assert _joined(events, TEXT) == "".join(content)
    assert stream.reasoning == ""


def test_split_think_goes_plain_after_the_first_text() -> None:
    state = ReplyState()
    assert split_think(state, "Hello") == "Hello"
    assert state.think == THINK_DONE  # later chunks skip the splitter entirely
    thought = split_think(ReplyState(), "<think>a</think>b")
    assert isinstance(thought, Thought)
    assert thought == "a"
    assert thought.then == "b"


async def test_events_after_the_text_iterator_started_is_refused(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    llm_server.enqueue(Reply(deltas=["a ", "b"]))
    stream = await make_client("openai", "m").chat("q", stream=True)
    assert await stream.__anext__() == "a "
    with pytest.raises(RuntimeError):
        stream.events()
    await stream.aclose()


async def test_reasoning_then_failure_is_not_retried(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    # thinking reached the caller, then the stream broke: a retry would repeat the thinking
    llm_server.enqueue(Reply(deltas=ANSWER, reasoning=THINKING, error_after=0))
    client: AsyncAPIClient = make_client("openai", "m")
    stream = await client.chat("q", stream=True)
    seen: list[tuple[str, str]] = []

    async def read() -> None:
        async for event in stream.events():
            seen.append(event)

    with pytest.raises(ProviderUnavailableError, match="upstream failure"):
        await read()
    assert _joined(seen, REASONING) == "".join(THINKING)
    assert len(llm_server.requests) == 1
    assert client.messages == []


@pytest.mark.parametrize(("provider", "way"), WAYS, ids=IDS)
async def test_usage_of_a_reasoning_stream(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str, way: dict[str, Any]
) -> None:
    # usage in the stream, for each protocol: OpenAI's last chunk (asked for with
    # stream_options.include_usage), Anthropic's message_start + message_delta, Gemini's
    # usageMetadata
    llm_server.enqueue(Reply(deltas=ANSWER, reasoning=THINKING, usage=(12, 34), **way))
    client = make_client(provider, "m")
    stream = await client.chat("q", stream=True)
    await _events(stream)
    assert stream.usage is not None
    # Gemini reports the thinking apart (thoughtsTokenCount, one per delta in the stand-in):
    # it is output, billed as such
    thoughts = len(THINKING) if provider == "gemini" else 0
    assert (stream.usage.input_tokens, stream.usage.output_tokens) == (12, 34 + thoughts)
    if provider == "openai":
        assert llm_server.requests[-1].json["stream_options"] == {"include_usage": True}
