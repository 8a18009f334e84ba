"""CommonMark fenced code blocks, read line by line: the one fence scanner of every front end.

Why one module: where a code block starts and ends decides how a long reply is split
(:mod:`core.split` closes a fence at the end of a part and reopens it in the next) and how Slack's
mrkdwn is written (:mod:`bots.slack.mrkdwn`); when the two disagree, a part renders differently
from the source. The rules are CommonMark's (spec 0.31, "Fenced code blocks"):

- an opening fence is a line of at most 3 spaces of indentation, then a run of at least three
  backticks or at least three tildes (not mixed), then an optional info string (the rest of the
  line, trimmed); after backticks the info string may not contain a backtick (```` ```a`b ```` is
  an inline code span, not a fence);
- the closing fence is a line of at most 3 spaces of indentation, then a run of the opening fence's
  character at least as long as the opening run, then only spaces or tabs (no info string);
- an unclosed fence runs to the end of the text.

The web page (``bots/web/static/app.js``) cannot import Python; its ``fenceOpen``/``fenceCloses``
follow these same rules and tests/bots/web/test_browser.py checks that they agree.

Block containers (a fence inside a ``>`` quote or indented under a list item) are not followed:
those lines are plain text here, as they are on the web page.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Fence", "after_line", "closes", "fence_for", "may_be_fence", "open_after", "opens"]

# A fence line: its run of backticks or tildes (maximal: the greedy run never backtracks, since
# the rest matches anything) and the rest of the line.
_FENCE_LINE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_TRIM = " \t\r"  # a "\r" left by a CRLF line ending is not part of the line


class Fence(NamedTuple):
    """An open code fence: its opening run (```` ``` ````, ``~~~~``...) and its info string."""

    marker: str
    info: str


def may_be_fence(line: str) -> bool:
    """A cheap test: ``False`` means ``line`` is surely no fence line (skip the full test)."""
    return "```" in line or "~~~" in line


def opens(line: str) -> Fence | None:
    """The fence ``line`` (without its ``"\\n"``) opens, or ``None`` when it opens none."""
    m = _FENCE_LINE.fullmatch(line)
    if m is None:
        return None
    marker, rest = m.groups()
    if marker[0] == "`" and "`" in rest:
        return None  # backticks then an info string with a backtick: an inline code span
    return Fence(marker, rest.strip(_TRIM))


def closes(line: str, fence: Fence) -> bool:
    """Whether ``line`` (without its ``"\\n"``) closes ``fence``."""
    m = _FENCE_LINE.fullmatch(line)
    if m is None:
        return False
    run, rest = m.groups()
    return run[0] == fence.marker[0] and len(run) >= len(fence.marker) and not rest.strip(_TRIM)


def after_line(line: str, fence: Fence | None) -> Fence | None:
    """The fence open after the complete ``line``, when ``fence`` was open before it."""
    if not may_be_fence(line):
        return fence
    if fence is None:
        return opens(line)
    return None if closes(line, fence) else fence


def open_after(text: str, fence: Fence | None = None) -> Fence | None:
    """The fence open at the end of ``text`` (its last line counts even without a newline)."""
    for line in text.split("\n"):
        fence = after_line(line, fence)
    return fence


def fence_for(text: str) -> str:
    """A backtick fence that no line of ``text`` can close: one backtick longer than the longest
    run of backticks that starts a fence-like line of ``text``, and at least three (a file that
    holds ```` ``` ```` is fenced with ```` ```` ````)."""
    longest = 2
    if "```" in text:
        for line in text.split("\n"):
            m = _FENCE_LINE.match(line)
            if m is not None and m.group(1)[0] == "`":
                longest = max(longest, len(m.group(1)))
    return "`" * (longest + 1)
