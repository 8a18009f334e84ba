"""The web chat on uvicorn: a socket that already listens, and a server that leaves the signals to
the runner."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from bots.frontend import RunError

__all__ = ["Server", "listen", "url_of"]


class Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGINT/SIGTERM (uvicorn would
    re-raise the signal after its shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a :class:`RunError` naming the setting."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise RunError(
            f"The web chat cannot listen on {host}:{port} ({exc.strerror or exc}): set WEB_PORT "
            "(or WEB_HOST) to a free one, or stop the program that uses it."
        ) from None


def url_of(host: str, port: int) -> str:
    """The URL to open (and what it means, for a wildcard address)."""
    if host in ("0.0.0.0", "::", ""):
        return f"http://127.0.0.1:{port} (listening on every interface)"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
