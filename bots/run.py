"""The runner: front ends over one engine, started, watched and stopped the same way for all.

``llmconnect run`` is a :class:`Runner` with every registered front end that is configured
(:mod:`bots.registry`); ``llmconnect discord``, ``slack`` and ``web`` are a runner with one.

Why one process and one engine: a conversation's model, history and the "one generation at a time"
rule live in :class:`~core.engine.ChatEngine`; the front ends only translate events. Under
``llmconnect run`` the web chat always runs (it is the embedded default: with nothing configured,
it is a local chat on the offline ``echo`` model); each other front end starts when its settings
say it is configured (Discord: ``DISCORD_TOKEN``; Slack: ``SLACK_BOT_TOKEN`` and
``SLACK_APP_TOKEN`` (Socket Mode) or ``SLACK_SIGNING_SECRET`` (HTTP)).

Shutdown (SIGINT/SIGTERM, or :meth:`Runner.request_stop`): stop taking requests, stop the
generations that run, let every front end write each reply's final text (no message is left with
a streaming marker; a stopped one says so) within ``SHUTDOWN_GRACE`` seconds, then close. A second
signal stops waiting for open web connections. Exit codes: 0 after a requested stop; 2 when the
configuration keeps a front end from running (a missing setting, a busy port, a rejected token
when nothing else runs); 1 when a front end stopped on its own otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO, cast

from pydantic_settings import BaseSettings

from core.config_file import (
    LIVE_KEYS,
    config_path,
    file_signature,
    read_config,
    unknown_keys,
)
from core.engine import ChatEngine
from core.logs import configure_logging
from core.settings import Settings, SettingsError, load_settings
from llmconnect import PROVIDERS, LLMError, aclose_shared_clients, provider_status

from .frontend import DEFAULT_GRACE, FrontEnd, FrontEndClass, RunError, describe
from .health import Health, MetricsServer

__all__ = [
    "NOTHING_TO_RUN",
    "SERVING_GC_THRESHOLDS",
    "RunError",
    "Runner",
    "configured",
    "load_all",
    "run",
    "settle_heap",
]

log = logging.getLogger("llmconnect.run")

#: Seconds a front end may still take to disconnect once its grace is over, and the wait for a
#: front end's task after its close: a hung connection never keeps the process alive.
DISCONNECT_TIMEOUT = 5.0
NOTHING_TO_RUN = "Nothing to run: the web chat is off and no bot is configured."
#: The cyclic garbage collector's thresholds once serving (Python's defaults: 700, 10, 10).
SERVING_GC_THRESHOLDS = (7_000, 10, 10)


def settle_heap() -> None:
    """Once the front ends are up: one full collection, then everything start-up made (modules,
    classes, clients, caches) is frozen out of later collections (``gc.freeze``), and young
    objects are collected a tenth as often (:data:`SERVING_GC_THRESHOLDS`).

    Why: every live reply holds a few hundred tracked objects (tasks, coroutines, generators,
    futures) that the collector kept walking; with 500 replies at once it took 15-20 % of the
    process's CPU, in pauses of up to 0.2-0.3 s (a full collection), and found a few hundred
    cycles in all (``benchmarks/load.py`` prints its figures). Memory is still freed by
    reference counting at once; cyclic garbage waits a little longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


class Runner:
    """Starts the front ends over one engine, waits for a stop, shuts down cleanly.

    ``hints``: what the operator could add besides a model ((label, variables), see
    :func:`configured`). ``brief``: one line per front end at start-up (the one-platform
    commands), instead of the ``llmconnect run`` banner.
    """

    def __init__(
        self,
        settings: Settings,
        frontends: Sequence[FrontEnd],
        *,
        env: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        grace: float = DEFAULT_GRACE,
        hints: Sequence[tuple[str, str]] = (),
        brief: bool = False,
        out: TextIO | None = None,
        metrics_host: str = "127.0.0.1",
        metrics_port: int | None = None,
        tune_gc: bool = False,
    ) -> None:
        self.settings = settings
        #: :func:`settle_heap` once every front end started (the process's own runner: ``run``).
        self.tune_gc = tune_gc
        self.engine = ChatEngine(settings, env=env, options=options)
        self.frontends = list(frontends)
        #: ``/readyz``: the store and every front end. A front end that serves HTTP itself (the
        #: web chat) has a ``health`` attribute and serves the routes on its own port.
        self.health = Health(self.engine, self.frontends)
        self._serves_health = False
        for fe in self.frontends:
            if hasattr(fe, "health"):
                setattr(fe, "health", self.health)  # noqa: B010  # not on the FrontEnd protocol
                self._serves_health = True
        #: ``METRICS_PORT``'s server, when set and no front end serves the routes.
        self.metrics_server: MetricsServer | None = None
        if metrics_port is not None and not self._serves_health:
            self.metrics_server = MetricsServer(
                self.engine, self.health, metrics_host, metrics_port
            )
        self.grace = grace
        self.brief = brief
        self.out = out if out is not None else sys.stdout
        self.started = asyncio.Event()
        self._hints = list(hints)
        #: Front ends whose start was called (a failed one too: it may hold something to close).
        self._tried: list[FrontEnd] = []
        #: Each started front end's ``wait()``, as a task.
        self._waits: dict[asyncio.Task[None], FrontEnd] = {}
        self._stop = asyncio.Event()
        self._signals = 0
        #: The configuration file, what it held at the last (re)load and its signature.
        self.config_path, self._config_named = config_path()
        self._config_signature = file_signature(self.config_path)
        self._config: dict[str, Any] = read_config(self.config_path, required=self._config_named)
        unknown = unknown_keys(self._config, _settings_classes())
        if unknown:
            log.warning("%s: unknown keys, ignored: %s", self.config_path, ", ".join(unknown))

    # ----------------------------------------------------------------- configuration

    def poll_config(self) -> bool:
        """One tick of the file watch: reload when the file changed (mtime, size or content)
        since the last look; whether it did."""
        signature = file_signature(self.config_path)
        if signature == self._config_signature:
            return False
        self._config_signature = signature
        return self.reload()

    def reload(self) -> bool:
        """Read the configuration file again (SIGHUP, a change seen by :meth:`poll_config`) and
        apply what changed among :data:`~core.config_file.LIVE_KEYS` from the next prompt on;
        whether it was applied. A wrong file changes nothing (one line naming the file and the
        key); a changed key that cannot change live keeps its value (one line naming them)."""
        path = self.config_path
        # A SIGHUP reload counts as the poll's look too: the next tick does not read it again.
        self._config_signature = file_signature(path)
        try:
            data = read_config(path, required=self._config_named)
            # Every class: a wrong value of a front end's key refuses the file too. The same
            # order as at start-up: environment > .env > file.
            loaded = {type(s): s for s in load_all(_settings_classes())}
        except SettingsError as exc:
            log.warning("%s refused, settings unchanged: %s", path, "; ".join(exc.problems))
            return False
        unknown = unknown_keys(data, _settings_classes())
        changed = {
            key
            for key in data.keys() | self._config.keys()
            if data.get(key) != self._config.get(key) and key not in unknown
        }
        fresh = cast(Settings, loaded[Settings])
        live = {key: getattr(fresh, key) for key in changed & LIVE_KEYS}
        updated = self.settings.model_copy(update=live)
        try:
            self.engine.update_settings(updated)
        except LLMError as exc:
            log.warning("%s refused, settings unchanged: %s", path, exc)
            return False
        self.settings = updated
        self._config = data
        fixed = sorted(changed - LIVE_KEYS)
        if fixed:
            log.warning(
                "%s: %s cannot change while running; kept as they were until a restart",
                path,
                ", ".join(fixed),
            )
        if unknown:
            log.warning("%s: unknown keys, ignored: %s", path, ", ".join(unknown))
        # On the runner's output, like the banner: the operator who sent SIGHUP sees it worked.
        self.out.write(f"{path} reloaded: {', '.join(sorted(live)) or 'nothing changed live'}\n")
        self.out.flush()
        return True

    async def _watch_config(self) -> None:
        """Poll the file every ``CONFIG_POLL_INTERVAL`` seconds (read each time: it is live)."""
        while True:
            await asyncio.sleep(self.settings.config_poll_interval)
            try:
                self.poll_config()
            except Exception:  # the watch must outlive any surprise; the settings stay
                log.exception("%s: reload failed", self.config_path)

    # ----------------------------------------------------------------- life cycle

    def request_stop(self) -> None:
        """Begin the graceful shutdown (a second call stops waiting for open connections)."""
        self._signals += 1
        if self._signals > 1:
            for fe in self._tried:
                fe.hurry()
        self._stop.set()

    async def run(self, *, install_signal_handlers: bool = True) -> int:
        """Start, serve until stopped, shut down; the exit code."""
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        if install_signal_handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.request_stop)
                    handled.append(sig)
            with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
                loop.add_signal_handler(signal.SIGHUP, self.reload)
                handled.append(signal.SIGHUP)
        watch = asyncio.create_task(self._watch_config(), name="config watch")
        code = 0
        try:
            try:
                await self.start()
            except RunError as exc:
                self.out.write(f"{exc}\n")
                code = 2
            except Exception as exc:
                log.debug("start-up failed", exc_info=exc)
                self.out.write(f"Could not start: {describe(exc)}\n")
                code = 1
            else:
                code = await self._wait()
            await self.shutdown()
        finally:
            watch.cancel()
            for sig in handled:
                loop.remove_signal_handler(sig)
        return code

    async def start(self) -> None:
        """Start every front end and say what runs where."""
        if not self.frontends:
            raise RunError(NOTHING_TO_RUN)
        # Ask the providers for their models now, in the background: the first /model
        # autocomplete or web page finds the lists rather than the defaults.
        self.engine.available_models()
        # The MCP servers connect in the background too (MCP_SERVERS): no front end waits.
        await self.engine.start()
        lines: list[tuple[FrontEnd, str]] = []
        for fe in self.frontends:
            self._tried.append(fe)
            where = await fe.start(self.engine)
            self._waits[asyncio.create_task(fe.wait(), name=fe.name)] = fe
            lines.append((fe, where))
        metrics_at = await self.metrics_server.start() if self.metrics_server else None
        if self.tune_gc:
            settle_heap()
        if self.brief:
            for fe, where in lines:
                self.out.write(f"{fe.name} {where}\n")
                for note in fe.notes:
                    self.out.write(f"  {note}\n")
        else:
            self._banner(lines)
        if metrics_at is not None:
            self.out.write(f"Metrics and health: {metrics_at} (/healthz, /readyz)\n")
        self.out.flush()
        self.started.set()

    def _banner(self, lines: list[tuple[FrontEnd, str]]) -> None:
        self.out.write(f"LLMConnect is running, default model {self.engine.default_model}:\n")
        for fe, where in lines:
            self.out.write(f"  {fe.name + ':':<14}{where}\n")
            for note in fe.notes:
                self.out.write(f"  {'':<14}{note}\n")
        hints = self.hints()
        if hints:
            self.out.write("To add more, set in .env or the environment:\n")
            for label, text in hints:
                self.out.write(f"  {label + ':':<14}{text}\n")
        self.out.write("`llmconnect doctor` checks the configuration. Ctrl-C stops.\n")

    def hints(self) -> list[tuple[str, str]]:
        """What the operator could add, as (what, which variables): a real model, the front ends
        not configured."""
        hints: list[tuple[str, str]] = []
        if self.engine.default_model.startswith("echo/"):
            keyed = [
                r for r in provider_status(self.engine.env) if r.has_key and r.spec.name != "echo"
            ]
            if keyed:
                names = ", ".join(r.spec.name for r in keyed)
                hints.append(
                    (
                        "a real model",
                        f"LLMCONNECT_MODEL={keyed[0].spec.name} (keys set: {names}; or pick a "
                        "model in the web chat)",
                    )
                )
            else:
                # The providers the table suggests to a newcomer, first the one to try.
                first, *others = sorted(
                    (spec for spec in PROVIDERS.values() if spec.suggested),
                    key=lambda spec: spec.suggested,
                )
                keys = ", ".join(spec.key_vars[0] for spec in others)
                hints.append(
                    (
                        "a real model",
                        f"a provider key, e.g. {first.key_vars[0]} (others: {keys}, ... in "
                        f".env.example), and LLMCONNECT_MODEL={first.name}",
                    )
                )
        else:
            provider = self.engine.default_model.split("/", 1)[0]
            for r in provider_status(self.engine.env):
                if r.spec.name == provider and not r.configured:
                    hints.append(
                        ("the model", f"{r.key_var} ({self.engine.default_model} needs it)")
                    )
        return hints + self._hints

    async def _wait(self) -> int:
        """Until a stop is requested (0) or a front end ends on its own (1; 2 when it was the
        configuration and nothing else runs)."""
        stop: asyncio.Task[Any] = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait({stop, *self._waits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if stop in done:
            return 0
        configuration = True
        for task in done:
            reason, configuration_too = _failure(task)
            configuration = configuration and configuration_too
            self.out.write(f"{self._waits[task].name} stopped: {reason}\n")
        running = any(not task.done() for task in self._waits)
        return 2 if configuration and not running else 1

    async def shutdown(self) -> None:
        """No new requests; every front end ends its replies and closes (each within the grace);
        then every generation left ends; then the connections close."""
        self.out.write("Stopping: no new requests; ending the replies that run...\n")
        self.out.flush()
        bound = self.grace + DISCONNECT_TIMEOUT
        results = await asyncio.gather(
            *(asyncio.wait_for(fe.aclose(self.grace), bound) for fe in self._tried),
            return_exceptions=True,
        )
        for fe, result in zip(self._tried, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("%s did not close cleanly: %r", fe.name, result)
        if self.metrics_server is not None:
            await self.metrics_server.aclose()
        # Whatever a front end did not stop ends now, in a final state.
        await self.engine.aclose()
        tasks = [task for task in self._waits if not task.done()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=DISCONNECT_TIMEOUT)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await aclose_shared_clients()
        self.out.write("Stopped.\n")
        self.out.flush()


def _settings_classes() -> list[type[BaseSettings]]:
    from .registry import settings_classes  # imported here: the registry imports this module's
    # neighbours, and a test may build a runner before them

    return settings_classes()


def _failure(task: asyncio.Task[None]) -> tuple[str, bool]:
    """Why a front end stopped, and whether it was its configuration."""
    if task.cancelled():
        return "cancelled", False
    exc = task.exception()
    if exc is None:
        return "ended", False
    if isinstance(exc, RunError):
        return str(exc), True
    log.debug("%s failed", task.get_name(), exc_info=exc)
    return describe(exc), False


# --------------------------------------------------------------------------- commands


def load_all(classes: Sequence[type[BaseSettings]], **overrides: object) -> list[BaseSettings]:
    """Read each settings class (``overrides`` that are ``None`` are left out); one
    :class:`SettingsError` lists every wrong value of them all."""
    given = {name: value for name, value in overrides.items() if value is not None}
    loaded: list[BaseSettings] = []
    problems: list[str] = []
    for cls in classes:
        try:
            loaded.append(load_settings(cls, **given))
        except SettingsError as exc:
            problems += exc.problems
    if problems:
        raise SettingsError(problems)
    return loaded


def configured(
    classes: Sequence[FrontEndClass], **overrides: object
) -> tuple[list[FrontEnd], list[tuple[str, str]]]:
    """The front ends of ``classes`` that their settings turn on, and a hint (label, what to
    set) for each of the others; a wrong setting of any raises :class:`SettingsError`."""
    loaded = load_all([cls.settings_class for cls in classes], **overrides)
    frontends: list[FrontEnd] = []
    hints: list[tuple[str, str]] = []
    for cls, settings in zip(classes, loaded, strict=True):
        if cls.configured(settings):
            frontends.append(cls(settings))
        elif cls.hint:
            hints.append((cls.label, cls.hint))
    return frontends, hints


async def run(
    settings: Settings,
    frontends: Sequence[FrontEnd],
    *,
    grace: float = DEFAULT_GRACE,
    hints: Sequence[tuple[str, str]] = (),
    brief: bool = False,
    out: TextIO | None = None,
    metrics_host: str = "127.0.0.1",
    metrics_port: int | None = None,
) -> int:
    """The ``llmconnect run`` / ``discord`` / ``slack`` / ``web`` entry point: the exit code."""
    configure_logging(settings)  # LOG_FORMAT, LOG_LEVEL: once, for every serving command
    try:
        runner = Runner(
            settings,
            frontends,
            grace=grace,
            hints=hints,
            brief=brief,
            out=out,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            tune_gc=True,  # this process serves: see settle_heap
        )
    # LLMCONNECT_MODEL names an unknown provider; the store cannot be opened (its message names
    # STORE_URL: a SQLite file in a folder that does not exist, one that may not be written).
    except (LLMError, OSError) as exc:
        (out or sys.stdout).write(f"{exc}\n")
        return 2
    except SettingsError as exc:  # the configuration file (a secret in it, not TOML)
        (out or sys.stdout).write(f"{exc}\n")
        return 2
    return await runner.run()
