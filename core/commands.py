"""One platform-neutral command grammar, parsed and executed here for every adapter.

``help``, ``model [name]``, ``models [part of a name]``, ``reset``, ``system [text|clear]``, ``stop``, ``status``,
``tools [enable|disable NAME]``.
Slash commands map onto :class:`Command` directly; mention text goes through :func:`parse_command`,
which only takes a message for a command when it has the command's shape, so a prompt such as
"help me write a poem" or "system design tips" stays a prompt (in mention text, ``system`` takes its
text after a colon: ``system: You are terse``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalogue import best_matches
from .clock import wall_time
from .conversations import Conversation, ConversationKey, Status
from .engine import HELP_TEXT, ChatEngine, Refused
from .feedback import feedback_text
from .mcp import ServerStatus
from .policy import Actor
from .usage import status_text

__all__ = ["COMMANDS", "Command", "CommandResult", "execute", "parse_command"]

COMMANDS = ("help", "model", "models", "reset", "system", "stop", "status", "tools")
_NO_ARGS = frozenset({"help", "reset", "stop", "status"})
#: ``models`` lists at most this many (the best matches of its filter, when given).
MODELS_SHOWN = 50
#: ``model`` without a name names at most this many available models.
MODELS_NAMED = 10


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    arg: str = ""


@dataclass(frozen=True, slots=True)
class CommandResult:
    text: str
    #: Settings commands answer only the asker where the platform can (Slack/Discord ephemeral).
    ephemeral: bool = True
    ok: bool = True


def parse_command(text: str) -> Command | None:
    """The command in mention text, or ``None`` when the text is a prompt."""
    stripped = text.strip().lstrip("/!")
    if stripped[:7].lower() == "system:":
        stripped = f"system: {stripped[7:]}"  # "system:be terse" too
    word, _, rest = stripped.partition(" ")
    name = word.rstrip(":").lower()
    rest = rest.strip()
    if name not in COMMANDS:
        return None
    if name in _NO_ARGS:
        return Command(name) if not rest else None
    if name in ("model", "models"):
        return Command(name, rest) if " " not in rest else None
    if name == "tools":
        # bare, or "tools enable NAME" / "tools disable NAME": "tools for data science" is a prompt
        return Command(name, rest) if not rest or _tools_action(rest) is not None else None
    # system: bare, "system clear", or "system: <text>"
    if not rest or rest.lower() == "clear" or word.endswith(":"):
        return Command(name, rest)
    return None


def _tools_action(arg: str) -> tuple[bool, str] | None:
    """``(enable?, server)`` of ``enable NAME`` / ``disable NAME``; ``None`` for anything else."""
    words = arg.split()
    if len(words) == 2 and words[0].lower() in ("enable", "disable"):
        return words[0].lower() == "enable", words[1]
    return None


def _admin_only(engine: ChatEngine, actor: Actor | None) -> CommandResult | None:
    if engine.policy.is_admin(actor):
        return None
    return CommandResult("Only admins can change this here.", ok=False)


async def execute(
    engine: ChatEngine,
    key: ConversationKey,
    command: Command,
    actor: Actor | None = None,
    *,
    parent: ConversationKey | None = None,
) -> CommandResult:
    """Run ``command`` for the conversation ``key``; the plain-text answer to show.

    The access lists apply to commands as to prompts: a blocked user must not reset or stop a
    channel's conversation, and a channel the bot is not enabled in gets no command either. A
    refusal (an unknown model, the store unreachable) is the answer, never an exception.
    """
    refusal = engine.policy.refusal(actor, key.channel, parent.channel if parent else None)
    if refusal:
        return CommandResult(refusal, ok=False)
    try:
        return await _run(engine, key, command, actor, parent)
    except Refused as exc:
        return CommandResult(exc.user_message, ok=False)


async def _run(
    engine: ChatEngine,
    key: ConversationKey,
    command: Command,
    actor: Actor | None,
    parent: ConversationKey | None,
) -> CommandResult:
    conversation = await engine.conversation(key, parent)
    current = engine.model_of(conversation)
    name, arg = command.name, command.arg.strip()
    if name == "help":
        return CommandResult(f"{HELP_TEXT}\nModel here: {current}.")
    if name == "models":
        return CommandResult(_models(engine, current, arg))
    if name == "model":
        if not arg:
            available = engine.available_models()
            named = ", ".join(available[:MODELS_NAMED])
            more = len(available) - MODELS_NAMED
            tail = f" and {more} more (models lists them)" if more > 0 else ""
            return CommandResult(f"Model here: {current}. Available: {named}{tail}.")
        if denied := _admin_only(engine, actor):
            return denied
        full = await engine.set_model(key, arg)
        hint = engine.model_hint(full)
        return CommandResult(
            f"Model for this conversation is now {full}." + (f" Note: {hint}" if hint else "")
        )
    if name == "system":
        if not arg:
            shown = engine.system_of(conversation) or "(none)"
            return CommandResult(f"System prompt: {shown}")
        if denied := _admin_only(engine, actor):
            return denied
        if arg.lower() == "clear":
            await engine.set_system(key, "")
            return CommandResult("System prompt cleared.")
        await engine.set_system(key, arg)
        return CommandResult("System prompt set.")
    if name == "reset":
        await engine.reset(key)
        return CommandResult("History cleared.", ephemeral=False)
    if name == "stop":
        stopped = await engine.stop(key)
        return CommandResult("Stopped." if stopped else "Nothing is running here.")
    if name == "status":
        reply = engine.reply_for(key)
        running = reply is not None and reply.status in (Status.PENDING, Status.STREAMING)
        kept = len(conversation.messages)
        text = (
            f"Model: {current}. System prompt: {engine.system_of(conversation) or '(none)'}. "
            f"History: {kept} messages. {'A reply is streaming.' if running else 'Idle.'}"
        )
        usage = await _usage_status(engine, key, actor, current)
        feedback = await engine.feedback_of(key)
        votes = "" if feedback is None else f"\n{feedback_text(feedback)}"
        return CommandResult(f"{text}\n{usage}{votes}")
    if name == "tools":
        if not arg:
            return CommandResult(_tools(engine, conversation))
        action = _tools_action(arg)
        if action is None:
            return CommandResult("Usage: tools, tools enable NAME, tools disable NAME.", ok=False)
        # Tools reach files and services: only an explicit admin, even with no admin list.
        if not engine.policy.is_explicit_admin(actor):
            return CommandResult("Only admins can change this here.", ok=False)
        enable, server = action
        servers = await engine.set_tool_server(key, server, enable)
        now = ", ".join(servers) or "none"
        verb = "enabled" if enable else "disabled"
        return CommandResult(f"Tools of {server} {verb} here. Tool servers here: {now}.")
    return CommandResult(f"Unknown command {name!r}. {HELP_TEXT}", ok=False)


#: ``tools`` names at most this many tools per server.
TOOLS_NAMED = 20


def _tools(engine: ChatEngine, conversation: Conversation) -> str:
    """The ``tools`` answer: each configured MCP server, whether this conversation may use it,
    whether it is up, and its tools (``server.tool``)."""
    manager = engine.mcp
    if not manager.names:
        return "No tool servers are configured (MCP_SERVERS)."
    enabled = set(engine.tool_servers_of(conversation))
    lines = ["Tool servers (✓ enabled here):"]
    for name, state in manager.states.items():
        mark = "✓" if name in enabled else "•"
        if state.status is ServerStatus.READY:
            status = f"{len(state.tools)} tools"
        elif state.status is ServerStatus.DOWN:
            status = f"down ({state.problem or 'restarting'})"
        else:
            status = str(state.status)
        if state.config.confirm:
            status += ", each call approved by the asker"
        lines.append(f"{mark} {name} — {status}")
        if state.tools:
            shown = ", ".join(t.name for t in state.tools[:TOOLS_NAMED])
            more = len(state.tools) - TOOLS_NAMED
            lines.append(f"   {shown}" + (f" and {more} more" if more > 0 else ""))
    lines.append("Admins: tools enable NAME, tools disable NAME.")
    return "\n".join(lines)


async def _usage_status(
    engine: ChatEngine, key: ConversationKey, actor: Actor | None, model: str
) -> str:
    """The token part of ``status``: counts, cost, price, the caps that apply, and whether the
    provider of the last reply here reported no usage (so it was not counted)."""
    report = await engine.usage_of(key, actor)
    if report is None:
        return "Token usage is not counted by this store."
    last = engine.reply_for(key)
    unreported = None
    if last is not None and last.status is Status.COMPLETE and last.usage is None:
        unreported = last.model.split("/", 1)[0]
    return status_text(
        report, model, engine.settings, wall_time(engine.clock), unreported=unreported
    )


def _models(engine: ChatEngine, current: str, typed: str) -> str:
    """The ``models`` answer: the available models (the best matches of ``typed``, when given),
    at most :data:`MODELS_SHOWN`, the conversation's marked."""
    available = engine.available_models()
    if typed:
        matches = best_matches(typed, available, len(available))
        if not matches:
            return f"No available model matches {typed!r}."
        title = f"Models matching {typed!r}:"
    else:
        matches, title = available, "Available models:"
    lines = [f"{'→' if m == current else '•'} {m}" for m in matches[:MODELS_SHOWN]]
    more = len(matches) - MODELS_SHOWN
    if more > 0:
        lines.append(f"… and {more} more: models <part of a name> narrows the list.")
    return title + "\n" + "\n".join(lines or ["(none configured)"])
