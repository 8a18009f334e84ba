"""Every error llmconnect raises, one tree.

::

    LLMError                      .provider  .status  .user_message  .retryable
    ├── ConfigurationError        unknown provider, bad model string, missing key (names the variable)
    │   └── InvalidModelIdError   a model id outside the safe characters (see validate_model_id)
    ├── AuthenticationError       401 / 403: the key is wrong or lacks access
    ├── RateLimitError            429: .retry_after (seconds) when the provider said
    ├── ContextLengthError        the prompt does not fit the model's context window
    ├── ModelNotFoundError        404 / unknown model id
    ├── InvalidRequestError       any other 4xx: the request itself is wrong
    ├── ProviderUnavailableError  5xx, 408, 409, connection refused / reset before the reply
    ├── LLMTimeoutError           connect timeout, or no content event for the idle timeout
    │   └── TimeLimitError        the reply ran past its time limit (Timeouts.max_duration);
    │                             the text so far is what the caller received, never retried
    └── StreamInterruptedError    the stream broke after it started: dropped connection,
        │                         malformed chunk, an error event in the middle of the stream,
        │                         a 200 body that ended without a complete reply (never retried)
        └── EventTooLargeError    one event (or a JSON body) over max_event_bytes, never retried

``str(err)`` is for logs and developers; ``err.user_message`` is a short line that is safe to show a
chat user. Neither ever contains an API key: messages are built here from the provider's error text
with the key redacted, never from request headers or URLs.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "ContextLengthError",
    "EventTooLargeError",
    "InvalidModelIdError",
    "InvalidRequestError",
    "LLMError",
    "LLMTimeoutError",
    "ModelNotFoundError",
    "ProviderUnavailableError",
    "RateLimitError",
    "StreamInterruptedError",
    "TimeLimitError",
]


class LLMError(Exception):
    """Base of every llmconnect error."""

    #: Whether sending the same request again may succeed (used before the first delta only).
    retryable: bool = False
    #: Default user-facing line; subclasses refine it.
    default_user_message: str = "The language model failed to answer."

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        user_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self._user_message = user_message

    @property
    def user_message(self) -> str:
        """A short line safe to show a chat user: no traceback, no key, no URL."""
        if self._user_message:
            return self._user_message
        who = f" ({self.provider})" if self.provider else ""
        return f"{self.default_user_message}{who}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, provider={self.provider!r}, "
            f"status={self.status!r})"
        )


class ConfigurationError(LLMError):
    default_user_message = "This model is not configured."


class InvalidModelIdError(ConfigurationError):
    """A model id that could smuggle something into a request (``../``, ``?``, ``#``, ``%``,
    whitespace, non-ASCII): refused before any request is built."""

    default_user_message = (
        "That model name is not valid: use letters, digits and . _ - : / @ + "
        "(no '..' part, no spaces)."
    )


class AuthenticationError(LLMError):
    default_user_message = "The provider rejected the API key."


class RateLimitError(LLMError):
    retryable = True
    default_user_message = "The provider is rate limiting requests; try again shortly."

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ContextLengthError(LLMError):
    default_user_message = "The conversation is too long for this model; reset it or shorten it."


class ModelNotFoundError(LLMError):
    default_user_message = "The provider does not know this model."


class InvalidRequestError(LLMError):
    default_user_message = "The provider refused the request."


class ProviderUnavailableError(LLMError):
    retryable = True
    default_user_message = "The provider is unavailable right now."

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class LLMTimeoutError(LLMError):
    retryable = True
    default_user_message = "The provider took too long to answer."


class TimeLimitError(LLMTimeoutError):
    """The reply went on past its time limit: it ends here, the text so far stays the caller's."""

    retryable = False
    default_user_message = "The reply was cut at the time limit."


class StreamInterruptedError(LLMError):
    retryable = True
    default_user_message = "The reply was cut off by the provider."


class EventTooLargeError(StreamInterruptedError):
    """One server-sent event (or a whole JSON body) was larger than the client accepts."""

    retryable = False
    default_user_message = "The provider sent a reply piece larger than this bot accepts."
