"""The offline ``echo`` provider: no network, no key, a deterministic reply streamed word by word.

It lets every adapter run and be tried without any key, and it is what load tests drive. The reply
is clearly labelled so nobody mistakes it for a model. Options: ``delay`` (seconds between words,
default 0) and ``words`` (repeat the prompt until the reply has this many words; for benchmarks).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from . import Call, ReplyState

__all__ = ["OPTIONS", "echo_reply", "stream_reply"]

#: The options only echo reads; the client never sends them to a real provider.
OPTIONS = frozenset({"delay", "words"})

_WORD = re.compile(r"\S+\s*")


def echo_reply(prompt: str, words: int | None = None) -> list[str]:
    """The deltas echo streams for ``prompt``: ``[echo] You said: <prompt>``, word by word.

    With ``words``, the prompt's words are repeated until the reply has that many deltas.
    """
    if not words or words <= 3:
        body = _WORD.findall(prompt.strip()) or ["(nothing)"]
    else:
        tokens = prompt.split() or ["echo"]
        body = [tokens[i % len(tokens)] + " " for i in range(words - 3)]
        body[-1] = body[-1].rstrip()
    return ["[echo] ", "You ", "said: ", *body]


async def stream_reply(call: Call, state: ReplyState) -> AsyncGenerator[str, None]:
    content = call.messages[-1]["content"] if call.messages else ""
    # Text only: the client turns parts into notes for echo, which reads no images.
    prompt = (
        content
        if isinstance(content, str)
        else " ".join(str(p) for p in content if isinstance(p, str))
    )
    delay = float(call.options.get("delay", 0))
    deltas = echo_reply(prompt, call.options.get("words"))
    for delta in deltas:
        # Always yield to the loop, so echo behaves like a network stream (cancellable, fair).
        await asyncio.sleep(delay)
        yield delta
    state.finish_reason = "stop"
    state.usage = {"input_tokens": len(prompt.split()), "output_tokens": len(deltas)}
