"""What a front end is to ``llmconnect``: the :class:`FrontEnd` protocol every platform
implements, and the one setting of its life cycle (``SHUTDOWN_GRACE``).

Why a protocol: signals, the start-up banner, the grace period and the shutdown order are written
once, in :class:`bots.run.Runner`; ``llmconnect run`` starts every registered front end that is
configured (:mod:`bots.registry`), ``llmconnect discord|slack|web`` one of them. A front end only
says how it starts, how it can die, and how it closes.

The life of one front end, as the runner drives it:

1. ``fe = SomeFrontEnd(settings)``: its own settings class (``settings_class``), read like the
   core's (:func:`core.settings.load_settings`).
2. ``where = await fe.start(engine)``: connect or listen, answering with the shared engine; the
   return value is its banner line ("http://127.0.0.1:8000"), ``fe.notes`` any lines under it. A
   configuration problem raises :class:`RunError` (exit code 2, its message shown as it is).
3. ``await fe.wait()``: returns or raises only when the front end stops on its own (a rejected
   token, a server that died); :class:`RunError` again means the configuration.
4. ``await fe.aclose(grace)``: stop taking requests, stop this front end's replies, give each up to
   ``grace`` seconds to show its final text, disconnect. Safe after a start that failed part-way.
5. ``fe.hurry()``: a second stop request while closing: stop waiting (open web connections).

Registering one for ``llmconnect run``: the class also has ``label`` and ``hint`` (the "To add
more" line: ``Discord: DISCORD_TOKEN``) and a ``configured(settings)`` class method, and takes its
settings as the only constructor argument; :mod:`bots.registry` lists it. Nothing in ``core/``
changes. docs/core.md ("How to add a front end") walks through one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings

from core.settings import EnvSettings

if TYPE_CHECKING:
    from core.engine import ChatEngine

__all__ = ["DEFAULT_GRACE", "FrontEnd", "FrontEndClass", "RunError", "RunSettings", "describe"]

#: Seconds a front end gets at shutdown to show its replies' final text (``SHUTDOWN_GRACE``).
DEFAULT_GRACE = 10.0


class RunError(Exception):
    """A front end cannot run as configured; the message says why and what to change."""


class RunSettings(EnvSettings):
    """The runner's own settings, the same for every front end."""

    shutdown_grace: float = Field(
        DEFAULT_GRACE,
        ge=0,
        description="Seconds each front end gets at shutdown to show its replies' final text "
        "(and the web chat to close its open streams); then it disconnects regardless.",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of /metrics, /healthz and /readyz when the web chat does not run "
        "(unset: none; with the web chat they are on its port).",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the METRICS_PORT server listens on (0.0.0.0: every interface).",
    )


class FrontEnd(Protocol):
    """One platform's front end, as :class:`bots.run.Runner` drives it (see the module doc)."""

    #: How the banner names it ("Web chat", "Discord bot").
    name: str
    #: Lines printed under its banner line, set by :meth:`start` (a sign-in hint, a warning).
    notes: list[str]

    async def start(self, engine: ChatEngine) -> str:
        """Start serving with ``engine`` (shared, closed by the runner); where it runs."""
        ...

    async def wait(self) -> None:
        """Until the front end stops on its own; its exception says why."""
        ...

    async def aclose(self, grace: float) -> None:
        """Stop taking requests, end its replies (``grace`` seconds to show each final text),
        disconnect."""
        ...

    def hurry(self) -> None:
        """Closing: stop waiting for what still runs (a second Ctrl-C)."""
        ...

    async def ready(self) -> tuple[bool, str]:
        """Whether it serves now (``GET /readyz``: Discord's gateway connected, Slack's socket
        or HTTP listener up, the web chat serving), and if not, why, as a fixed phrase."""
        ...


class FrontEndClass(Protocol):
    """A front end's class, as :mod:`bots.registry` lists it for ``llmconnect run``."""

    # Read-only (properties), so a class may narrow them (``type[WebSettings]``).
    @property
    def label(self) -> str:
        """Its name in the "To add more" hints ("Discord")."""
        ...

    @property
    def hint(self) -> str:
        """What to set to turn it on ("DISCORD_TOKEN"); empty for one that always runs."""
        ...

    @property
    def settings_class(self) -> type[BaseSettings]: ...

    def configured(self, settings: Any) -> bool:
        """Whether ``llmconnect run`` starts it with these settings."""
        ...

    def __call__(self, settings: Any) -> FrontEnd: ...


def describe(exc: BaseException) -> str:
    """``Type: message`` (or the type alone) for a one-line report."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
