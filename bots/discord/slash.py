"""Slash commands: ``/ask``, ``/model`` (with autocomplete), ``/models``, ``/reset``, ``/system``,
``/stop``, ``/status``, ``/tools``, ``/help`` — each maps onto the core grammar (``core.commands``).

No ``from __future__ import annotations`` here: discord.py reads the parameter annotations at
registration to build the command options.
"""

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from core.commands import Command

if TYPE_CHECKING:
    from .bot import DiscordBot

__all__ = ["register_commands"]

Interaction = discord.Interaction[Any]


def register_commands(bot: "DiscordBot") -> None:
    """Add the bot's slash commands to ``bot.tree``."""
    tree = bot.tree

    @tree.command(name="ask", description="Ask the model; the answer streams in here.")
    @app_commands.describe(prompt="Your question or request")
    async def ask(interaction: Interaction, prompt: str) -> None:
        await bot.ask(interaction, prompt)

    @tree.command(name="model", description="Show or switch this conversation's model.")
    @app_commands.describe(name="provider/model, e.g. groq/llama-3.3-70b-versatile")
    async def model(interaction: Interaction, name: str | None = None) -> None:
        await bot.run_command(interaction, Command("model", name or ""))

    @model.autocomplete("name")
    async def model_names(interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        return bot.model_choices(current)

    @tree.command(name="models", description="List the models you can switch to.")
    async def models(interaction: Interaction) -> None:
        await bot.run_command(interaction, Command("models"))

    @tree.command(name="reset", description="Forget this conversation's history.")
    async def reset(interaction: Interaction) -> None:
        await bot.run_command(interaction, Command("reset"))

    @tree.command(
        name="system", description="Show, set or clear this conversation's system prompt."
    )
    @app_commands.describe(text="The new system prompt, or 'clear'")
    async def system(interaction: Interaction, text: str | None = None) -> None:
        await bot.run_command(interaction, Command("system", text or ""))

    @tree.command(name="stop", description="Stop the reply that is being written here.")
    async def stop(interaction: Interaction) -> None:
        await bot.run_command(interaction, Command("stop"))

    @tree.command(
        name="status",
        description="Model, system prompt, history and tokens used in this conversation.",
    )
    async def status(interaction: Interaction) -> None:
        await bot.run_command(interaction, Command("status"))

    @tree.command(
        name="tools",
        description="List the tool servers; admins enable or disable one for this conversation.",
    )
    @app_commands.describe(action="enable or disable (empty: list)", server="A tool server's name")
    @app_commands.choices(
        action=[
            app_commands.Choice(name="enable", value="enable"),
            app_commands.Choice(name="disable", value="disable"),
        ]
    )
    async def tools(
        interaction: Interaction, action: str | None = None, server: str | None = None
    ) -> None:
        arg = " ".join(part for part in (action, server) if part)
        await bot.run_command(interaction, Command("tools", arg))

    @tools.autocomplete("server")
    async def server_names(
        interaction: Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = [n for n in bot.engine.mcp.names if current.lower() in n.lower()]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]

    @tree.command(name="help", description="How to use the bot.")
    async def help_(interaction: Interaction) -> None:
        await bot.run_command(interaction, Command("help"))
