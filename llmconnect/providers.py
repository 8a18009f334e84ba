"""The provider registry: data, not code.

Each provider is one frozen :class:`ProviderSpec` row (name, wire protocol, default base URL, key
variables, default model, and every other fact about it: whether it takes ``stream_options``, how
its keys begin, whether to suggest it). Code exists only per *protocol* (``llmconnect.protocols``).
A model is written ``provider/model`` and split on the first ``/``; a bare provider name picks its
default model. ``<PROVIDER>_BASE_URL`` overrides a base URL, and any other name ``foo/model``
becomes an OpenAI-compatible provider as soon as ``FOO_BASE_URL`` is set (key, if any, in
``FOO_API_KEY``). :func:`resolve` is the one place a name and an environment become a spec, a
model id, a base URL and whether a key is set; everything else asks it.

A model id ends up in request bodies and, for Gemini, in the URL path, so it is checked here
(:func:`validate_model_id`) whenever a model is parsed or a client is made.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigurationError, InvalidModelIdError

__all__ = [
    "PROVIDERS",
    "ModelRef",
    "ProviderSpec",
    "ResolvedProvider",
    "base_url_variable",
    "get_spec",
    "parse_model",
    "resolve",
    "validate_model_id",
]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    protocol: str  # "openai" | "anthropic" | "gemini" | "echo"
    base_url: str
    #: Environment variables holding the key, first match wins; empty for keyless providers.
    key_vars: tuple[str, ...] = ()
    default_model: str = ""
    #: Keyless local servers (ollama, lmstudio) count as configured without a key.
    needs_key: bool = True
    #: What people call it (``"Groq"``), for messages; the name when empty.
    label: str = ""
    #: An OpenAI-compatible endpoint that accepts ``stream_options`` (usage in the last chunk);
    #: Mistral's rejects the field.
    stream_options: bool = True
    #: How the provider's own keys begin (``gsk_``), for ``llmconnect doctor``; a proxy set by
    #: ``<PROVIDER>_BASE_URL`` may hand out other keys.
    key_prefixes: tuple[str, ...] = ()
    #: Offered to a newcomer with no key yet (``llmconnect run``'s hint), lowest first; 0: not.
    suggested: int = 0
    #: Model-id patterns (``fnmatch``, case-insensitive) of the models that read images; the
    #: generic ones (``llmconnect.parts.GENERIC_VISION_MODELS``) and ``LLMCONNECT_VISION_MODELS``
    #: add to them. A model that matches none gets a note instead of each image.
    vision_models: tuple[str, ...] = ()
    #: Model-id patterns of the models sent PDFs as documents; the others get the PDF's text.
    document_models: tuple[str, ...] = ()
    #: Model-id patterns of the models that take tools (function calling); ``LLMCONNECT_TOOL_MODELS``
    #: adds more. A model that matches none, or matches ``no_tool_models``, is sent no tools.
    tool_models: tuple[str, ...] = ("*",)
    #: Model-id patterns of this provider's models known not to take tools.
    no_tool_models: tuple[str, ...] = ()


PROVIDERS: Mapping[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            "echo",
            "echo",
            "",
            (),
            "echo",
            needs_key=False,
            label="Offline echo (no network)",
            tool_models=(),
        ),
        ProviderSpec(
            "openai",
            "openai",
            "https://api.openai.com/v1",
            ("OPENAI_API_KEY",),
            "gpt-4o-mini",
            label="OpenAI",
            key_prefixes=("sk-",),
            suggested=2,
            vision_models=(
                "gpt-4o*",
                "chatgpt-4o*",
                "gpt-4.1*",
                "gpt-4-turbo*",
                "gpt-5*",
                "o1",
                "o1-2*",
                "o3*",
                "o4*",
            ),
            # ``file`` content parts (PDF): OpenAI's own API, its vision models.
            document_models=("gpt-4o*", "gpt-4.1*", "gpt-5*", "o1", "o1-2*", "o3*", "o4*"),
            no_tool_models=(
                "o1-mini*",
                "o1-preview*",
                "chatgpt-4o*",
                "gpt-3.5-turbo-instruct*",
                "*-search-*",
                "*audio*",
                "*realtime*",
            ),
        ),
        ProviderSpec(
            "groq",
            "openai",
            "https://api.groq.com/openai/v1",
            ("GROQ_API_KEY",),
            "llama-3.3-70b-versatile",
            label="Groq",
            key_prefixes=("gsk_",),
            suggested=1,  # a free tier, and fast
            no_tool_models=("*guard*", "whisper*", "*tts*"),
        ),
        ProviderSpec(
            "aimlapi",
            "openai",
            "https://api.aimlapi.com/v1",
            ("AIMLAPI_API", "AIMLAPI_API_KEY"),
            "gpt-4o-mini",
            label="AI/ML API",
        ),
        ProviderSpec(
            "openrouter",
            "openai",
            "https://openrouter.ai/api/v1",
            ("OPENROUTER_API_KEY",),
            "meta-llama/llama-3.1-8b-instruct",
            label="OpenRouter",
            key_prefixes=("sk-or-",),
        ),
        ProviderSpec(
            "mistral",
            "openai",
            "https://api.mistral.ai/v1",
            ("MISTRAL_API_KEY",),
            "mistral-small-latest",
            label="Mistral",
            stream_options=False,
            vision_models=(
                "pixtral*",
                "mistral-small-latest",
                "mistral-small-25*",
                "mistral-medium*",
            ),
        ),
        ProviderSpec(
            "deepseek",
            "openai",
            "https://api.deepseek.com/v1",
            ("DEEPSEEK_API_KEY",),
            "deepseek-chat",
            label="DeepSeek",
            key_prefixes=("sk-",),
        ),
        ProviderSpec(
            "together",
            "openai",
            "https://api.together.xyz/v1",
            ("TOGETHER_API_KEY",),
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            label="Together AI",
        ),
        ProviderSpec(
            "ollama",
            "openai",
            "http://localhost:11434/v1",
            ("OLLAMA_API_KEY",),
            "llama3.2",
            needs_key=False,
            label="Ollama",
            # Ollama answers 400 "does not support tools" for the others: the families whose
            # templates take tools (``ollama.com/search?c=tools``); LLMCONNECT_TOOL_MODELS adds.
            tool_models=(
                "llama3.1*",
                "llama3.2*",
                "llama3.3*",
                "llama4*",
                "qwen2.5*",
                "qwen3*",
                "qwq*",
                "mistral*",
                "mixtral*",
                "command-r*",
                "granite3*",
                "hermes3*",
                "firefunction*",
                "smollm2*",
                "deepseek-r1*",
                "gpt-oss*",
                "devstral*",
                "magistral*",
            ),
        ),
        ProviderSpec(
            "lmstudio",
            "openai",
            "http://localhost:1234/v1",
            ("LMSTUDIO_API_KEY",),
            "local-model",
            needs_key=False,
            label="LM Studio",
        ),
        ProviderSpec(
            "anthropic",
            "anthropic",
            "https://api.anthropic.com",
            ("ANTHROPIC_API_KEY",),
            "claude-sonnet-4-5",
            label="Anthropic",
            key_prefixes=("sk-ant-",),
            suggested=3,
            vision_models=("claude-*",),
            document_models=("claude-*",),
            tool_models=("claude-*",),
        ),
        ProviderSpec(
            "gemini",
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta",
            ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
            "gemini-2.5-flash",
            label="Google AI Studio",
            key_prefixes=("AIza",),
            suggested=4,
            vision_models=("gemini-*", "gemma-3*"),
            document_models=("gemini-*",),
            # Gemma on the Gemini API has no function calling.
            tool_models=("gemini-*",),
            no_tool_models=("gemini-*-tts*", "gemini-*-image*", "*embedding*"),
        ),
    )
}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
#: ASCII letters and digits plus ``._-:/@+``: every real model id fits (``gpt-4o-mini``,
#: ``meta-llama/llama-3.1-8b-instruct``, ``llama3.2:3b``), and none of ``?#%``, whitespace or
#: non-ASCII can reach a URL or a log line through one.
_MODEL_ID_RE = re.compile(r"[A-Za-z0-9._\-:/@+]+")


def validate_model_id(model: str) -> str:
    """``model`` unchanged if it is a safe model id, else :class:`InvalidModelIdError`.

    Safe: only ASCII letters, digits and ``._-:/@+``, and no empty, ``.`` or ``..`` part between
    slashes (so it can never walk up a URL path). Works on a bare model id (``gpt-4o``) and on a
    ``provider/model`` name alike.
    """
    if _MODEL_ID_RE.fullmatch(model) and not any(
        part in ("", ".", "..") for part in model.split("/")
    ):
        return model
    raise InvalidModelIdError(
        f"Invalid model id {model[:100]!r}: only ASCII letters, digits and ._-:/@+ are "
        "allowed, with no empty, '.' or '..' part between slashes."
    )


@dataclass(frozen=True, slots=True)
class ModelRef:
    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class ResolvedProvider:
    """What a model name means in an environment (:func:`resolve`): the spec row, the model id,
    the base URL in use and whether a key is there. Never holds the key itself."""

    spec: ProviderSpec
    #: The model id without the provider (``llama-3.3-70b-versatile``): the one given, else the
    #: spec's default; ``""`` when there is neither (a custom provider named alone).
    model: str
    base_url: str
    key_var: str | None  # the variable the key was read from, or the one to set
    has_key: bool
    #: ``<PROVIDER>_BASE_URL`` is set (the base URL is not the spec's).
    base_url_overridden: bool = False

    @property
    def configured(self) -> bool:
        return self.has_key or not self.spec.needs_key

    @property
    def ref(self) -> ModelRef:
        """``provider/model``; :class:`ConfigurationError` when there is no model id."""
        if not self.model:
            raise ConfigurationError(
                f"Provider {self.spec.name!r} has no default model: write {self.spec.name}/<model>.",
                provider=self.spec.name,
            )
        return ModelRef(self.spec.name, self.model)


def base_url_variable(provider: str) -> str:
    """The variable that overrides ``provider``'s base URL (``my-llm`` → ``MY_LLM_BASE_URL``)."""
    return f"{provider.upper().replace('-', '_')}_BASE_URL"


def _custom_spec(name: str) -> ProviderSpec:
    env_name = name.upper().replace("-", "_")
    return ProviderSpec(name, "openai", "", (f"{env_name}_API_KEY",), needs_key=False)


def get_spec(name: str, env: Mapping[str, str] | None = None) -> ProviderSpec:
    """The spec row for ``name``; unknown names are OpenAI-compatible if ``NAME_BASE_URL`` is set."""
    env = os.environ if env is None else env
    name = name.strip().lower()
    spec = PROVIDERS.get(name)
    if spec is not None:
        return spec
    if _NAME_RE.match(name) and env.get(base_url_variable(name)):
        return _custom_spec(name)
    known = ", ".join(sorted(PROVIDERS))
    raise ConfigurationError(
        f"Unknown provider {name!r}. Known providers: {known}; or set "
        f"{base_url_variable(name)} to use any OpenAI-compatible server.",
        provider=name or None,
        user_message=f"Unknown provider {name!r}. Known providers: {known}.",
    )


def resolve(
    model: str, env: Mapping[str, str] | None = None, *, provider: str | None = None
) -> ResolvedProvider:
    """What ``model`` means in ``env`` (default: the process environment).

    ``model`` is ``provider/model`` (split on the first ``/``) or a bare provider name (its
    default model); with ``provider=`` it is the model id alone (empty: the default). The
    result holds the spec row, the model id, the base URL (``<PROVIDER>_BASE_URL`` wins) and
    which key variable is set, if any. :class:`ConfigurationError` for no model or an unknown
    provider, :class:`InvalidModelIdError` for a model id that is not safe to send.
    """
    env = os.environ if env is None else env
    model = (model or "").strip()
    if provider:
        spec = get_spec(provider, env)
        model_id = model or spec.default_model
    elif not model:
        raise ConfigurationError(
            "No model given: write it as provider/model, e.g. groq/llama-3.3-70b-versatile.",
            user_message="No model given: write it as provider/model.",
        )
    else:
        head, _, tail = model.partition("/")
        spec = get_spec(head, env)
        model_id = tail.strip() or spec.default_model
    if model_id:
        validate_model_id(model_id)
    override = env.get(base_url_variable(spec.name))
    base_url = (override or spec.base_url).rstrip("/")
    key_var = next((var for var in spec.key_vars if env.get(var)), None)
    return ResolvedProvider(
        spec,
        model_id,
        base_url,
        key_var or (spec.key_vars[0] if spec.key_vars else None),
        key_var is not None,
        bool(override),
    )


def parse_model(
    model: str, provider: str | None = None, env: Mapping[str, str] | None = None
) -> ModelRef:
    """Split ``provider/model`` on the first ``/``; a bare provider name picks its default model.

    ``resolve(model, env, provider=provider).ref``.
    """
    return resolve(model, env, provider=provider).ref
