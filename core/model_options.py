"""Per-model request options (``MODEL_OPTIONS``): which patterns apply to a model, and how.

``MODEL_OPTIONS`` is a JSON object from a model pattern to an object of request options::

    {"*": {"temperature": 0.7}, "groq/*": {"temperature": 0.3},
     "openai/o3": {"reasoning_effort": "high", "temperature": null}}

A pattern is ``provider/model`` (exactly that model), a prefix ending in ``*`` (``groq/*``,
``openrouter/meta-llama/*``), a bare provider name (``groq``: the same as ``groq/*``) or ``*``
(every model). Every pattern that matches a model applies, least specific first, so a more specific
one wins option by option: ``*`` < shorter prefix < longer prefix < the exact name (prefixes compare
by their length without the ``*``). A ``null`` value removes an option a less specific pattern set
(``"temperature": null`` for a model that refuses it). The engine's own options (``options=``)
come first, under every pattern.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any

from llmconnect import APIClientFactory

__all__ = ["options_for", "parse_model_options"]

#: ``APIClientFactory.create``'s own parameters (model, messages, timeouts, ...): not options.
_RESERVED = frozenset(inspect.signature(APIClientFactory.create).parameters) - {"options"}


def parse_model_options(value: object) -> dict[str, dict[str, Any]]:
    """``MODEL_OPTIONS`` (JSON text, or an already parsed mapping) checked and normalised (a bare
    provider ``groq`` becomes ``groq/*``); :class:`ValueError` with one line saying what is wrong."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"not valid JSON ({exc.msg} at character {exc.pos}); expected an object such as "
                '{"groq/*": {"temperature": 0.3}}'
            ) from None
    if not isinstance(value, Mapping):
        raise ValueError(
            'expected a JSON object from model pattern to options, e.g. {"groq/*": '
            '{"temperature": 0.3}}'
        )
    table: dict[str, dict[str, Any]] = {}
    for pattern, options in value.items():
        name = str(pattern).strip()
        if not name or any(c.isspace() for c in name) or "*" in name[:-1]:
            raise ValueError(
                f"{pattern!r} is not a model pattern (provider/model, a prefix ending in *, "
                "a provider name, or *)"
            )
        if not isinstance(options, Mapping):
            raise ValueError(f"the options of {name!r} must be a JSON object, got {options!r}")
        if "/" not in name and name != "*":
            name = name.rstrip("*") + "/*"
        reserved = sorted(str(k) for k in options if k in _RESERVED)
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} in {name!r} is not a request option (it is set by "
                "its own setting)"
            )
        table[name] = {str(k): v for k, v in options.items()}
    return table


def _specificity(pattern: str, model: str) -> int | None:
    """How specific ``pattern`` is for ``model`` (higher wins), ``None`` when it does not match."""
    if pattern == "*":
        return 0
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return 1 + len(prefix) if model.startswith(prefix) else None
    return 1_000_000 if model == pattern else None


def options_for(
    model: str,
    table: Mapping[str, Mapping[str, Any]],
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The request options of ``model`` (``provider/model``): ``base`` (the engine's own), then
    every matching ``MODEL_OPTIONS`` pattern's, least specific first, a ``null`` removing the
    option."""
    matching = []
    for pattern, options in table.items():
        rank = _specificity(pattern, model)
        if rank is not None:
            matching.append((rank, options))
    merged: dict[str, Any] = dict(base or {})
    for _, options in sorted(matching, key=lambda item: item[0]):
        for key, value in options.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
    return merged
