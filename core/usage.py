"""Token usage, daily quotas and prices.

Each completed reply whose provider reported its usage (llmconnect's ``ReplyStream.usage``) adds
its input and output tokens, under the model that answered, to three counters in the
conversation store (:class:`UsageStore`, implemented by the memory, SQLite and Redis stores, so
processes sharing Redis share the counts):

- the conversation's tokens on this UTC day (``YYYY-MM-DD``),
- the conversation's tokens in total,
- the asking user's tokens on this UTC day, across every conversation of the platform.

A reply whose provider reported no usage (or that failed or was stopped before the provider
said) counts nothing: no estimate is made; ``/status`` says "usage not reported by <provider>".

Quotas (``USER_DAILY_TOKENS``, ``CHANNEL_DAILY_TOKENS``; 0: none) are checked before a prompt
runs: a prompt is accepted while the day's count is below the cap, so the reply that crosses
it finishes (and counts) and the next prompt is refused until midnight UTC. Nothing of a refused
prompt reaches the LLM.

Prices (``MODEL_PRICES``, then :data:`BUILTIN_PRICES`) are dollars per million input and output
tokens, for the cost ``/status`` shows; a table entry is ``provider/model`` or a prefix ending
in ``*`` (``groq/*``), the exact name first, else the longest matching prefix.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .conversations import ConversationKey
    from .settings import Settings

__all__ = [
    "BUILTIN_PRICES",
    "DAY_SECONDS",
    "MemoryUsage",
    "Price",
    "Tokens",
    "UsageReport",
    "UsageStore",
    "cost_of",
    "price_of",
    "quota_refusal",
    "resets_in",
    "status_text",
    "sum_tokens",
    "usage_json",
    "utc_day",
]

DAY_SECONDS = 86_400

#: Dollars per million (input, output) tokens.
Price = tuple[float, float]

#: Approximate list prices of the providers' default models (``llmconnect.providers``), in
#: dollars per million input / output tokens, as published by the providers in late 2025. They
#: change: ``MODEL_PRICES`` overrides any of them. Local and offline models cost nothing here.
#: AI/ML API (a reseller with its own rates) has no entry: no price rather than a guessed one.
BUILTIN_PRICES: Mapping[str, Price] = {
    "openai/gpt-4o-mini": (0.15, 0.60),
    "groq/llama-3.3-70b-versatile": (0.59, 0.79),
    "openrouter/meta-llama/llama-3.1-8b-instruct": (0.02, 0.03),
    "mistral/mistral-small-latest": (0.10, 0.30),
    "deepseek/deepseek-chat": (0.28, 0.42),
    "together/meta-llama/Llama-3.3-70B-Instruct-Turbo": (0.88, 0.88),
    "anthropic/claude-sonnet-4-5": (3.00, 15.00),
    "gemini/gemini-2.5-flash": (0.30, 2.50),
    "echo/*": (0.0, 0.0),
    "ollama/*": (0.0, 0.0),
    "lmstudio/*": (0.0, 0.0),
}


class Tokens(NamedTuple):
    input: int = 0
    output: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output


#: Tokens per model (``provider/model``): the cost needs to know which model used them.
ByModel = dict[str, Tokens]


def sum_tokens(by_model: Mapping[str, Tokens]) -> Tokens:
    return Tokens(sum(t.input for t in by_model.values()), sum(t.output for t in by_model.values()))


@dataclass(frozen=True, slots=True)
class UsageReport:
    """What a store holds for one conversation (and one user) on one UTC day."""

    day: str
    conversation_day: ByModel = field(default_factory=dict)
    conversation_total: ByModel = field(default_factory=dict)
    #: ``None`` when no user was asked about.
    user_day: ByModel | None = None


@runtime_checkable
class UsageStore(Protocol):
    """Token counters kept beside the conversations (every store of ``core.stores`` is one)."""

    async def add_usage(
        self, key: ConversationKey, user: str | None, day: str, model: str, tokens: Tokens
    ) -> None:
        """Add ``tokens`` used by ``model`` to ``key``'s counters of ``day`` and in total, and
        to ``user``'s (on ``key``'s platform) of ``day``. Daily counters are kept at least
        until the day is over (stores drop them a day or two later)."""
        ...

    async def read_usage(self, key: ConversationKey, user: str | None, day: str) -> UsageReport: ...


def utc_day(wall: float) -> str:
    """The UTC calendar day of ``wall`` (seconds since the epoch), ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%d")


def resets_in(wall: float) -> str:
    """When daily counters start again: ``resets in 3 h 12 min (00:00 UTC)`` (minutes rounded
    up: it never says a reset has come when it has not)."""
    minutes = math.ceil((DAY_SECONDS - wall % DAY_SECONDS) / 60)
    hours, minutes = divmod(minutes, 60)
    if hours and minutes:
        span = f"{hours} h {minutes} min"
    elif hours:
        span = f"{hours} h"
    else:
        span = f"{minutes} min"
    return f"resets in {span} (00:00 UTC)"


async def quota_refusal(
    store: object, settings: Settings, wall: float, key: ConversationKey, user: str | None
) -> str | None:
    """Why a prompt may not run now (a daily cap is reached), else ``None``.

    A cap of N refuses once the day's count is N or more: a prompt at N - 1 runs, and its reply
    (whatever it uses) finishes. Without a cap, or a store that keeps no counts, nothing is
    read. A store error propagates (the engine says the store is unreachable)."""
    user_cap, channel_cap = settings.user_daily_tokens, settings.channel_daily_tokens
    if not (user_cap or channel_cap) or not isinstance(store, UsageStore):
        return None
    report = await store.read_usage(key, user if user_cap else None, utc_day(wall))
    if user_cap and report.user_day is not None:
        used = sum_tokens(report.user_day).total
        if used >= user_cap:
            return (
                f"You have used your {user_cap:,} tokens for today ({used:,}); the limit "
                f"{resets_in(wall)}."
            )
    if channel_cap:
        used = sum_tokens(report.conversation_day).total
        if used >= channel_cap:
            return (
                f"This conversation has used its {channel_cap:,} tokens for today ({used:,}); "
                f"the limit {resets_in(wall)}."
            )
    return None


def _lookup(model: str, table: Mapping[str, Price]) -> Price | None:
    exact = table.get(model)
    if exact is not None:
        return exact
    best: tuple[int, Price] | None = None
    for pattern, price in table.items():
        matches = pattern.endswith("*") and model.startswith(pattern[:-1])
        if matches and (best is None or len(pattern) > best[0]):
            best = (len(pattern), price)
    return None if best is None else best[1]


def price_of(model: str, prices: Mapping[str, Price]) -> Price | None:
    """``model``'s price: from ``prices`` (``MODEL_PRICES``) when an entry matches, else from
    :data:`BUILTIN_PRICES`; ``None`` when neither knows it."""
    found = _lookup(model, prices)
    return found if found is not None else _lookup(model, BUILTIN_PRICES)


def cost_of(by_model: Mapping[str, Tokens], prices: Mapping[str, Price]) -> tuple[float, list[str]]:
    """Dollars for the models with a known price, and the models (with tokens) without one."""
    cost, unpriced = 0.0, []
    for model, tokens in by_model.items():
        price = price_of(model, prices)
        if price is None:
            if tokens.total:
                unpriced.append(model)
            continue
        cost += (tokens.input * price[0] + tokens.output * price[1]) / 1_000_000
    return cost, sorted(unpriced)


def _dollars(amount: float) -> str:
    return f"${amount:.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"


def _tokens_phrase(by_model: Mapping[str, Tokens], prices: Mapping[str, Price]) -> str:
    tokens = sum_tokens(by_model)
    text = f"{tokens.total:,} ({tokens.input:,} in, {tokens.output:,} out)"
    if not tokens.total:
        return text
    cost, unpriced = cost_of(by_model, prices)
    if not unpriced:
        return f"{text}, about {_dollars(cost)}"
    if len(unpriced) < len([m for m, t in by_model.items() if t.total]):
        return f"{text}, about {_dollars(cost)} plus {', '.join(unpriced)} (no price known)"
    return text


def status_text(
    report: UsageReport,
    model: str,
    settings: Settings,
    wall: float,
    *,
    unreported: str | None = None,
) -> str:
    """The usage part of ``/status``: this conversation's tokens today and in total (with the
    cost when the prices are known), the model's price, the caps that apply."""
    prices = settings.model_prices
    lines = [
        f"Tokens here today (UTC): {_tokens_phrase(report.conversation_day, prices)}; "
        f"in total: {_tokens_phrase(report.conversation_total, prices)}."
    ]
    price = price_of(model, prices)
    if price == (0.0, 0.0):
        lines.append(f"Price of {model}: free (offline or local).")
    elif price is not None:
        lines.append(
            f"Price of {model}: ${price[0]:g} / ${price[1]:g} per million input / output "
            "tokens (approximate)."
        )
    else:
        lines.append(f"Price of {model}: not known (MODEL_PRICES sets it).")
    reset = resets_in(wall)
    if settings.channel_daily_tokens:
        used = sum_tokens(report.conversation_day).total
        lines.append(
            f"Daily limit here: {used:,} of {settings.channel_daily_tokens:,} tokens used; {reset}."
        )
    if settings.user_daily_tokens and report.user_day is not None:
        used = sum_tokens(report.user_day).total
        lines.append(f"Your tokens today: {used:,} of {settings.user_daily_tokens:,}; {reset}.")
    if unreported:
        lines.append(f"Usage not reported by {unreported}: its last reply here was not counted.")
    return "\n".join(lines)


def usage_json(report: UsageReport, settings: Settings) -> dict[str, object]:
    """The counts of ``/status`` as numbers (the web's status endpoint): per part its input and
    output tokens and the cost in dollars (``None`` when a model used has no known price)."""

    def part(by_model: Mapping[str, Tokens]) -> dict[str, object]:
        tokens = sum_tokens(by_model)
        cost, unpriced = cost_of(by_model, settings.model_prices)
        return {
            "input_tokens": tokens.input,
            "output_tokens": tokens.output,
            "cost": None if unpriced else round(cost, 6),
        }

    return {
        "day": report.day,
        "today": part(report.conversation_day),
        "total": part(report.conversation_total),
        "daily_limit": settings.channel_daily_tokens or None,
    }


Scope = tuple[str, str, str]  # ("conv", platform, channel) | ("user", platform, user id)


def _scopes(key: ConversationKey, user: str | None) -> list[Scope]:
    scopes: list[Scope] = [("conv", key.platform, key.channel)]
    if user is not None:
        scopes.append(("user", key.platform, user))
    return scopes


class MemoryUsage:
    """The counters of :class:`~core.conversations.MemoryStore`: this process only.

    Daily counters two days older than the newest day counted are dropped when a new day begins;
    conversation totals are dropped with their conversation (:meth:`forget`)."""

    def __init__(self) -> None:
        self._days: dict[tuple[Scope, str], dict[str, list[int]]] = {}
        self._totals: OrderedDict[Scope, dict[str, list[int]]] = OrderedDict()
        self._today = ""

    def _bump(self, counters: dict[str, list[int]], model: str, tokens: Tokens) -> None:
        pair = counters.setdefault(model, [0, 0])
        pair[0] += tokens.input
        pair[1] += tokens.output

    def add(
        self, key: ConversationKey, user: str | None, day: str, model: str, tokens: Tokens
    ) -> None:
        if day > self._today:
            # Like the other stores: counts two days older than the newest day go.
            self._today = day
            start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
            cutoff = utc_day(start - 2 * DAY_SECONDS)
            self._days = {k: v for k, v in self._days.items() if k[1] >= cutoff}
        for scope in _scopes(key, user):
            self._bump(self._days.setdefault((scope, day), {}), model, tokens)
        conv = _scopes(key, None)[0]
        self._bump(self._totals.setdefault(conv, {}), model, tokens)

    def read(self, key: ConversationKey, user: str | None, day: str) -> UsageReport:
        conv = _scopes(key, None)[0]

        def tokens(counters: Mapping[str, list[int]] | None) -> ByModel:
            return {m: Tokens(*pair) for m, pair in (counters or {}).items()}

        return UsageReport(
            day=day,
            conversation_day=tokens(self._days.get((conv, day))),
            conversation_total=tokens(self._totals.get(conv)),
            user_day=None
            if user is None
            else tokens(self._days.get((("user", key.platform, user), day))),
        )

    def forget(self, keys: Iterable[ConversationKey]) -> None:
        """Drop these conversations' totals (evicted or deleted)."""
        for key in keys:
            self._totals.pop(("conv", key.platform, key.channel), None)
