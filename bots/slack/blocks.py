"""A reply's buttons on Slack: Block Kit for the text and its :mod:`core.controls`.

Why a module: a Slack message that carries buttons must carry its text in blocks too (a message
with ``blocks`` shows them, its ``text`` is only the notification's), and a section block holds at
most :data:`SECTION_MAX` characters. :func:`message_blocks` cuts the already-converted mrkdwn into
sections at line breaks (never inside an ``&amp;``-style entity; a code block cut in two is closed
and reopened) and adds one ``actions`` block with a button per control, its ``action_id`` the
control's (``llmc:<action>:<reply>:<conversation>``, at most :data:`ACTION_ID_MAX`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.controls import Control

__all__ = ["ACTIONS_BLOCK_ID", "ACTION_ID_MAX", "SECTION_MAX", "actions_block", "message_blocks"]

#: Characters of a section block's text (Slack's limit).
SECTION_MAX = 3_000
#: Characters of a button's ``action_id`` (Slack's limit).
ACTION_ID_MAX = 255
#: The ``block_id`` of the buttons (a click's payload names it).
ACTIONS_BLOCK_ID = "llmc_controls"
_FENCE = "```"


def actions_block(controls: Sequence[Control]) -> dict[str, Any]:
    """One ``actions`` block: a button per control (Stop drawn as ``danger``)."""
    elements: list[dict[str, Any]] = []
    for control in controls:
        label = f"{control.emoji} {control.label}".strip()
        button: dict[str, Any] = {
            "type": "button",
            "action_id": control.action_id[:ACTION_ID_MAX],
            "text": {"type": "plain_text", "text": label, "emoji": True},
            "value": str(control.action),
        }
        if control.style in ("primary", "danger"):
            button["style"] = control.style
        elements.append(button)
    return {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": elements}


def message_blocks(mrkdwn: str, controls: Sequence[Control]) -> list[dict[str, Any]]:
    """The blocks of a message showing ``mrkdwn`` (already escaped) with ``controls`` under it
    (none: the text alone)."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": part}} for part in _sections(mrkdwn)
    ]
    if controls:
        blocks.append(actions_block(controls))
    return blocks


def _sections(text: str) -> list[str]:
    """``text`` in pieces of at most :data:`SECTION_MAX` characters, cut at a line break when
    there is one (else a space, else anywhere but inside an entity); a code block open at a cut
    is closed there and reopened in the next piece."""
    parts: list[str] = []
    reopen = ""
    rest = text
    room = SECTION_MAX - 2 * (len(_FENCE) + 1)  # a closing and a reopening fence fit
    while len(reopen) + len(rest) > SECTION_MAX:
        window = rest[:room]
        cut = window.rfind("\n")
        if cut <= 0:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = len(window)
            amp = window.rfind("&")
            if amp > 0 and ";" not in window[amp:]:
                cut = amp  # never cut ``&amp;`` in two
        piece = reopen + rest[:cut]
        rest = rest[cut:].lstrip("\n")
        if piece.count(_FENCE) % 2:
            parts.append(piece + "\n" + _FENCE)
            reopen = _FENCE + "\n"
        else:
            parts.append(piece)
            reopen = ""
    if rest.strip() or not parts:
        parts.append(reopen + rest)
    # Slack refuses a section without text: a blank one shows a space.
    return [p if p.strip() else " " for p in parts]
