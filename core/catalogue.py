"""The model catalogue: which models each configured provider offers, without ever waiting on one.

For each provider the engine offers, :class:`Catalogue` keeps the model ids
``llmconnect.list_models`` reported, as ``provider/model`` names. Reading is synchronous and never
waits on the network: it answers with what it has (the last list, else the provider's default
model) and, when that is older than ``MODEL_LIST_TTL`` seconds, starts one background refresh for
the provider (never two at a time for one provider). A list that fails keeps the last good one (or
the default), records why (the error's user message: no key, no URL) and is asked again after
:data:`RETRY_AFTER_FAILURE` seconds (or the TTL, when shorter). Ages are measured on the engine's
clock (:mod:`core.clock`), so tests drive the TTL without sleeping.

:func:`best_matches` ranks names for what a user typed (Discord's ``/model`` autocomplete, the
``models`` command's filter), :func:`closest` gives the "did you mean" names for an unknown one.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx

from llmconnect import LLMError, Timeouts, list_models

from .clock import Clock

__all__ = [
    "RETRY_AFTER_FAILURE",
    "Catalogue",
    "ProviderModels",
    "best_matches",
    "closest",
]

log = logging.getLogger("llmconnect.catalogue")

#: Seconds before a provider whose list failed is asked again (the TTL instead when shorter).
RETRY_AFTER_FAILURE = 60.0


@dataclass(frozen=True, slots=True)
class ProviderModels:
    """What the catalogue knows of one provider's models."""

    provider: str
    #: ``provider/model`` names: the provider's list, else its default model alone (or nothing).
    models: tuple[str, ...]
    #: Whether ``models`` is the provider's own list (``False``: the default model stands in).
    listed: bool = False
    #: Why the last list failed (safe to show: no key, no URL), ``None`` when it did not.
    error: str | None = None
    #: When the provider was last asked (the catalogue clock), ``None`` if never.
    checked_at: float | None = None


class Catalogue:
    """Every provider's models, cached for ``ttl`` seconds and refreshed in the background."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        clock: Clock,
        ttl: float,
        http_client: httpx.AsyncClient | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.env = env
        self.clock = clock
        #: ``MODEL_LIST_TTL``; 0: never ask a provider (its default model only). Live.
        self.ttl = ttl
        self.http_client = http_client
        self.timeouts = timeouts or Timeouts(connect=10.0, idle=15.0)
        self._entries: dict[str, ProviderModels] = {}
        self._tasks: dict[str, asyncio.Task[ProviderModels]] = {}
        self._closed = False

    def models(self, provider: str, default_model: str) -> ProviderModels:
        """``provider``'s models as known now (``default_model``, a bare id, when nothing was
        listed yet); starts a background refresh when the list is missing or old. Never waits."""
        entry = self._entries.get(provider)
        if entry is None:
            models = (f"{provider}/{default_model}",) if default_model else ()
            entry = self._entries[provider] = ProviderModels(provider, models)
        if self._stale(entry):
            self._schedule(provider)
        return entry

    def cached(self, provider: str) -> ProviderModels | None:
        """What is known of ``provider`` now, without starting a refresh."""
        return self._entries.get(provider)

    def refreshing(self) -> list[str]:
        """The providers whose list is being asked for right now."""
        return [name for name, task in self._tasks.items() if not task.done()]

    def _stale(self, entry: ProviderModels) -> bool:
        if self.ttl <= 0 or self._closed:
            return False
        if entry.checked_at is None:
            return True
        age = self.clock.now() - entry.checked_at
        wait = self.ttl if entry.error is None else min(self.ttl, RETRY_AFTER_FAILURE)
        return age >= wait

    def _schedule(self, provider: str) -> None:
        task = self._tasks.get(provider)
        if task is not None and not task.done():
            return  # one refresh per provider at a time
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a synchronous caller): the next call in one starts it
        task = loop.create_task(self.refresh(provider), name=f"model list {provider}")
        self._tasks[provider] = task
        task.add_done_callback(lambda t: self._forget(provider, t))

    def _forget(self, provider: str, task: asyncio.Task[ProviderModels]) -> None:
        if self._tasks.get(provider) is task:
            del self._tasks[provider]

    async def refresh(self, provider: str) -> ProviderModels:
        """Ask ``provider`` for its list now and keep the answer; what is known afterwards.
        A failure is recorded on the entry (the last good list stays), never raised."""
        old = self._entries.get(provider) or ProviderModels(provider, ())
        try:
            ids = await list_models(
                provider, self.env, http_client=self.http_client, timeouts=self.timeouts
            )
        except LLMError as exc:
            entry = self._failed(old, exc.user_message)
            log.warning(
                "%s: the model list failed (%s); keeping %d", provider, exc, len(old.models)
            )
        except Exception as exc:  # a task nobody awaits must not die with its error unseen
            entry = self._failed(old, f"the model list failed ({type(exc).__name__})")
            log.warning("%s: the model list failed (%s)", provider, type(exc).__name__)
        else:
            names = tuple(dict.fromkeys(f"{provider}/{i}" for i in ids if i))
            if names:
                entry = ProviderModels(provider, names, True, None, self.clock.now())
            else:
                entry = self._failed(old, "the provider listed no models")
        self._entries[provider] = entry
        return entry

    def _failed(self, old: ProviderModels, why: str) -> ProviderModels:
        return ProviderModels(old.provider, old.models, old.listed, why, self.clock.now())

    async def aclose(self) -> None:
        """Cancel the refreshes under way; none starts afterwards."""
        self._closed = True
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


# --------------------------------------------------------------------------- ranking


def _subsequence(needle: str, hay: str) -> bool:
    it = iter(hay)
    return all(c in it for c in needle)


def _rank(needle: str, name: str) -> tuple[int, float] | None:
    """Lower is better: 0 exact, 1 the name or its model part starts with it, 2 it is inside the
    name, 3 its characters appear in order (``gpt4o`` for ``gpt-4o``), 4 close by spelling."""
    low = name.lower()
    model = low.partition("/")[2]
    if needle in (low, model):
        return 0, 0.0
    if low.startswith(needle) or model.startswith(needle):
        return 1, 0.0
    if needle in low:
        return 2, float(low.index(needle))
    if _subsequence(needle, low):
        return 3, 0.0
    ratio = max(
        difflib.SequenceMatcher(None, needle, low).ratio(),
        difflib.SequenceMatcher(None, needle, model).ratio(),
    )
    return (4, -ratio) if ratio >= 0.6 else None


def best_matches(typed: str, names: Iterable[str], limit: int = 25) -> list[str]:
    """The ``limit`` names that best match ``typed``, best first (case ignored): exact, then
    prefixes (of ``provider/model`` or of the model part), then substrings anywhere (earlier
    first), then the characters in order, then names close by spelling; ties go to the shorter
    name, then alphabetically. Nothing typed: the names as given."""
    needle = typed.strip().lower()
    pool = list(dict.fromkeys(names))
    if not needle:
        return pool[:limit]
    ranked = []
    for name in pool:
        rank = _rank(needle, name)
        if rank is not None:
            ranked.append((rank, len(name), name))
    ranked.sort()
    return [item[2] for item in ranked[:limit]]


def closest(name: str, names: Iterable[str], n: int = 5) -> list[str]:
    """The ``n`` names closest to an unknown ``name`` (by spelling, against both the whole
    ``provider/model`` and its model part), best first; only reasonably close ones."""
    needle = name.strip().lower()
    if not needle:
        return []
    bare = needle.partition("/")[2] or needle
    scored = []
    for candidate in dict.fromkeys(names):
        low = candidate.lower()
        model = low.partition("/")[2]
        score = max(
            difflib.SequenceMatcher(None, needle, low).ratio(),
            difflib.SequenceMatcher(None, bare, model).ratio(),
        )
        if model == bare or model.endswith(f"/{bare}"):
            score = max(score, 0.95)  # the same model through another provider or route
        elif needle in low or (model and model in needle):
            score = max(score, 0.8)
        if score >= 0.6:
            scored.append((-score, len(candidate), candidate))
    scored.sort()
    return [item[2] for item in scored[:n]]
