"""Split text at a platform's message length limit without breaking words or code blocks.

Why: Discord (2,000 characters) and Slack cap one message, so a long reply continues in new
messages. A cut lands on a paragraph boundary, else a line boundary, else a space (a boundary is
only taken over a lower-ranked one when it leaves the part at least half full, so a stray early
blank line does not produce a tiny part); a word is hard-cut only when no boundary is available.
A cut inside a code fence (backticks or tildes; :mod:`core.fences` reads fences as CommonMark
does) closes the fence at the end of the part with its own marker (the part ends with
``"\\n```"`` or ``"\\n~~~"``; a newline right before the cut is reused rather than adding a
blank code line) and reopens it with the same marker and info string at the start of the next
(``"```python\\n"``) so each part is a valid message of its own that renders as code.

The cut for a text longer than ``max_len`` depends only on its first ``max_len + 1`` characters.
So a streaming renderer that freezes a part as soon as its text overflows (see
``core.render.StreamRenderer``) ends with exactly the parts :func:`split_message` gives for the
complete text: :func:`find_cut` is the incremental step, :func:`split_message` the batch loop.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable
from typing import NamedTuple

from . import fences

__all__ = ["Cut", "Fence", "Segment", "find_cut", "open_fence", "split_message", "split_segments"]

_NON_SPACE = re.compile(r"\S")
_PARAGRAPH = ("\n\n",)
_LINE = ("\n",)
_SPACE = (" ", "\t", "\n")
_GLUE = frozenset("\u200d\ufe0e\ufe0f")  # zero-width joiner, variation selectors


class Fence(NamedTuple):
    """An open code fence: its marker (```` ``` ````, ``~~~``...), info string, and where its
    code begins."""

    marker: str
    info: str
    start: int  # index just after the opening line

    @property
    def ticks(self) -> str:
        """The marker (the name from when only backtick fences were read)."""
        return self.marker

    @property
    def close(self) -> str:
        """Text appended to a part to close this fence."""
        return "\n" + self.marker

    @property
    def reopen(self) -> str:
        """Text prepended to the next part to reopen this fence."""
        return f"{self.marker}{self.info}\n"


class Cut(NamedTuple):
    """Where the first part of a too-long text ends and how the fence (if any) is repaired."""

    part: str  # ``body[:end] + close``: the complete text of this part
    end: int  # characters of ``body`` consumed by this part
    close: str  # fence closer appended to the part ("" when the cut is outside a fence)
    reopen: str  # fence opener the next part starts with ("" when the cut is outside a fence)


class Segment(NamedTuple):
    """One message of :func:`split_segments`: ``text == reopen + source[start:end] + close``."""

    text: str
    start: int
    end: int
    reopen: str
    close: str


def _step(line: str, fence: Fence | None, after: int) -> Fence | None:
    """Fence state after ``line`` (which ends at index ``after``), by :mod:`core.fences`."""
    if fence is None:
        opened = fences.opens(line)
        return None if opened is None else Fence(opened.marker, opened.info, after)
    return None if fences.closes(line, fences.Fence(fence.marker, fence.info)) else fence


def _fence_like(line: str) -> bool:
    """Whether ``line`` (or its start) could be read as a fence line: never cut inside one."""
    return line.lstrip(" \t").startswith(("```", "~~~"))


def open_fence(text: str) -> Fence | None:
    """The code fence still open at the end of ``text`` (its last line counts even unterminated)."""
    fence: Fence | None = None
    pos = 0
    for line in text.split("\n"):
        pos += len(line) + 1
        if fences.may_be_fence(line):
            fence = _step(line, fence, pos)
    return fence


def _line_states(body: str, limit: int) -> tuple[list[int], list[Fence | None]]:
    """Start index of every line beginning at or before ``limit`` and the fence open there."""
    starts = [0]
    states: list[Fence | None] = [None]
    fence: Fence | None = None
    pos = 0
    while True:
        nl = body.find("\n", pos, limit)
        if nl < 0:
            return starts, states
        if fences.may_be_fence(line := body[pos:nl]):
            fence = _step(line, fence, nl + 1)
        pos = nl + 1
        starts.append(pos)
        states.append(fence)


def _repair(fence: Fence | None, max_len: int, after_newline: bool) -> tuple[str, str]:
    """(close, reopen) for a cut inside ``fence``.

    The part ends with ``"\n"`` and the marker; when the cut is right after a newline it is reused,
    so no blank line is added to the code. The info string is dropped, and then the whole repair,
    when it would take more than half a message.
    """
    if fence is None:
        return "", ""
    room = max_len // 2
    close = fence.close
    for reopen in (fence.reopen, fence.marker + "\n"):
        if len(reopen) + len(close) <= room:
            return (fence.marker if after_newline else close), reopen
    return "", ""


def _splits_cluster(body: str, i: int) -> bool:
    """True when a cut before ``body[i]`` would separate a combining mark, joiner or CRLF."""
    ch = body[i]
    prev = body[i - 1]
    return (
        ch in _GLUE
        or prev == "\u200d"
        or unicodedata.combining(ch) != 0
        or "\U0001f3fb" <= ch <= "\U0001f3ff"  # skin-tone modifiers
        or "\U000e0020" <= ch <= "\U000e007f"  # tag characters (flag sequences)
        or (prev == "\r" and ch == "\n")
    )


def _last_boundary(
    body: str, seps: tuple[str, ...], lo: int, hi: int, ok: Callable[[int], bool]
) -> int:
    """Largest ``i`` in ``[lo, hi]`` right after one of ``seps`` with ``ok(i)``; 0 if none."""
    best = 0
    for sep in seps:
        k = len(sep)
        end = hi
        while True:
            j = body.rfind(sep, max(0, lo - k), end)
            if j < 0 or j + k <= best:
                break
            i = j + k
            if ok(i):
                best = i
                break
            end = i - 1
    return best


def find_cut(body: str, max_len: int, min_cut: int = 0) -> Cut:
    """Choose where the first part of ``body`` (longer than ``max_len``) ends.

    ``min_cut`` protects a leading fence opener that a previous cut added (pass
    ``len(previous_cut.reopen)``): the part must carry content beyond it. The result depends only
    on ``body[:max_len + 1]``, which is what makes incremental splitting stable.
    """
    if max_len < 1:
        raise ValueError("max_len must be at least 1")
    if len(body) <= max_len:
        raise ValueError("body fits in one part; nothing to cut")
    starts, states = _line_states(body, max_len)

    def state(i: int) -> Fence | None:
        return states[bisect_right(starts, i) - 1]

    def closer(i: int) -> str:
        return _repair(state(i), max_len, body[i - 1] == "\n")[0]

    def line_ok(i: int) -> bool:
        # A cut inside a line must not split a fence-like line, nor leave the next part starting
        # with a backtick or tilde: either would make a part's fences render differently from
        # the source.
        if body[i - 1] == "\n":
            return True
        line_start = starts[bisect_right(starts, i) - 1]
        if _fence_like(body[line_start:i]):
            return False
        j = i
        while j <= max_len and body[j] in " \t":
            j += 1
        return j <= max_len and body[j] not in "`~"

    def fence_ok(i: int) -> bool:
        fence = state(i)
        if fence is None:
            return True
        if i == fence.start:  # would leave an empty code block behind
            return False
        return i + len(closer(i)) <= max_len

    def ok(i: int) -> bool:
        return line_ok(i) and fence_ok(i)

    m = _NON_SPACE.search(body, min_cut, max_len)
    floor = m.start() + 1 if m else max_len + 1  # a part must contain visible content
    for seps, lo in (
        (_PARAGRAPH, max(max_len // 2, floor)),
        (_LINE, max(max_len // 2, floor)),
        (_SPACE, max(max_len // 2, floor)),
        (_SPACE, floor),
    ):
        i = _last_boundary(body, seps, lo, max_len, ok)
        if i:
            return _cut_at(body, i, state(i), max_len)
    # A fence-like first line longer than the window has to be cut somewhere: prefer a space.
    if starts[-1] < floor:
        i = _last_boundary(body, _SPACE, floor, max_len, fence_ok)
        if i:
            return _cut_at(body, i, state(i), max_len)

    # Hard cut: no usable boundary, the window is one long word. Take the last position that
    # leaves room for the fence closer, stepping back a little to keep grapheme clusters and
    # fence-like text whole when possible.
    fitting = itertools.islice(
        (i for i in range(max_len, min_cut, -1) if i + len(closer(i)) <= max_len), 17
    )
    candidates = list(fitting)
    if not candidates:
        # Only with a degenerate min_cut/max_len: progress and the length limit beat fence repair.
        return Cut(body[:max_len], max_len, "", "")
    i = next(
        (c for c in candidates if line_ok(c) and not _splits_cluster(body, c)),
        next((c for c in candidates if not _splits_cluster(body, c)), candidates[0]),
    )
    return _cut_at(body, i, state(i), max_len)


def _cut_at(body: str, i: int, fence: Fence | None, max_len: int) -> Cut:
    close, reopen = _repair(fence, max_len, body[i - 1] == "\n")
    return Cut(body[:i] + close, i, close, reopen)


def split_segments(text: str, max_len: int) -> list[Segment]:
    """Split ``text`` into parts of at most ``max_len`` characters, with their source spans."""
    if max_len < 1:
        raise ValueError("max_len must be at least 1")
    segments: list[Segment] = []
    if not text:
        return segments
    reopen = ""
    start = 0
    body = text
    while len(body) > max_len:
        cut = find_cut(body, max_len, len(reopen))
        end = start + cut.end - len(reopen)
        segments.append(Segment(cut.part, start, end, reopen, cut.close))
        start, reopen = end, cut.reopen
        body = reopen + text[start:]
    segments.append(Segment(body, start, len(text), reopen, ""))
    return segments


def split_message(text: str, max_len: int) -> list[str]:
    """Split ``text`` into message texts of at most ``max_len`` characters (``[]`` for ``""``)."""
    return [segment.text for segment in split_segments(text, max_len)]
