"""``llmconnect doctor``: what is configured, what is missing, which tokens look wrong.

Why: a newcomer's first failure is usually configuration (a key pasted with quotes, a Slack user
token where the bot token belongs, ``LLMCONNECT_MODEL`` naming a provider without a key). Each
finding is one line with the variable to change. With ``--online`` each provider in use is asked
whether it answers (an OpenAI-compatible one lists its models; Anthropic and Gemini get a
one-token request), Discord and Slack whether they accept their token, and each MCP server
whether it starts and lists its tools. No secret is ever printed, not even in part.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO, cast

import httpx
from pydantic import SecretStr

from core.catalogue import Catalogue, ProviderModels
from core.clock import MonotonicClock
from core.mcp import McpManager, ServerStatus
from core.settings import Settings, SettingsError
from llmconnect import (
    APIClientFactory,
    ConfigurationError,
    LLMError,
    ResolvedProvider,
    Timeouts,
    aclose_shared_clients,
    base_url_variable,
    parse_model,
    provider_status,
)

from .discord.settings import DiscordSettings
from .registry import settings_classes
from .run import load_all
from .slack.settings import SlackSettings
from .web.settings import WebSettings, is_loopback

__all__ = ["Finding", "Report", "check_key", "doctor"]

Level = Literal["ok", "off", "problem"]
_MARK: dict[Level, str] = {"ok": "✓", "off": "·", "problem": "✗"}

_PLACEHOLDER = re.compile(r"^(<.*>|x+|\.\.\.|changeme|your[-_ ].*|todo|none|null)$", re.I)
_DISCORD_TOKEN = re.compile(r"^[A-Za-z0-9_-]{17,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}$")
_SIGNING_SECRET = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Finding:
    level: Level
    subject: str
    text: str


@dataclass
class Report:
    """Findings by section, in the order they are printed."""

    sections: dict[str, list[Finding]] = field(default_factory=dict)

    def add(self, section: str, level: Level, subject: str, text: str) -> None:
        self.sections.setdefault(section, []).append(Finding(level, subject, text))

    @property
    def problems(self) -> int:
        return sum(f.level == "problem" for fs in self.sections.values() for f in fs)

    def write(self, out: TextIO) -> None:
        out.write("LLMConnect doctor\n")
        for title, findings in self.sections.items():
            out.write(f"\n{title}\n")
            width = max(len(f.subject) for f in findings) + 2
            for f in findings:
                out.write(f"  {_MARK[f.level]} {f.subject:<{width}}{f.text}\n")
        n = self.problems
        out.write(
            f"\n{n} problem{'s' if n != 1 else ''} found.\n" if n else "\nNo problems found.\n"
        )


def check_key(
    value: str, *, prefix: str | tuple[str, ...] | None = None, hint: str = ""
) -> str | None:
    """Why ``value`` does not look like a usable key, or ``None``. Never quotes the value.
    ``prefix``: how a good one begins (any of several)."""
    if value != value.strip():
        return "has spaces or a line break around it"
    if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'":
        return "is wrapped in quotes (write the bare value in .env)"
    if any(c.isspace() for c in value):
        return "contains spaces"
    if _PLACEHOLDER.match(value):
        return "is still a placeholder"
    if prefix and not value.startswith(prefix):
        return f"does not look right: {hint}"
    return None


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


# --------------------------------------------------------------------------- sections


@dataclass
class _Loaded:
    """Every settings class, read: the core's and the front ends' (doctor imports no platform
    library to read them)."""

    core: Settings
    web: WebSettings
    discord: DiscordSettings
    slack: SlackSettings


def _check_settings(report: Report, env: Mapping[str, str]) -> _Loaded | None:
    section = "Configuration"
    dotenv = Path(".env")
    if dotenv.is_file():
        report.add(section, "ok", ".env", f"read from {dotenv.resolve()}")
    else:
        report.add(section, "off", ".env", "none here (optional: copy .env.example to .env)")
    try:
        loaded = {type(s): s for s in load_all(settings_classes())}
    except SettingsError as exc:
        for line in exc.problems:
            var, _, why = line.strip().partition(": ")
            report.add(section, "problem", var, why)
        return None
    report.add(section, "ok", "settings", "every value is valid")
    return _Loaded(
        core=cast(Settings, loaded[Settings]),
        web=cast(WebSettings, loaded[WebSettings]),
        discord=cast(DiscordSettings, loaded[DiscordSettings]),
        slack=cast(SlackSettings, loaded[SlackSettings]),
    )


def _in_use(settings: Settings | None, env: Mapping[str, str]) -> set[str]:
    """Providers the configuration names: the default model's and the allowed list's."""
    names: set[str] = set()
    if settings is None:
        return names
    for entry in [settings.llmconnect_model, *settings.llmconnect_allowed_models]:
        try:
            names.add(parse_model(entry.rstrip("/*") or entry, env=env).provider)
        except (ConfigurationError, ValueError):
            names.add(entry.partition("/")[0].strip().lower())
    return names


def _check_model(report: Report, settings: Settings, env: Mapping[str, str]) -> None:
    section = "Model"
    try:
        ref = parse_model(settings.llmconnect_model, env=env)
    except ConfigurationError as exc:
        report.add(section, "problem", "LLMCONNECT_MODEL", exc.user_message)
        return
    status = {r.spec.name: r for r in provider_status(env)}.get(ref.provider)
    if ref.provider == "echo":
        report.add(
            section,
            "ok",
            "default",
            f"{ref} (offline: it repeats you; set a provider key and LLMCONNECT_MODEL for a "
            "real model)",
        )
    elif status is not None and not status.configured:
        report.add(section, "problem", "default", f"{ref}, but {status.key_var} is not set")
    else:
        report.add(section, "ok", "default", str(ref))
    for entry in settings.llmconnect_allowed_models:
        provider = entry.partition("/")[0].strip().lower()
        known = {r.spec.name: r for r in provider_status(env)}
        if provider not in known:
            report.add(
                section,
                "problem",
                "allowed",
                f"{entry}: unknown provider (or set {base_url_variable(provider)})",
            )
        elif not known[provider].configured:
            report.add(
                section, "problem", "allowed", f"{entry}: {known[provider].key_var} is not set"
            )


def _check_providers(
    report: Report, env: Mapping[str, str], in_use: set[str]
) -> list[ResolvedProvider]:
    """The provider table; returns the providers worth asking with ``--online``."""
    section = "Providers"
    to_ask = []
    for r in provider_status(env):
        name = r.spec.name
        overridden = r.base_url_overridden
        if name == "echo":
            report.add(section, "ok", name, "offline, no key needed")
            continue
        if r.has_key and r.key_var:
            # The provider's own key format; a proxy set by <PROVIDER>_BASE_URL may differ.
            prefixes = () if overridden else r.spec.key_prefixes
            hint = f"{r.spec.label or name} keys start with {' or '.join(prefixes)}"
            why = check_key(env[r.key_var], prefix=prefixes or None, hint=hint)
            if why:
                report.add(section, "problem", name, f"{r.key_var} {why}")
            else:
                report.add(section, "ok", name, f"{r.key_var} is set")
            to_ask.append(r)
        elif not r.spec.needs_key:
            where = f"{base_url_variable(name)}={r.base_url}" if overridden else r.base_url
            used = overridden or name in in_use
            report.add(section, "ok" if used else "off", name, f"local server, no key ({where})")
            if used:
                to_ask.append(r)
        elif name in in_use:
            report.add(section, "problem", name, f"used by the configuration; set {r.key_var}")
        else:
            report.add(section, "off", name, f"not configured (set {r.key_var})")
    return to_ask


def _check_frontends(report: Report, loaded: _Loaded) -> None:
    section = "Front ends"
    s = loaded.web
    url = f"http://{s.web_host}:{s.web_port}"
    token = _secret(s.web_auth_token)
    if token:
        why = check_key(token)
        if why:
            report.add(section, "problem", "web chat", f"WEB_AUTH_TOKEN {why}")
        elif len(token) < 16:
            report.add(
                section, "problem", "web chat", "WEB_AUTH_TOKEN is short: use 16+ characters"
            )
        else:
            report.add(section, "ok", "web chat", f"{url}, WEB_AUTH_TOKEN required")
    elif is_loopback(s.web_host):
        report.add(section, "ok", "web chat", f"{url} (this machine only; no token needed)")
    else:
        report.add(
            section,
            "problem",
            "web chat",
            f"WEB_HOST={s.web_host} is reachable from other machines: set WEB_AUTH_TOKEN",
        )

    discord = _secret(loaded.discord.discord_token)
    if discord is None:
        report.add(section, "off", "Discord", "not configured (set DISCORD_TOKEN)")
    elif discord.startswith("Bot "):
        report.add(section, "problem", "Discord", "DISCORD_TOKEN: remove the 'Bot ' prefix")
    elif (why := check_key(discord)) or not _DISCORD_TOKEN.match(discord):
        why = why or "does not look like a bot token (three parts separated by dots)"
        report.add(section, "problem", "Discord", f"DISCORD_TOKEN {why}")
    else:
        report.add(section, "ok", "Discord", "DISCORD_TOKEN is set")

    slack = loaded.slack
    bot, app, secret = (
        _secret(slack.slack_bot_token),
        _secret(slack.slack_app_token),
        _secret(slack.slack_signing_secret),
    )
    if bot is None and app is None and secret is None:
        report.add(
            section,
            "off",
            "Slack",
            "not configured (set SLACK_BOT_TOKEN and SLACK_APP_TOKEN, or SLACK_SIGNING_SECRET)",
        )
        return
    problems = []
    if bot is None:
        problems.append("SLACK_BOT_TOKEN is not set")
    elif bot.startswith("xapp-"):
        problems.append("SLACK_BOT_TOKEN holds the app-level token (xapp-); use the xoxb- one")
    elif bot.startswith("xoxp-"):
        problems.append("SLACK_BOT_TOKEN is a user token (xoxp-); use the bot token (xoxb-)")
    elif why := check_key(bot, prefix="xoxb-", hint="bot tokens start with xoxb-"):
        problems.append(f"SLACK_BOT_TOKEN {why}")
    if app is not None and (
        why := check_key(app, prefix="xapp-", hint="app-level tokens start with xapp-")
    ):
        problems.append(f"SLACK_APP_TOKEN {why}")
    if secret is not None and (
        why := check_key(secret)
        or (None if _SIGNING_SECRET.match(secret) else "is not 32 hexadecimal characters")
    ):
        problems.append(f"SLACK_SIGNING_SECRET {why}")
    if bot is not None and app is None and secret is None:
        problems.append("set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP)")
    for problem in problems:
        report.add(section, "problem", "Slack", problem)
    if not problems and slack.configured:
        mode = "Socket Mode" if app is not None else "HTTP (events at /slack/events)"
        report.add(section, "ok", "Slack", f"{mode}, tokens look right")


# --------------------------------------------------------------------------- online


async def _ask_provider(
    r: ResolvedProvider,
    env: Mapping[str, str],
    http: httpx.AsyncClient,
    default: str | None,
    listed: ProviderModels,
) -> tuple[Level, str]:
    timeouts = Timeouts(connect=5.0, idle=15.0)
    try:
        if r.spec.protocol == "openai":
            # Its list was just asked for (the catalogue's refresh): no second request.
            if listed.error is not None:
                return "problem", listed.error
            names = [name.split("/", 1)[1] for name in listed.models]
            text = f"answers ({len(names)} models)"
            if default and default.startswith(f"{r.spec.name}/"):
                model = default.split("/", 1)[1]
                if names and model not in names:
                    return "problem", f"answers, but does not list {model} (LLMCONNECT_MODEL)"
            return "ok", text
        model = default if default and default.startswith(f"{r.spec.name}/") else r.spec.name
        client = APIClientFactory.create(
            model=model, env=env, http_client=http, timeouts=timeouts, max_tokens=1
        )
        await client.chat("ping")
        return "ok", f"answers ({client.model})"
    except LLMError as exc:
        return "problem", exc.user_message


def _report_list(report: Report, listed: ProviderModels, default_model: str) -> None:
    """One line of the "Model lists" section: how many models the provider listed, or why its
    list failed (the error's user message: never a key) and what is offered instead."""
    name = listed.provider
    if listed.error is None:
        count = len(listed.models)
        report.add("Model lists", "ok", name, f"{count} model{'s' if count != 1 else ''} listed")
        return
    instead = f"{name}/{default_model}" if default_model else "nothing"
    report.add(
        "Model lists",
        "problem",
        name,
        f"the list failed: {listed.error} (/model, /models and the web offer {instead} only)",
    )


async def _ask_platforms(report: Report, loaded: _Loaded, http: httpx.AsyncClient) -> None:
    section = "Online"
    discord = _secret(loaded.discord.discord_token)
    if discord:
        try:
            response = await http.get(
                f"{loaded.discord.discord_api_url}/users/@me",
                headers={"Authorization": f"Bot {discord.strip()}"},
            )
            if response.status_code == 200:
                name = response.json().get("username", "?")
                report.add(section, "ok", "Discord", f"token accepted (bot {name})")
            else:
                report.add(
                    section,
                    "problem",
                    "Discord",
                    f"rejected DISCORD_TOKEN ({response.status_code})",
                )
        except httpx.HTTPError as exc:
            report.add(section, "problem", "Discord", f"unreachable ({type(exc).__name__})")
    bot = _secret(loaded.slack.slack_bot_token)
    if bot:
        url = loaded.slack.slack_api_url.rstrip("/") + "/auth.test"
        try:
            response = await http.post(url, headers={"Authorization": f"Bearer {bot.strip()}"})
            data = response.json()
            if data.get("ok"):
                report.add(section, "ok", "Slack", f"token accepted (team {data.get('team', '?')})")
            else:
                report.add(section, "problem", "Slack", f"auth.test: {data.get('error', '?')}")
        except (httpx.HTTPError, ValueError) as exc:
            report.add(section, "problem", "Slack", f"unreachable ({type(exc).__name__})")


# --------------------------------------------------------------------------- entry


def _check_tools(report: Report, settings: Settings) -> None:
    """``MCP_SERVERS``: each server's kind and where it is (never a header, an env value or a
    URL's credentials), and whether conversations use it by default."""
    servers = settings.mcp_server_configs()
    if not servers:
        report.add("Tools", "off", "MCP_SERVERS", "no MCP server (the model calls no tools)")
        return
    defaults = set(settings.mcp_default_servers)
    for name, config in servers.items():
        used = "on by default" if name in defaults else "off until /tools enable"
        approval = ", each call approved by the asker" if config.confirm else ""
        report.add("Tools", "ok", name, f"{config.kind} {config.where}, {used}{approval}")


async def _ask_tool_servers(report: Report, settings: Settings) -> None:
    """Start every MCP server as the bot would and say whether it listed its tools."""
    servers = settings.mcp_server_configs()
    if not servers:
        return
    manager = McpManager(servers, connect_timeout=15.0)
    manager.start()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(manager.wait_ready(), 20.0)
        for name, state in manager.states.items():
            if state.status is ServerStatus.READY:
                tools = ", ".join(t.name for t in state.tools[:10])
                more = f" and {len(state.tools) - 10} more" if len(state.tools) > 10 else ""
                report.add(
                    "Online", "ok", f"mcp {name}", f"{len(state.tools)} tools: {tools}{more}"
                )
            else:
                why = state.problem or "no answer in 20 s"
                report.add("Online", "problem", f"mcp {name}", f"does not start: {why}")
    finally:
        await manager.aclose()


async def diagnose(
    env: Mapping[str, str] | None = None,
    *,
    online: bool = False,
    http_client: httpx.AsyncClient | None = None,
) -> Report:
    """Every check, as a :class:`Report` (``env``: the provider variables; default the process's)."""
    env = os.environ if env is None else env
    report = Report()
    loaded = _check_settings(report, env)
    settings = loaded.core if loaded is not None else None
    if settings is not None:
        _check_model(report, settings, env)
    to_ask = _check_providers(report, env, _in_use(settings, env))
    if loaded is not None:
        _check_frontends(report, loaded)
    if settings is not None:
        _check_tools(report, settings)
    if not online:
        return report
    http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0))
    try:
        default = None
        if settings is not None:
            with contextlib.suppress(ConfigurationError):
                default = str(parse_model(settings.llmconnect_model, env=env))
        if not to_ask:
            report.add("Online", "off", "providers", "none to ask (only the offline echo)")
        # The model lists, as the running bot's catalogue asks for them (core.catalogue).
        catalogue = Catalogue(env, clock=MonotonicClock(), ttl=0, http_client=http)
        lists = {r.spec.name: await catalogue.refresh(r.spec.name) for r in to_ask}
        for r in to_ask:
            level, text = await _ask_provider(r, env, http, default, lists[r.spec.name])
            report.add("Online", level, r.spec.name, text)
        for r in to_ask:
            _report_list(report, lists[r.spec.name], r.spec.default_model)
        if loaded is not None:
            await _ask_platforms(report, loaded, http)
        if settings is not None:
            await _ask_tool_servers(report, settings)
    finally:
        if http_client is None:
            await http.aclose()
        await aclose_shared_clients()
    return report


async def doctor(
    env: Mapping[str, str] | None = None,
    *,
    online: bool = False,
    out: TextIO | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> int:
    """Print the report; 0 when nothing is wrong, 1 otherwise."""
    report = await diagnose(env, online=online, http_client=http_client)
    report.write(out or sys.stdout)
    return 1 if report.problems else 0
