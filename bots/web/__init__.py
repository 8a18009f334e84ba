"""The web chat front end (FastAPI): the seed's app over the shared engine (``llmconnect run``)."""

from .app import PLATFORM, WebChat, create_app
from .guard import LOOPBACK_HOSTS, Guard, is_loopback

__all__ = ["LOOPBACK_HOSTS", "PLATFORM", "Guard", "WebChat", "create_app", "is_loopback"]
