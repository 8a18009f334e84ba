"""The web chat front end (FastAPI): the seed's app over the shared engine (``llmconnect web``,
``llmconnect run``).

The names below load on first use (PEP 562): ``bots.web.settings`` and ``bots.web.frontend`` are
importable without importing FastAPI or uvicorn (``llmconnect doctor``, the front-end registry).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "LOOPBACK_HOSTS",
    "PLATFORM",
    "Guard",
    "WebChat",
    "WebFrontEnd",
    "WebSettings",
    "create_app",
    "is_loopback",
]

_WHERE = {
    "PLATFORM": "app",
    "WebChat": "app",
    "create_app": "app",
    "Guard": "guard",
    "LOOPBACK_HOSTS": "guard",
    "is_loopback": "guard",
    "WebFrontEnd": "frontend",
    "WebSettings": "settings",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
