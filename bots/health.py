"""``GET /metrics``, ``/healthz`` and ``/readyz``: on the web chat's port, or, when the web chat
does not run, on their own server at ``METRICS_HOST:METRICS_PORT`` (:class:`MetricsServer`).

- ``/metrics``: the engine's Prometheus metrics (:mod:`core.metrics`), text format.
- ``/healthz``: 200 as long as the process serves HTTP.
- ``/readyz``: 200 when the conversation store answers and every front end is connected (Discord:
  the gateway; Slack: the Socket Mode connection or the HTTP listener; the web chat: serving);
  else 503 with a JSON body naming what is not ready. Reasons are fixed phrases: never an
  exception's text (a Redis URL in it may carry a password).

On the web chat's port these routes pass the web chat's guard like every other route, so with
``WEB_AUTH_TOKEN`` set they need the token (``Authorization: Bearer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from core.metrics import CONTENT_TYPE

from .frontend import RunError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from core.engine import ChatEngine

    from .web.server import Server

__all__ = ["STORE_PING_TIMEOUT", "Health", "MetricsServer", "health_routes", "store_ready"]

log = logging.getLogger("llmconnect.health")

#: Seconds ``/readyz`` waits for the store before calling it unreachable.
STORE_PING_TIMEOUT = 2.0


class Ready(Protocol):
    """What ``/readyz`` asks of each front end (:meth:`bots.frontend.FrontEnd.ready`)."""

    name: str

    async def ready(self) -> tuple[bool, str]: ...


async def store_ready(store: object, seconds: float = STORE_PING_TIMEOUT) -> bool:
    """Whether the store answers a cheap query (``count()``) within ``seconds``; a store
    without one (memory) is always ready."""
    count = getattr(store, "count", None)
    if count is None:
        return True
    try:
        await asyncio.wait_for(count(), seconds)
    except Exception as exc:  # unreachable, timed out: not ready (logged without the message)
        log.debug("store not ready: %s", type(exc).__name__)
        return False
    return True


class Health:
    """The readiness of one process: its engine's store and its front ends."""

    def __init__(self, engine: ChatEngine, frontends: Sequence[Ready] = ()) -> None:
        self.engine = engine
        self.frontends = list(frontends)

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the JSON body): ``{"ready": bool, "checks": {name: "ok" | why not}}``."""
        checks: dict[str, str] = {}
        checks["store"] = "ok" if await store_ready(self.engine.store) else "unreachable"
        for fe in self.frontends:
            ok, why = await fe.ready()
            checks[fe.name] = "ok" if ok else why
        ready = all(value == "ok" for value in checks.values())
        body: dict[str, Any] = {"ready": ready, "checks": checks}
        if not ready:
            body["not_ready"] = sorted(name for name, value in checks.items() if value != "ok")
        return ready, body


def health_routes(engine: ChatEngine, health: Health) -> list[Route]:
    """``/metrics``, ``/healthz``, ``/readyz`` as Starlette routes (the web app adds them too)."""
    # Imported here: the runner imports this module, and doctor must not load Starlette.
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def metrics(request: Request) -> Response:
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, body = await health.check()
        return JSONResponse(body, status_code=200 if ready else 503)

    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]


class MetricsServer:
    """The three routes on ``host:port`` (uvicorn, like the web chat), for a process without the
    web chat (``--no-web``, ``llmconnect discord|slack``) when ``METRICS_PORT`` is set."""

    def __init__(self, engine: ChatEngine, health: Health, host: str, port: int) -> None:
        self.engine = engine
        self.health = health
        self.host = host
        self.port = port
        #: The port it listens on, once started (``port=0``: any free one).
        self.bound: int | None = None
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        import uvicorn
        from starlette.applications import Starlette

        from .web.server import Server, listen

        app = Starlette(routes=health_routes(self.engine, self.health))
        try:
            sock = listen(self.host, self.port)
        except RunError:
            raise RunError(
                f"The metrics server cannot listen on {self.host}:{self.port}: set METRICS_PORT "
                "(or METRICS_HOST) to a free one."
            ) from None
        self.bound = int(sock.getsockname()[1])
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        self._server = Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="metrics")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound}/metrics"

    async def aclose(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception, SystemExit):
            await asyncio.wait_for(asyncio.shield(self._task), 5.0)
        if not self._task.done():
            self._task.cancel()
