"""Markdown for Slack's native streams (``markdown_text``) that cannot ping anyone, made as it streams.

Why: a native stream hands the answer's Markdown to Slack, which renders it itself, and Slack reads
``<@U1>``, ``<!here>``, ``<#C1>`` and ``<!subteam^S1>`` in ``markdown_text`` as mentions, as it does
in ``text`` (apps rely on it to mention people from a stream). How it treats ``&lt;!here&gt;`` or a
link to ``!channel`` is not documented. So the text we stream never holds those shapes, and still
reads the same to a person:

- A zero-width space (U+200B) is put between ``<`` and a following ``!``, ``@`` or ``#`` (spaces
  between or not); between ``](`` or ``]:`` and a link target that starts with one; before the ``;``
  of a character reference that could spell Slack syntax (``&lt;``, ``&#33;``, ``&commat;``...);
  inside a bare ``@here``, ``@channel`` or ``@everyone``; and before the ``:`` of an autolink
  ``<scheme:...>`` whose scheme is not ``http``, ``https`` or ``mailto``.
- A link ``[label](target)`` (or an image) to anything but ``http(s)://`` or ``mailto:`` is written
  as its label; a link reference definition with such a target is broken, so it shows as text.

The text arrives in pieces and what was appended to a stream cannot be taken back, so each zero-width
space is decided by what comes *before* the character it precedes, and a possible link or code span
at the end is held back until it is complete or clearly not one (or longer than ``hold_limit``
characters: then it goes out as it is, its mention shapes still broken). Links inside code (fenced
blocks, complete code spans) are code and left alone; the zero-width spaces are not, so code copied
from a streamed answer may hold one after a ``<`` in ``<!``, ``<@`` or ``<#``.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from core import fences

from .mrkdwn import allowed_target

__all__ = ["HOLD_LIMIT", "ZWSP", "SafeMarkdown", "safe_markdown"]

ZWSP = "\u200b"

#: Characters a possible link or code span may grow to while it is held back.
HOLD_LIMIT = 2_000

_WS = r"[ \t\r\n]{0,16}"
# Character references that spell something Slack or Markdown would read as syntax.
_ENTITIES = (
    r"#[0-9]{1,8}|#x[0-9a-f]{1,8}|lt|gt|amp|quot|apos|excl|commat|num|vert|verbar|verticalline"
    r"|lpar|rpar|lsqb|rsqb|lbrack|rbrack|colon|semi|hat|lowbar|ast|grave|nbsp"
)
# A zero-width space goes at the end of each match: just before the character its lookahead saw.
_BREAK = re.compile(
    rf"<{_WS}(?=[!@#])"  # <!here>, <@U1>, <#C1>, < !here>
    rf"|\]{_WS}\({_WS}(?=[!@#])"  # [x](!channel)
    rf"|\]:{_WS}(?=[!@#])"  # [r]: !channel
    rf"|&(?:{_ENTITIES})(?=;)"  # &lt;!here&gt;, &#33;
    r"|<(?!(?:https?|mailto):)[a-z][a-z0-9+.\-]{1,31}(?=:)"  # <slack://x>, <javascript:x>
    r"|@(?:her(?=e)|channe(?=l)|everyon(?=e))",  # @here, @channel, @everyone
    re.IGNORECASE,
)
_WINDOW = 48  # longer than any _BREAK match before its lookahead
_BLANK_AFTER = re.compile(r"\n[ \t]*\n")
_LINE_CAP = 1_024  # of a line we remember: enough to tell a fence


def safe_markdown(text: str) -> str:
    """``text`` made safe in one go (a note, a complete answer)."""
    guard = SafeMarkdown()
    return guard.feed(text) + guard.flush()


class SafeMarkdown:
    """Feed an answer's Markdown as it comes; get back, piece by piece, the text to stream."""

    def __init__(self, *, hold_limit: int = HOLD_LIMIT) -> None:
        self._pending = ""
        self._tail = ""  # the end of what went out, before zero-width spaces
        self._fence: fences.Fence | None = None  # the open code fence
        self._line = ""  # the current line so far (capped)
        self._hold_limit = hold_limit

    def feed(self, text: str) -> str:
        """What of everything fed so far may go out now (a possible link at the end waits)."""
        self._pending += text
        return self._release(self._ready())

    def flush(self) -> str:
        """Everything still held back: the answer is complete."""
        return self._release(len(self._pending))

    # -- what may go out ------------------------------------------------------------------

    def _ready(self) -> int:
        """How much of the pending text may go out: up to the first construct still growing."""
        pending = self._pending
        spans, _, _ = self._spans(pending)
        for start, end, code in spans:
            if code:
                continue
            scanner = _Scanner(pending[:end], self._line, more=end == len(pending))
            while (held := scanner.first_open(start)) is not None:
                if len(pending) - held <= self._hold_limit:
                    return held
                start = held + 1  # waited long enough for that one: it goes out as it is
        if spans and not spans[-1][2] and pending.endswith("!"):
            return len(pending) - 1  # may become an image: ![
        return len(pending)

    def _release(self, n: int) -> str:
        chunk, self._pending = self._pending[:n], self._pending[n:]
        if not chunk:
            return ""
        line = self._line
        spans, self._fence, self._line = self._spans(chunk)
        text = "".join(
            chunk[start:end] if code else _Scanner(chunk[:end], line, start).rewrite()
            for start, end, code in spans
        )
        out = _break(self._tail, text)
        self._tail = (self._tail + text)[-_WINDOW:]
        return out

    def _spans(self, text: str) -> tuple[list[tuple[int, int, bool]], fences.Fence | None, str]:
        """``text`` in runs of prose and fenced code, and the fence state and line after it."""
        spans: list[tuple[int, int, bool]] = []
        fence, line, pos = self._fence, self._line, 0
        while pos < len(text):
            newline = text.find("\n", pos)
            end = len(text) if newline < 0 else newline + 1
            code = fence is not None
            if spans and spans[-1][2] == code:
                spans[-1] = (spans[-1][0], end, code)
            else:
                spans.append((pos, end, code))
            line = (line + text[pos:end])[:_LINE_CAP]
            if newline >= 0:
                # As to_mrkdwn reads fences: both come from core.fences.
                fence, line = fences.after_line(line.rstrip("\n"), fence), ""
            pos = end
        return spans, fence, line


def _break(before: str, text: str) -> str:
    """``text`` with the zero-width spaces it needs, ``before`` being what preceded it."""
    combined = before + text
    start = len(before)
    cuts = sorted({m.end() - start for m in _BREAK.finditer(combined) if m.end() >= start})
    if not cuts:
        return text
    parts, last = [], 0
    for cut in cuts:
        parts.append(text[last:cut])
        last = cut
    parts.append(text[last:])
    return ZWSP.join(parts)


# ------------------------------------------------------------------------------ links and code


@dataclass(frozen=True, slots=True)
class _Link:
    label_start: int
    label_end: int
    dest: str
    end: int


@dataclass(frozen=True, slots=True)
class _Definition:
    dest: str
    colon: int


_NONE = "none"  # not a link (``None``: not known yet, wait for more text)


class _Scanner:
    """CommonMark's inline links, link definitions and code spans, as far as safety needs them.

    ``text[start:]`` is prose to look at (what is before it gives the line context, ``line`` what
    came before ``text`` on its first line). ``more``: the text may still grow, so a construct cut
    off by its end may yet complete; otherwise it is not one. One pass over the text finds the
    brackets' pairs, the backtick runs and the line breaks, so that a model answering ``[[[[...``
    costs linear time, not quadratic.
    """

    def __init__(self, text: str, line: str, start: int = 0, *, more: bool = False) -> None:
        self.text = text
        self.line = line
        self.start = start
        self.more = more
        self._pairs: dict[int, int] = {}  # "[" -> its "]"
        self._unclosed: set[int] = set()  # "[" that may still be closed (no blank line since)
        self._runs: dict[int, list[int]] = {}  # backtick run length -> where such runs start
        self._newlines: list[int] = []
        self._blanks: list[int] = []  # where a blank line starts (the "\n" before it)
        self._index()

    def _index(self) -> None:
        text, stack, k, n = self.text, list[int](), 0, len(self.text)
        while k < n:
            c = text[k]
            if c == "\\":
                k += 2
                continue
            if c == "`":
                end = k
                while end < n and text[end] == "`":
                    end += 1
                self._runs.setdefault(end - k, []).append(k)
                k = end
                continue
            if c == "[":
                stack.append(k)
            elif c == "]" and stack:
                self._pairs[stack.pop()] = k
            elif c == "\n":
                self._newlines.append(k)
                if _BLANK_AFTER.match(text, k):
                    self._blanks.append(k)
                    stack.clear()  # a blank line ends the paragraph: no link spans it
            k += 1
        self._unclosed = set(stack)

    # -- the two uses -----------------------------------------------------------------------

    def first_open(self, start: int) -> int | None:
        """Where the first construct from ``start`` on that is not complete yet starts
        (``None``: nothing waits)."""
        k, text = start, self.text
        while k < len(text):
            c = text[k]
            if c == "\\":
                k += 2
            elif c == "`":
                end = self._code_span(k)
                if end is None:
                    return k
                k = end
            elif c == "[":
                found = self._parse(k)
                if found is None:
                    return k - 1 if k > start and text[k - 1] == "!" else k
                if isinstance(found, _Link):
                    k = found.end  # as rewrite() goes on
                elif isinstance(found, _Definition):
                    k = found.colon
                else:
                    k += 1
            else:
                k += 1
        return None

    def rewrite(self) -> str:
        """``text[start:]`` with each link to a target other than the web or mail as its label."""
        text, out, last, k = self.text, [], self.start, self.start
        while k < len(text):
            c = text[k]
            if c == "\\":
                k += 2
                continue
            if c == "`":
                k = self._code_span(k) or k + 1
                continue
            if c != "[":
                k += 1
                continue
            found = self._parse(k)
            if isinstance(found, _Link):
                start = k - 1 if k > last and text[k - 1] == "!" else k
                out.append(text[last:start])
                label = _Scanner(text[found.label_start : found.label_end], "x").rewrite()
                if allowed_target(found.dest):
                    head, tail = text[start : found.label_start], text[found.label_end : found.end]
                    out.append(head + label + tail)
                else:  # shown as the text it is
                    out.append(label if label.strip() else found.dest)
                last = k = found.end
                continue
            if isinstance(found, _Definition) and not allowed_target(found.dest):
                out.append(text[last : found.colon] + ZWSP)  # no longer a definition: text
                last = k = found.colon
                continue
            k += 1
        out.append(text[last:])
        return "".join(out)

    # -- pieces: ``None`` means "not complete yet" (only when ``more``) ----------------------

    def _cut_off(self) -> str | None:
        return None if self.more else _NONE

    def _at_line_start(self, k: int) -> bool:
        i = bisect.bisect_left(self._newlines, k)
        before = self.text[self._newlines[i - 1] + 1 : k] if i else self.line + self.text[:k]
        return len(before) <= 3 and not before.strip(" ")

    def _code_span(self, k: int) -> int | None:
        """The end of the code span opening at ``k``, or of its backticks when there is none."""
        text, run = self.text, k
        while run < len(text) and text[run] == "`":
            run += 1
        ticks = run - k
        if ticks >= 3 and self._at_line_start(k):
            return run  # a code fence, not a span
        starts = self._runs.get(ticks, [])
        i = bisect.bisect_right(starts, k)
        blank = bisect.bisect_left(self._blanks, run)
        paragraph_end = self._blanks[blank] if blank < len(self._blanks) else None
        if i < len(starts) and (paragraph_end is None or starts[i] < paragraph_end):
            closer_end = starts[i] + ticks
            if self.more and closer_end == len(text):
                return None  # another backtick may follow: then this is no closer
            return closer_end
        if paragraph_end is None and self.more:
            return None
        return run

    def _parse(self, i: int) -> _Link | _Definition | str | None:
        """What the ``[`` at ``i`` starts: a link, a definition, ``_NONE`` or not known yet."""
        text, n = self.text, len(self.text)
        label_end = self._pairs.get(i)
        if label_end is None:
            return self._cut_off() if i in self._unclosed else _NONE
        j = label_end + 1
        if j >= n:
            return self._cut_off()
        if text[j] == "(":
            return self._inline(i + 1, label_end, j + 1)
        if text[j] == ":" and label_end > i + 1 and self._at_line_start(i):
            dest = self._destination(_end(_SPACE, text, j + 1))
            if not isinstance(dest, tuple):
                return _NONE if dest == _NONE else self._cut_off()
            return _Definition(dest[0], j)
        return _NONE

    def _inline(self, label_start: int, label_end: int, j: int) -> _Link | str | None:
        text, n = self.text, len(self.text)
        j = _end(_SPACE, text, j)
        if j >= n:
            return self._cut_off()
        if text[j] == ")":
            return _Link(label_start, label_end, "", j + 1)
        dest = self._destination(j)
        if not isinstance(dest, tuple):
            return _NONE if dest == _NONE else self._cut_off()
        url, j = dest
        after = _end(_SPACE, text, j)
        if after >= n:
            return self._cut_off()
        if text[after] in "\"'(" and after > j:  # a title
            title = _TITLE.match(text, after)
            if title is None:
                closer = ")" if text[after] == "(" else text[after]
                return _NONE if closer in text[after + 1 :] else self._cut_off()
            after = _end(_SPACE, text, title.end())
            if after >= n:
                return self._cut_off()
        if text[after] == ")":
            return _Link(label_start, label_end, url, after + 1)
        return _NONE

    def _destination(self, j: int) -> tuple[str, int] | str | None:
        """A link destination at ``j`` and its end."""
        text, n = self.text, len(self.text)
        if j >= n:
            return None
        if text[j] == "<":
            end = _end(_POINTY, text, j)
            if end >= n:
                return None
            return (text[j + 1 : end], end + 1) if text[end] == ">" else _NONE
        end = _end(_BARE, text, j)
        if end >= n or (text[end] == "(" and _end(_PAREN, text, end) >= n):
            return None  # may go on (a parenthesis may still be closed)
        if end == j:
            return _NONE
        return text[j:end], end


# Link destinations and titles as CommonMark writes them (one level of parentheses).
_POINTY = re.compile(r"<(?:[^<>\n\\]|\\.)*")
_BARE = re.compile(r"(?:[^\s()\\]|\\.|\((?:[^\s()\\]|\\.)*\))*")
_PAREN = re.compile(r"\((?:[^\s()\\]|\\.)*")
_TITLE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|\((?:[^()\\]|\\.)*\)', re.DOTALL)
_SPACE = re.compile(r"[ \t]*\n?[ \t]*")


def _end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where ``pattern`` (which also matches nothing) stops matching from ``pos``."""
    m = pattern.match(text, pos)
    return m.end() if m else pos
