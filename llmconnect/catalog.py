"""What is configured and which models a provider offers (``llmconnect models``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import httpx

from .errors import ConfigurationError, LLMError
from .protocols.anthropic import ANTHROPIC_VERSION
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


#: Pages of a model list followed at most (a provider that always says "more" cannot loop us).
MAX_PAGES = 50


async def list_models(
    provider: str,
    env: Mapping[str, str] | None = None,
    *,
    http_client: httpx.AsyncClient | None = None,
    timeouts: Timeouts | None = None,
) -> list[str]:
    """Model ids a provider reports, sorted: OpenAI-compatible ``GET /models``, Anthropic
    ``GET /v1/models`` (every page), Gemini ``GET /v1beta/models`` (every page, only models that
    can ``generateContent``, without the ``models/`` prefix); ``echo`` answers its default.

    :class:`ConfigurationError` when the provider needs a key that is not set (nothing is sent);
    any HTTP or network failure is the :class:`LLMError` a reply would raise, never with the key.
    """
    env = os.environ if env is None else env
    resolved = resolve("", env, provider=provider)
    spec = resolved.spec
    if spec.protocol == "echo":
        return [spec.default_model]
    key = env.get(resolved.key_var or "") if resolved.has_key else None
    if not key and spec.needs_key:
        raise ConfigurationError(
            f"{spec.name} needs an API key: set {resolved.key_var}.",
            provider=spec.name,
            user_message=f"{spec.name} is not configured (set {resolved.key_var}).",
        )
    lister = _Lister(spec.name, http_client or shared_http_client(), timeouts, key)
    if spec.protocol == "anthropic":
        models = await _anthropic(lister, resolved.base_url, key)
    elif spec.protocol == "gemini":
        models = await _gemini(lister, resolved.base_url, key)
    else:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = await lister.get(f"{resolved.base_url}/models", headers, {})
        models = [str(item["id"]) for item in _items(lister, body, "data") if item.get("id")]
    return sorted(set(models))


class _Lister:
    """GETs of one provider's model list: errors through the one translation path."""

    def __init__(
        self, provider: str, http: httpx.AsyncClient, timeouts: Timeouts | None, key: str | None
    ) -> None:
        self.provider = provider
        self.http = http
        self.timeout = (timeouts or Timeouts(idle=15.0)).to_httpx()
        self.secrets = (key,) if key else ()

    async def get(self, url: str, headers: dict[str, str], params: dict[str, str]) -> Any:
        with translate_transport_errors(self.provider, started=False):
            response = await self.http.get(
                url, headers=headers, params=params, timeout=self.timeout
            )
        if response.status_code >= 400:
            raise await error_from_response(self.provider, response, self.secrets)
        try:
            with translate_transport_errors(self.provider, started=True):
                raw = await response.aread()
            body = json.loads(raw)
        except (ValueError, json.JSONDecodeError):
            raise self.unreadable() from None
        if not isinstance(body, dict):
            raise self.unreadable()
        return body

    def unreadable(self) -> LLMError:
        return LLMError(f"{self.provider}: unreadable model list", provider=self.provider)


def _items(lister: _Lister, body: Any, field: str) -> list[dict[str, Any]]:
    items = body.get(field) or []
    if not isinstance(items, list):
        raise lister.unreadable()
    return [item for item in items if isinstance(item, dict)]


async def _anthropic(lister: _Lister, base_url: str, key: str | None) -> list[str]:
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    if key:
        headers["x-api-key"] = key
    params = {"limit": "1000"}
    models: list[str] = []
    for _ in range(MAX_PAGES):
        body = await lister.get(f"{base_url}/v1/models", headers, params)
        models.extend(str(item["id"]) for item in _items(lister, body, "data") if item.get("id"))
        last = body.get("last_id")
        if not body.get("has_more") or not last:
            break
        params = {"limit": "1000", "after_id": str(last)}
    return models


async def _gemini(lister: _Lister, base_url: str, key: str | None) -> list[str]:
    headers = {"x-goog-api-key": key} if key else {}
    params = {"pageSize": "1000"}
    models: list[str] = []
    for _ in range(MAX_PAGES):
        body = await lister.get(f"{base_url}/models", headers, params)
        for item in _items(lister, body, "models"):
            methods = item.get("supportedGenerationMethods") or ()
            name = str(item.get("name") or "")
            if "generateContent" in methods and name:
                models.append(name.removeprefix("models/"))
        token = body.get("nextPageToken")
        if not token:
            break
        params = {"pageSize": "1000", "pageToken": str(token)}
    return models
