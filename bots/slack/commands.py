"""Slack's slash commands, mapped onto the core command grammar.

Why this is all there is: the grammar, its answers and the admin rule live in ``core.commands``;
Slack only adds its command names (one per core command, ``/llm`` for help, ``/ask`` to prompt)
and the ephemeral/in-channel choice the core result already carries.
"""

from __future__ import annotations

from core.commands import COMMANDS, Command

__all__ = ["ASK", "SLASH_COMMANDS", "SLASH_HELP", "slash_command"]

ASK = "/ask"

#: Every slash command the app registers (and the manifest declares), with its usage hint.
SLASH_COMMANDS: dict[str, tuple[str, str]] = {
    "/ask": (
        "Ask the LLM; the question and the streamed answer appear in the channel",
        "[question]",
    ),
    "/model": ("Show or switch this channel's model", "[provider/model]"),
    "/models": ("List the models you can switch to", "[part of a name]"),
    "/reset": ("Forget this channel's conversation", ""),
    "/system": ("Show, set or clear this channel's system prompt", "[text | clear]"),
    "/stop": ("Stop the answer being written here", ""),
    "/tools": ("List the tool servers; admins enable or disable one here", "[enable|disable NAME]"),
    "/llm": ("Help (and every command, e.g. /llm status)", "[command]"),
}

SLASH_HELP = (
    "Slash commands: /ask <question>, /model [name], /models, /reset, /system [text|clear], "
    "/stop, /tools, /llm. In a thread, mention me with the command instead (e.g. @bot model <name>)."
)


def slash_command(name: str, text: str) -> Command:
    """The core command for ``/name text`` (everything but ``/ask``)."""
    text = text.strip()
    name = name.lstrip("/").lower()
    if name == "llm":  # "/llm status", "/llm model x": the text is a command, never a prompt
        word, _, rest = text.partition(" ")
        word = word.rstrip(":").lower()
        return Command(word, rest.strip()) if word in COMMANDS else Command("help")
    if name in ("model", "models", "system", "tools"):
        return Command(name, text)
    return Command(name)
