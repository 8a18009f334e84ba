"""core.fences: CommonMark's fenced code blocks, read line by line.

The property test checks the scanner against markdown-it-py (a CommonMark parser) on generated
text made of fence-like lines, so a misreading of the spec shows up as a disagreement.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from core.fences import Fence, after_line, closes, fence_for, may_be_fence, open_after, opens


@pytest.mark.parametrize(
    ("line", "fence"),
    [
        ("```", Fence("```", "")),
        ("~~~", Fence("~~~", "")),
        ("````python  ", Fence("````", "python")),
        ("   ~~~ js title ", Fence("~~~", "js title")),
        ("~~~ `backticks` ~ ok", Fence("~~~", "`backticks` ~ ok")),
        ("```\r", Fence("```", "")),  # the "\r" of a CRLF line ending
        ("``", None),
        ("~~", None),
        ("    ```", None),  # four spaces: indented code
        ("\t```", None),
        ("```a`b", None),  # a code span, not a fence
        ("`~~", None),
        ("x ```", None),
    ],
)
def test_opening_fences(line: str, fence: Fence | None) -> None:
    assert opens(line) == fence
    if fence is not None:
        assert may_be_fence(line)


@pytest.mark.parametrize(
    ("line", "fence", "closed"),
    [
        ("```", Fence("```", "py"), True),
        ("`````  \t", Fence("```", ""), True),
        ("   ~~~~", Fence("~~~~", ""), True),
        ("``", Fence("```", ""), False),  # shorter
        ("```", Fence("````", ""), False),
        ("~~~", Fence("```", ""), False),  # the other character
        ("```", Fence("~~~", ""), False),
        ("``` py", Fence("```", ""), False),  # a closer has no info string
        ("    ```", Fence("```", ""), False),
    ],
)
def test_closing_fences(line: str, fence: Fence, closed: bool) -> None:
    assert closes(line, fence) is closed
    assert after_line(line, fence) == (None if closed else fence)


def test_open_after_reads_every_line() -> None:
    assert open_after("a\n~~~py\nx\n") == Fence("~~~", "py")
    assert open_after("a\n~~~py\nx\n~~~") is None  # the last line counts without a newline
    assert open_after("````\n```\n~~~\n") == Fence("````", "")
    assert open_after("x\n```", Fence("~~~", "")) == Fence("~~~", "")  # continues a state


# -- against a CommonMark parser -----------------------------------------------------------------

_COMMONMARK = MarkdownIt("commonmark")
# Lines of fence-like pieces only: no block containers (">", "-", "1."), HTML or headings, where
# this line-by-line scanner and a full parser may rightly differ.
_PIECES = ["```", "````", "~~~", "~~~~", "`", "~", " ", "   ", "\t", "a", "py"]
_LINES = st.lists(st.lists(st.sampled_from(_PIECES), max_size=5).map("".join), max_size=12)


def _ours(lines: list[str]) -> list[str]:
    kinds: list[str] = []
    fence: Fence | None = None
    for line in lines:
        after = after_line(line, fence)
        if fence is None:
            kinds.append("text" if after is None else f"open {after.marker} {after.info!r}")
        else:
            kinds.append("close" if after is None else "code")
        fence = after
    return kinds


def _commonmark(lines: list[str]) -> list[str]:
    kinds = ["text"] * len(lines)
    for token in _COMMONMARK.parse("\n".join(lines) + "\n"):
        if token.type != "fence":
            continue
        assert token.map is not None
        start, end = token.map
        closed = token.content.count("\n") == end - start - 2
        info = token.info.strip(" \t")
        kinds[start] = f"open {token.markup} {info!r}"
        for i in range(start + 1, end):
            kinds[i] = "code"
        if closed:
            kinds[end - 1] = "close"
    return kinds


@settings(max_examples=500, deadline=None, database=None)
@given(lines=_LINES)
def test_lines_read_as_commonmark_reads_them(lines: list[str]) -> None:
    assert _ours(lines) == _commonmark(lines), lines


def test_fence_for_is_longer_than_any_fence_run_in_the_text() -> None:
    assert fence_for("plain text") == "```"
    assert fence_for("a ``` b") == "```"  # not at a line's start: no fence
    assert fence_for("```py\nx\n```") == "````"
    assert fence_for("   `````") == "``````"
    assert fence_for("    ```") == "```"  # four spaces: indented code, no fence
    assert fence_for("~~~~~") == "```"  # tildes never close a backtick fence


@settings(max_examples=300, deadline=None, database=None)
@given(lines=_LINES)
def test_text_fenced_with_fence_for_is_one_code_block_holding_it_all(lines: list[str]) -> None:
    text = "\n".join(lines)
    fence = fence_for(text)
    tokens = _COMMONMARK.parse(f"{fence}\n{text}\n{fence}\n")
    assert [t.type for t in tokens] == ["fence"], lines
    assert tokens[0].content == text + "\n"
