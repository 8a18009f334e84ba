"""LLMConnect: a small provider-agnostic async client for streaming LLM chat.

Usable on its own (it never imports the bots or their core)::

    from llmconnect import APIClientFactory

    client = APIClientFactory.create(model="echo")
    async for delta in await client.chat("hello", stream=True):
        print(delta, end="", flush=True)

``chat(..., stream=True)`` returns a :class:`ReplyStream`, which also holds the reply's
``text``, ``finish_reason`` and ``usage`` once it is complete; ``stream.events()`` yields
``("text" | "reasoning", str)`` tuples for reasoning models, ``stream.reasoning`` their thinking. :func:`resolve` says what a model
name means in an environment (provider spec, model id, base URL, whether a key is set).

A message may carry parts: ``await client.chat(["What is this?", Image(png_bytes)])`` with
:class:`Image` (bytes or an https URL) and :class:`Document` (PDF bytes); :func:`supports_images`
and :func:`supports_documents` say which models take them as such (the others get notes and text).

Function calling: ``await client.chat("Weather?", stream=True, tools=[Tool(...)])``; the model's
calls are ``("tool_call", ToolCall)`` events and ``reply.tool_calls``, answered with
``client.send_tool_results([call.result("...")], stream=True, tools=...)``
(:mod:`llmconnect.tools`, docs/tools.md); :func:`supports_tools` says which models take tools.
"""

from .catalog import list_models, provider_status
from .client import (
    REASONING,
    TEXT,
    TOOL_CALL,
    APIClientFactory,
    AsyncAPIClient,
    ChatMessage,
    ReplyStream,
    Usage,
)
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
from .parts import (
    DEFAULT_MAX_DOCUMENT_CHARS,
    GENERIC_VISION_MODELS,
    IMAGE_TYPES,
    VISION_MODELS_VARIABLE,
    Content,
    Document,
    Image,
    Part,
    document_text,
    supports_documents,
    supports_images,
)
from .providers import (
    PROVIDERS,
    ModelRef,
    ProviderSpec,
    ResolvedProvider,
    base_url_variable,
    parse_model,
    resolve,
    validate_model_id,
)
from .sse import SSEDecoder
from .tools import (
    NOT_RUN,
    TOOL_MODELS_VARIABLE,
    Tool,
    ToolCall,
    ToolResult,
    assistant_turn,
    supports_tools,
    tool_results_turn,
)
from .transport import RetryPolicy, Timeouts, aclose_shared_clients

__all__ = [
    "DEFAULT_MAX_DOCUMENT_CHARS",
    "GENERIC_VISION_MODELS",
    "IMAGE_TYPES",
    "NOT_RUN",
    "PROVIDERS",
    "REASONING",
    "TEXT",
    "TOOL_CALL",
    "TOOL_MODELS_VARIABLE",
    "VISION_MODELS_VARIABLE",
    "APIClientFactory",
    "AsyncAPIClient",
    "AuthenticationError",
    "ChatMessage",
    "ConfigurationError",
    "Content",
    "ContextLengthError",
    "Document",
    "EventTooLargeError",
    "Image",
    "InvalidModelIdError",
    "InvalidRequestError",
    "LLMError",
    "LLMTimeoutError",
    "ModelNotFoundError",
    "ModelRef",
    "Part",
    "ProviderSpec",
    "ProviderUnavailableError",
    "RateLimitError",
    "ReplyStream",
    "ResolvedProvider",
    "RetryPolicy",
    "SSEDecoder",
    "StreamInterruptedError",
    "TimeLimitError",
    "Timeouts",
    "Tool",
    "ToolCall",
    "ToolResult",
    "Usage",
    "aclose_shared_clients",
    "assistant_turn",
    "base_url_variable",
    "document_text",
    "list_models",
    "parse_model",
    "provider_status",
    "resolve",
    "supports_documents",
    "supports_images",
    "supports_tools",
    "tool_results_turn",
    "validate_model_id",
]

__version__ = "0.1.0"
