"""bots.slack.blocks: a message's text in section blocks within Slack's limits, and its buttons."""

from __future__ import annotations

from bots.slack.blocks import ACTIONS_BLOCK_ID, SECTION_MAX, actions_block, message_blocks
from core.controls import Action, Control, action_id, streaming_controls
from core.conversations import ConversationKey

KEY = ConversationKey("slack", "C0GENERAL")


def sections(blocks: list[dict[str, object]]) -> list[str]:
    return [b["text"]["text"] for b in blocks if b["type"] == "section"]  # type: ignore[index]


def test_a_short_text_is_one_section_and_the_buttons_one_actions_block() -> None:
    [stop] = streaming_controls(KEY, "abc123")
    blocks = message_blocks("*hi* &amp; bye", [stop])
    assert sections(blocks) == ["*hi* &amp; bye"]
    assert blocks[-1] == actions_block([stop])
    [element] = blocks[-1]["elements"]
    assert blocks[-1]["block_id"] == ACTIONS_BLOCK_ID
    assert element["action_id"] == stop.action_id
    assert element["style"] == "danger"
    assert element["text"] == {"type": "plain_text", "text": "⏹ Stop", "emoji": True}
    assert message_blocks("text", []) == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "text"}}
    ]


def test_a_long_text_is_cut_at_line_breaks_within_the_section_limit() -> None:
    lines = [f"line {n} " + "x" * 90 for n in range(100)]
    text = "\n".join(lines)
    parts = sections(message_blocks(text, []))
    assert len(parts) > 1
    assert all(len(p) <= SECTION_MAX for p in parts)
    assert "\n".join(parts) == text  # every line kept, cut only between lines


def test_a_code_block_cut_in_two_is_closed_and_reopened() -> None:
    code = "```\n" + "\n".join(f"print({n})" for n in range(600)) + "\n```"
    parts = sections(message_blocks("Here:\n" + code + "\nDone.", []))
    assert len(parts) > 1
    assert all(len(p) <= SECTION_MAX for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)  # each section's code is whole
    assert parts[1].startswith("```\n")


def test_no_cut_inside_an_entity_and_never_an_empty_section() -> None:
    text = "a" * (SECTION_MAX - 10) + "&amp;" * 10
    parts = sections(message_blocks(text, []))
    assert all(len(p) <= SECTION_MAX for p in parts)
    assert "".join(parts) == text
    assert all(not p.endswith("&") and not p.endswith("&am") for p in parts)
    assert sections(message_blocks("", [])) == [" "]


def test_an_emoji_only_button_shows_its_emoji_and_secondary_buttons_have_no_style() -> None:
    thumbs = Control(Action.UP, action_id(Action.UP, KEY, "abc"), "", "👍", "secondary")
    [element] = actions_block([thumbs])["elements"]
    assert element["text"]["text"] == "👍"
    assert "style" not in element  # Slack knows only primary and danger
