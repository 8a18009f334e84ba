"""Code fences in answers longer than one message, through the real Slack and Discord bots.

An answer is split into several messages; each must be a valid message of its own, so a code block
cut by the split is closed at the end of one message and reopened at the start of the next. Fences
are CommonMark's: backticks *or tildes*, and a longer fence may hold shorter ones (Markdown showing
Markdown). Checked by what the user sees: every code line inside a code block, no message leaving
one open, no code line formatted (``*x*`` stays, ``<`` is escaped on Slack).
"""

from __future__ import annotations

import re

import pytest

from bots.discord.sink import MAX_LEN as DISCORD_MAX_LEN
from bots.slack.sink import UPDATE_MAX_LEN as SLACK_MAX_LEN
from tests.fakes.llm_server import Reply

from .conftest import ChatMaker

CODE_LINE = re.compile(r"x(\d+) = \1  # \*not emphasis\* (<|&lt;)tag(>|&gt;)$")


def code_lines(count: int) -> str:
    return "".join(f"x{i} = {i}  # *not emphasis* <tag>\n" for i in range(count))


def check_messages(texts: list[str], fence_line: re.Pattern[str], count: int) -> None:
    """Every message balanced; the code lines all shown, in order, each inside a code block."""
    seen: list[int] = []
    for text in texts:
        open_marker: str | None = None
        for line in text.split("\n"):
            m = fence_line.fullmatch(line)
            if m and (open_marker is None or m.group(1) == open_marker):
                open_marker = None if open_marker else m.group(1)
                continue
            if code := CODE_LINE.fullmatch(line):
                assert open_marker is not None, (line, text)
                seen.append(int(code.group(1)))
            else:
                assert not line.startswith("x"), (line, text)  # a code line formatted
        assert open_marker is None, text  # the message closes what it opened
    assert seen == list(range(count))


async def test_a_long_tilde_fenced_block_is_code_in_every_message(make_chat: ChatMaker) -> None:
    chat = await make_chat()
    limit = SLACK_MAX_LEN if chat.name == "slack" else DISCORD_MAX_LEN
    count = 3 * limit // 40
    text = "Here it is:\n\n~~~python\n" + code_lines(count) + "~~~\n\nDone."
    chat.llm.enqueue(Reply(text=text))
    asked = await chat.ask("code please")
    texts = await chat.settled(asked, tries=3000)
    assert len(texts) >= 3
    if chat.name == "slack":  # mrkdwn: every fence becomes ``` (Slack knows no ~~~)
        check_messages(texts, re.compile(r"(```)"), count)
    else:
        check_messages(texts, re.compile(r"(~~~)(?:python)?"), count)
        assert all(t.startswith("~~~python\n") for t in texts[1:])


async def test_a_fence_holding_a_shorter_fence_stays_one_block(make_chat: ChatMaker) -> None:
    """A ```` fence around Markdown that has ``` blocks: those are code, and the split closes and
    reopens the four-backtick fence, not the inner one."""
    chat = await make_chat()
    if chat.name == "slack":
        pytest.skip("Slack's mrkdwn cannot show a ``` line inside a code block (no nesting)")
    lines = code_lines(3 * DISCORD_MAX_LEN // 40).split("\n")[:-1]
    inner = "\n".join(f"```\n{line}\n```" if i % 10 == 0 else line for i, line in enumerate(lines))
    chat.llm.enqueue(Reply(text="````md\n" + inner + "\n````\nDone."))
    asked = await chat.ask("markdown please")
    texts = await chat.settled(asked, tries=3000)
    assert len(texts) >= 3
    shown = []
    for text in texts:
        text = text.removesuffix("\nDone.")
        assert text.startswith("````md\n"), text
        assert text.endswith("\n````"), text
        shown.append(text[len("````md\n") : -len("\n````")])
    assert "\n".join(shown) == inner
