"""Prometheus metrics of one engine: replies, first-token and final-text latency, tokens, platform
requests, budget waits, LLM errors.

Why a :class:`Metrics` object on its own ``CollectorRegistry`` (not the process-wide default): each
:class:`~core.engine.ChatEngine` owns one, so tests (and two engines in one process) count apart.

Cost: nothing here runs per streamed delta. The engine records a reply at its start, its first
delta and its end; :func:`core.delivery.deliver_with` records a reply's platform requests, budget
waits and final-text lag once, when the reply has been shown. Labels name a front end
(``web``, ``discord``, ``slack``), a provider (``openai``), an outcome or an error class, never a
user, a channel or any text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from llmconnect import Usage

__all__ = ["CONTENT_TYPE", "Metrics"]

#: The ``Content-Type`` of :meth:`Metrics.render`.
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds: a first token within 100 ms .. a minute; a final edit within 10 ms .. a minute.
_FIRST_TOKEN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The metric objects, on a registry of their own (:attr:`registry`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.replies = Counter(
            "llmconnect_replies",
            "Replies ended, by front end, provider and final status (complete, error, cancelled).",
            ("frontend", "provider", "status"),
            registry=r,
        )
        self.first_token = Histogram(
            "llmconnect_reply_first_token_seconds",
            "Seconds from a reply's generation start to its first streamed delta.",
            ("frontend",),
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.final_lag = Histogram(
            "llmconnect_reply_final_lag_seconds",
            "Seconds from the end of a reply's LLM stream to its final text accepted by the "
            "platform (the web chat: sent to the browser).",
            ("frontend",),
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "llmconnect_tokens",
            "Tokens as the provider reported them (input, output); replies whose provider "
            "reports no usage count nothing.",
            ("provider", "direction"),
            registry=r,
        )
        self.platform_requests = Counter(
            "llmconnect_platform_requests",
            "Posts and edits sent to a chat platform, by outcome (ok, rate_limited, error).",
            ("platform", "outcome"),
            registry=r,
        )
        self.budget_wait = Histogram(
            "llmconnect_budget_wait_seconds",
            "Seconds one reply's posts and edits waited in total for the platform's request "
            "budget (one observation per reply shown).",
            ("platform",),
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.active = Gauge(
            "llmconnect_active_replies",
            "Replies generating now.",
            ("frontend",),
            registry=r,
        )
        self.llm_errors = Counter(
            "llmconnect_llm_errors",
            "Replies ended by an LLM error, by provider and error class (RateLimitError, ...).",
            ("provider", "kind"),
            registry=r,
        )

    # -- recorded by the engine, once per reply ------------------------------------------------

    def reply_started(self, frontend: str) -> None:
        self.active.labels(frontend).inc()

    def first_delta(self, frontend: str, seconds: float) -> None:
        self.first_token.labels(frontend).observe(max(0.0, seconds))

    def reply_ended(
        self,
        frontend: str,
        provider: str,
        status: str,
        *,
        usage: Usage | None = None,
        error: str | None = None,
    ) -> None:
        """A reply that had started ended with ``status``; ``error``: the LLM error's class."""
        self.active.labels(frontend).dec()
        self.replies.labels(frontend, provider, status).inc()
        if usage is not None:
            self.tokens.labels(provider, "input").inc(max(0, usage.input_tokens))
            self.tokens.labels(provider, "output").inc(max(0, usage.output_tokens))
        if error is not None:
            self.llm_errors.labels(provider, error).inc()

    # -- recorded by the delivery, once per reply shown ----------------------------------------

    def shown(
        self,
        platform: str,
        *,
        ok: int,
        rate_limited: int,
        errors: int,
        budget_wait: float,
        final_lag: float | None,
    ) -> None:
        """A reply's platform requests by outcome, its total budget wait and its final lag
        (``None``: the final text was not accepted)."""
        if ok:
            self.platform_requests.labels(platform, "ok").inc(ok)
        if rate_limited:
            self.platform_requests.labels(platform, "rate_limited").inc(rate_limited)
        if errors:
            self.platform_requests.labels(platform, "error").inc(errors)
        self.budget_wait.labels(platform).observe(max(0.0, budget_wait))
        if final_lag is not None:
            self.final_lag.labels(platform).observe(max(0.0, final_lag))

    def final_shown(self, platform: str, lag: float) -> None:
        """A front end with no platform requests of its own (the web chat) handed a reply's
        final text to its client ``lag`` seconds after the reply ended."""
        self.final_lag.labels(platform).observe(max(0.0, lag))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (``GET /metrics``)."""
        return generate_latest(self.registry)
