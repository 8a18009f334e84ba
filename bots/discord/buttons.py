"""A reply's buttons on Discord (:mod:`core.controls`): message components that survive a
restart.

Each :class:`~core.controls.Control` is a classic button in one action row under the message's
content (not Components V2, which would cap the text at 4,000 characters of text displays and
drop ``content``). Its ``custom_id`` is the control's action id; :class:`ControlButton` is a
discord.py ``DynamicItem`` whose template is :data:`core.controls.ACTION_ID_PATTERN`, registered
once at start-up (``client.add_dynamic_items``): a click on any message the bot ever posted, before
or after a restart, reaches :meth:`DiscordBot.on_control <bots.discord.bot.DiscordBot.on_control>`
with no view kept in memory per message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import discord

from core.controls import ACTION_ID_PATTERN, Control, Style, parse_action_id

__all__ = ["STYLES", "ControlButton", "components_of"]

STYLES: dict[Style, discord.ButtonStyle] = {
    "primary": discord.ButtonStyle.primary,
    "secondary": discord.ButtonStyle.secondary,
    "danger": discord.ButtonStyle.danger,
}


class ControlButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=ACTION_ID_PATTERN):
    """One reply button; its click goes to the bot's ``on_control``."""

    def __init__(self, control: Control) -> None:
        super().__init__(
            discord.ui.Button(
                style=STYLES[control.style],
                label=control.label or None,
                emoji=control.emoji,
                custom_id=control.action_id,
            )
        )
        self.control = control

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ControlButton:
        pressed = parse_action_id(match.string)
        assert pressed is not None  # the template matched
        button = item if isinstance(item, discord.ui.Button) else None
        label = button.label if button is not None else ""
        emoji = str(button.emoji) if button is not None and button.emoji else ""
        return cls(Control(pressed.action, match.string, label or "", emoji, "secondary"))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        on_control = getattr(interaction.client, "on_control", None)
        if on_control is not None:
            await on_control(interaction, self.control.action_id)


#: Buttons per action row, and rows per message (Discord's limits).
ROW_BUTTONS = 5
ROWS = 5


def components_of(controls: Sequence[Control]) -> list[dict[str, Any]]:
    """The ``components`` field of a message carrying ``controls`` (``[]``: no buttons): rows
    of five (Stop with the Approve/Deny of several waiting tool calls takes more than one)."""
    buttons = [ControlButton(control).to_component_dict() for control in controls]
    rows = [buttons[i : i + ROW_BUTTONS] for i in range(0, len(buttons), ROW_BUTTONS)]
    return [{"type": 1, "components": row} for row in rows[:ROWS]]
