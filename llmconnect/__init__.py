"""LLMConnect: a small provider-agnostic async client for streaming LLM chat.

Usable on its own (it never imports the bots or their core)::

    from llmconnect import APIClientFactory

    client = APIClientFactory.create(model="echo")
    async for delta in await client.chat("hello", stream=True):
        print(delta, end="", flush=True)
"""

from .catalog import list_models, provider_status
from .client import APIClientFactory, AsyncAPIClient, Usage
from .errors import (
    AuthenticationError,
    ConfigurationError,
    ContextLengthError,
    EventTooLargeError,
    InvalidModelIdError,
    InvalidRequestError,
    LLMError,
    LLMTimeoutError,
    ModelNotFoundError,
    ProviderUnavailableError,
    RateLimitError,
    StreamInterruptedError,
    TimeLimitError,
)
from .providers import PROVIDERS, ModelRef, ProviderSpec, parse_model, validate_model_id
from .sse import SSEDecoder
from .transport import RetryPolicy, Timeouts, aclose_shared_clients

__all__ = [
    "PROVIDERS",
    "APIClientFactory",
    "AsyncAPIClient",
    "AuthenticationError",
    "ConfigurationError",
    "ContextLengthError",
    "EventTooLargeError",
    "InvalidModelIdError",
    "InvalidRequestError",
    "LLMError",
    "LLMTimeoutError",
    "ModelNotFoundError",
    "ModelRef",
    "ProviderSpec",
    "ProviderUnavailableError",
    "RateLimitError",
    "RetryPolicy",
    "SSEDecoder",
    "StreamInterruptedError",
    "TimeLimitError",
    "Timeouts",
    "Usage",
    "aclose_shared_clients",
    "list_models",
    "parse_model",
    "provider_status",
    "validate_model_id",
]

__version__ = "0.1.0"
