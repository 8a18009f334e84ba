"""The provider registry: data, not code.

Each provider is one frozen :class:`ProviderSpec` row (name, wire protocol, default base URL, key
variables, default model). Code exists only per *protocol* (``llmconnect.protocols``). A model is
written ``provider/model`` and split on the first ``/``; a bare provider name picks its default
model. ``<PROVIDER>_BASE_URL`` overrides a base URL, and any other name ``foo/model`` becomes an
OpenAI-compatible provider as soon as ``FOO_BASE_URL`` is set (key, if any, in ``FOO_API_KEY``).

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
    "resolve_provider",
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
    label: str = ""


PROVIDERS: Mapping[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            "echo", "echo", "", (), "echo", needs_key=False, label="Offline echo (no network)"
        ),
        ProviderSpec(
            "openai", "openai", "https://api.openai.com/v1", ("OPENAI_API_KEY",), "gpt-4o-mini"
        ),
        ProviderSpec(
            "groq",
            "openai",
            "https://api.groq.com/openai/v1",
            ("GROQ_API_KEY",),
            "llama-3.3-70b-versatile",
        ),
        ProviderSpec(
            "aimlapi",
            "openai",
            "https://api.aimlapi.com/v1",
            ("AIMLAPI_API", "AIMLAPI_API_KEY"),
            "gpt-4o-mini",
        ),
        ProviderSpec(
            "openrouter",
            "openai",
            "https://openrouter.ai/api/v1",
            ("OPENROUTER_API_KEY",),
            "meta-llama/llama-3.1-8b-instruct",
        ),
        ProviderSpec(
            "mistral",
            "openai",
            "https://api.mistral.ai/v1",
            ("MISTRAL_API_KEY",),
            "mistral-small-latest",
        ),
        ProviderSpec(
            "deepseek",
            "openai",
            "https://api.deepseek.com/v1",
            ("DEEPSEEK_API_KEY",),
            "deepseek-chat",
        ),
        ProviderSpec(
            "together",
            "openai",
            "https://api.together.xyz/v1",
            ("TOGETHER_API_KEY",),
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        ),
        ProviderSpec(
            "ollama",
            "openai",
            "http://localhost:11434/v1",
            ("OLLAMA_API_KEY",),
            "llama3.2",
            needs_key=False,
        ),
        ProviderSpec(
            "lmstudio",
            "openai",
            "http://localhost:1234/v1",
            ("LMSTUDIO_API_KEY",),
            "local-model",
            needs_key=False,
        ),
        ProviderSpec(
            "anthropic",
            "anthropic",
            "https://api.anthropic.com",
            ("ANTHROPIC_API_KEY",),
            "claude-sonnet-4-5",
        ),
        ProviderSpec(
            "gemini",
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta",
            ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
            "gemini-2.5-flash",
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
    """A spec plus what the environment says about it (base URL override, key presence)."""

    spec: ProviderSpec
    base_url: str
    key_var: str | None  # the variable the key was read from, or the one to set
    has_key: bool

    @property
    def configured(self) -> bool:
        return self.has_key or not self.spec.needs_key


def base_url_variable(provider: str) -> str:
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


def parse_model(
    model: str, provider: str | None = None, env: Mapping[str, str] | None = None
) -> ModelRef:
    """Split ``provider/model`` on the first ``/``; a bare provider name picks its default model."""
    model = (model or "").strip()
    if provider:
        spec = get_spec(provider, env)
        return ModelRef(spec.name, validate_model_id(model or spec.default_model))
    if not model:
        raise ConfigurationError(
            "No model given: write it as provider/model, e.g. groq/llama-3.3-70b-versatile.",
            user_message="No model given: write it as provider/model.",
        )
    head, _, tail = model.partition("/")
    spec = get_spec(head, env)
    tail = tail.strip()
    if not tail:
        if not spec.default_model:
            raise ConfigurationError(
                f"Provider {spec.name!r} has no default model: write {spec.name}/<model>.",
                provider=spec.name,
            )
        tail = spec.default_model
    return ModelRef(spec.name, validate_model_id(tail))


def resolve_provider(spec: ProviderSpec, env: Mapping[str, str] | None = None) -> ResolvedProvider:
    env = os.environ if env is None else env
    base_url = (env.get(base_url_variable(spec.name)) or spec.base_url).rstrip("/")
    for var in spec.key_vars:
        if env.get(var):
            return ResolvedProvider(spec, base_url, var, True)
    return ResolvedProvider(spec, base_url, spec.key_vars[0] if spec.key_vars else None, False)
