"""Fallback models (``LLMCONNECT_FALLBACK_MODELS``): the next model answers when one is unavailable.

A model is *unavailable* when its reply fails before the first token, after llmconnect's own
retries, with :class:`~llmconnect.RateLimitError` (429), :class:`~llmconnect.ProviderUnavailableError`
(5xx, connection refused or reset), :class:`~llmconnect.LLMTimeoutError` (connect or idle timeout;
not :class:`~llmconnect.TimeLimitError`, the reply's own time limit) or
:class:`~llmconnect.ModelNotFoundError` (404: the provider does not know the model). Then the next
model of the chain answers. Anything else ends the reply with its error as before: a rejected key
(401/403) or a bad request (400) is a configuration error another model would only hide. Once a
first token has arrived nothing falls back (the text so far is the user's).

A fallback whose provider is not configured (no key) is skipped, with a log line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from llmconnect import (
    ConfigurationError,
    LLMError,
    LLMTimeoutError,
    ModelNotFoundError,
    ProviderUnavailableError,
    RateLimitError,
    ReplyStream,
    TimeLimitError,
)

__all__ = ["fallback_line", "falls_back", "open_reply"]

log = logging.getLogger("llmconnect.engine")


def falls_back(exc: LLMError) -> bool:
    """Whether the next model should answer after ``exc`` (raised before the first token)."""
    if isinstance(exc, TimeLimitError):
        return False
    return isinstance(
        exc, RateLimitError | ProviderUnavailableError | LLMTimeoutError | ModelNotFoundError
    )


async def open_reply(
    models: Sequence[str],
    start: Callable[[str], Awaitable[ReplyStream]],
    unavailable: list[str],
) -> tuple[ReplyStream, AsyncIterator[tuple[str, str]], tuple[str, str] | None]:
    """The first model of ``models`` that starts answering: its stream, the stream's
    :meth:`~llmconnect.ReplyStream.events` and the first event (``None`` when its reply was
    empty). Any first event counts as the start, reasoning too: a user who saw the model think
    has seen it answer. ``start(model)`` builds the client and opens the stream; ``unavailable``
    gets each model that was unavailable, in order. The last model's error (or a first one that
    does not fall back) is raised as it is."""
    error: LLMError | None = None
    for index, model in enumerate(models):
        try:
            stream = await start(model)
        except ConfigurationError as exc:
            if index == 0:
                raise
            log.warning("fallback %s skipped: %s", model, exc)
            continue
        events = stream.events()
        try:
            return stream, events, await anext(events)
        except StopAsyncIteration:
            return stream, events, None
        except LLMError as exc:
            await stream.aclose()
            if not falls_back(exc):
                raise
            if index < len(models) - 1:
                log.warning("%s unavailable (%s); the next model answers", model, exc)
            unavailable.append(model)
            error = exc
        except BaseException:
            await stream.aclose()
            raise
    if error is None:  # pragma: no cover - models is never empty
        raise ValueError("open_reply needs at least one model")
    unavailable.pop()  # the error raised names the last one
    raise error


def fallback_line(model: str | None, unavailable: Sequence[str], answered: bool) -> str | None:
    """The note under a reply some model was unavailable for: ``answered by M — U was
    unavailable`` when ``M`` answered, else ``U was unavailable`` (the error line says the rest)."""
    if not unavailable:
        return None
    names = ", ".join(unavailable)
    verb = "was" if len(unavailable) == 1 else "were"
    if answered and model:
        return f"answered by {model} — {names} {verb} unavailable"
    return f"{names} {verb} unavailable"
