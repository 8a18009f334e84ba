"""What is configured and which models a provider offers (``llmconnect models``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import httpx

from .errors import LLMError
from .providers import PROVIDERS, ResolvedProvider, base_url_variable, resolve
from .transport import Timeouts, error_from_response, shared_http_client, translate_transport_errors

__all__ = ["list_models", "provider_status"]


def provider_status(env: Mapping[str, str] | None = None) -> list[ResolvedProvider]:
    """Every known provider plus custom ``FOO_BASE_URL`` ones, with whether each is configured."""
    env = os.environ if env is None else env
    names = list(PROVIDERS)
    for var in env:
        if var.endswith("_BASE_URL"):
            name = var[: -len("_BASE_URL")].lower().replace("_", "-")
            if name not in PROVIDERS and base_url_variable(name) == var:
                names.append(name)
    return [resolve(name, env) for name in names]


async def list_models(
    provider: str,
    env: Mapping[str, str] | None = None,
    *,
    http_client: httpx.AsyncClient | None = None,
    timeouts: Timeouts | None = None,
) -> list[str]:
    """Model ids a provider reports. OpenAI-compatible providers are asked (``GET /models``);
    others answer with their default model."""
    env = os.environ if env is None else env
    resolved = resolve("", env, provider=provider)
    spec = resolved.spec
    if spec.protocol != "openai":
        return [spec.default_model]
    key = env.get(resolved.key_var or "") if resolved.has_key else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = http_client or shared_http_client()
    timeout = (timeouts or Timeouts(idle=15.0)).to_httpx()
    with translate_transport_errors(spec.name, started=False):
        response = await http.get(f"{resolved.base_url}/models", headers=headers, timeout=timeout)
    if response.status_code >= 400:
        raise await error_from_response(spec.name, response, (key,) if key else ())
    try:
        data = response.json().get("data") or []
    except (ValueError, AttributeError, json.JSONDecodeError):
        raise LLMError(f"{spec.name}: unreadable model list", provider=spec.name) from None
    return sorted(str(item.get("id")) for item in data if isinstance(item, dict) and item.get("id"))
