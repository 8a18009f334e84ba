"""The web chat front end (FastAPI): over the shared engine (``llmconnect web``,
``llmconnect run``).

The names below load on first use (PEP 562): ``bots.web.settings`` and ``bots.web.frontend`` are
importable without importing FastAPI or uvicorn (``llmconnect doctor``, the front-end registry).
"""

from __future__ import annotations

from bots.lazy import lazy_attributes

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

__getattr__ = lazy_attributes(__name__, _WHERE)
