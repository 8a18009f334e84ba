"""Text between Slack and the LLM: Markdown → Slack mrkdwn, and Slack's encoded text → plain text.

Why our own converter: LLMs answer in Markdown, Slack shows ``mrkdwn``. The obvious library
(markdown-to-mrkdwn 0.3) gets things wrong that matter here: it leaves ``&``, ``<`` and ``>``
unescaped, so an answer containing ``<!channel>`` pings the whole channel and ``a <b> c`` loses
text; it rewrites inside inline code (```` `**x**` ```` → ```` `*x*` ````); and it reads
``2*3*4`` as italics (``2_3_4``). This module is small and errs on the side of showing the text
as written.

Nothing it writes can ping anyone: every ``&``, ``<`` and ``>`` of the answer is escaped (Slack's
only control characters, so ``<!channel>`` shows as text), and a Markdown link becomes a Slack link
only when it points at ``http(s)://`` or ``mailto:``: any other target would be read by Slack as a
special token (``[hi](!channel)`` as ``<!channel|hi>``, an @channel), so it is shown as its label.

:func:`to_mrkdwn` is called on partial text while a reply streams, so it never fails on
unbalanced markup: an unclosed code block is closed, an unclosed ``**`` stays as typed. Code blocks
are found by :mod:`core.fences` (CommonMark's backtick and tilde fences), the scanner that also
decides where :mod:`core.split` closes and reopens a block, so the two never disagree.
"""

from __future__ import annotations

import re

from core import fences

__all__ = ["allowed_target", "escape", "from_slack", "to_mrkdwn"]

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+(.*)$")
_TASK = re.compile(r"^\[([ xX])\][ \t]+")
_QUOTE = re.compile(r"^ {0,3}>[ \t]?(.*)$")

# Inline tokens that are copied, not re-formatted: code spans, images, links, autolinks.
_PROTECTED = re.compile(
    r"(?P<code>(?P<ticks>`+)(?P<codetext>.+?)(?P=ticks))"
    r"|(?P<link>!?\[(?P<label>[^\]\n]*)\]\((?P<url>[^)\s]+)(?:[ \t]+\"[^\"\n]*\")?\))"
    r"|(?P<auto><(?P<autourl>(?:https?|mailto):[^>\s]+)>)"
)
#: Link targets Slack gets as links; any other target is shown as plain text.
_ALLOWED_TARGET = re.compile(r"(?:https?://|mailto:)", re.IGNORECASE)
_BOLD_ITALIC = re.compile(r"(?<![\w*])\*\*\*(?=\S)(.+?)(?<=\S)\*\*\*(?![\w*])")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)")
_ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")

# Private-use characters stand in for protected tokens and bold markers during conversion.
_SLOT_OPEN, _SLOT_CLOSE, _BOLD_MARK = "\ue000", "\ue001", "\ue002"
_SLOT = re.compile(f"{_SLOT_OPEN}(\\d+){_SLOT_CLOSE}")
_PRIVATE = re.compile(f"[{_SLOT_OPEN}{_SLOT_CLOSE}{_BOLD_MARK}]")


def escape(text: str) -> str:
    """Slack's three control characters, escaped (the only escaping Slack wants)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Slack ``mrkdwn`` for the Markdown an LLM writes (possibly cut mid-stream)."""
    out: list[str] = []
    fence: fences.Fence | None = None  # the open code fence
    for line in _PRIVATE.sub("", markdown).split("\n"):
        after = fences.after_line(line, fence)
        if after is not fence:  # the line opens or closes a block
            fence = after
            out.append("```")  # Slack shows an info string as code: drop it
        elif fence is not None:
            out.append(escape(line))
        else:
            out.append(_block_line(line))
    if fence is not None:
        out.append("```")  # still streaming, or never closed: keep the code a code block
    return "\n".join(out)


def _block_line(line: str) -> str:
    if m := _HEADING.match(line):
        title = re.sub(r"\*\*|__", "", m.group(2))
        return f"*{_inline(title)}*" if title.strip() else ""
    if _RULE.match(line):
        return "──────────"
    if m := _BULLET.match(line):
        indent, item = m.groups()
        if t := _TASK.match(item):
            item = ("☑ " if t.group(1) in "xX" else "☐ ") + item[t.end() :]
        return f"{indent}• {_inline(item)}"
    if m := _QUOTE.match(line):
        return f"> {_inline(m.group(1))}"
    return _inline(line)


def _inline(text: str) -> str:
    slots: list[str] = []

    def protect(m: re.Match[str]) -> str:
        if m.group("code") is not None:
            token = f"`{escape(m.group('codetext'))}`"
        elif m.group("link") is not None:
            token = _link(m.group("url"), m.group("label"))
        else:
            token = f"<{_url(m.group('autourl'))}>"
        slots.append(token)
        return f"{_SLOT_OPEN}{len(slots) - 1}{_SLOT_CLOSE}"

    text = escape(_PROTECTED.sub(protect, text))
    text = _BOLD_ITALIC.sub(lambda m: f"{_BOLD_MARK}_{m.group(1)}_{_BOLD_MARK}", text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(1) or m.group(2)}{_BOLD_MARK}", text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = text.replace(_BOLD_MARK, "*")
    return _SLOT.sub(lambda m: slots[int(m.group(1))], text)


def _url(url: str) -> str:
    return escape(url).replace("|", "%7C")


def allowed_target(url: str) -> bool:
    """Whether a link may point at ``url``: the web and mail only. Slack reads any other target
    of ``<target|label>`` its own way: ``<!channel|hi>`` pings the channel, ``<@U1|x>`` a user."""
    return _ALLOWED_TARGET.match(url) is not None


def _link(url: str, label: str) -> str:
    if not allowed_target(url):
        return escape(label.strip() or url)  # shown as the text it is, not as a link
    label = escape(label.replace("|", "¦")).strip()
    return f"<{_url(url)}|{label}>" if label else f"<{_url(url)}>"


# ------------------------------------------------------------------------------------ incoming

_SLACK_TOKEN = re.compile(r"<([^<>]*)>")


def from_slack(text: str, bot_user_id: str | None = None) -> str:
    """The plain text of a Slack message, for the LLM: the bot's own mention removed, other
    mentions, channels and links written out, ``&amp;``/``&lt;``/``&gt;`` decoded."""

    def token(m: re.Match[str]) -> str:
        body, _, label = m.group(1).partition("|")
        if body.startswith("@"):
            return "" if body[1:] == bot_user_id else f"@{label or body[1:]}"
        if body.startswith("#"):
            return f"#{label or body[1:]}"
        if body.startswith("!"):
            name = body[1:].split("^", 1)[0]
            return label or f"@{name}"
        if body.startswith("mailto:"):
            return label or body[7:]
        if not label or label in (body, body.split("://", 1)[-1]):
            return body
        return f"{label} ({body})"

    text = _SLACK_TOKEN.sub(token, text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"^[ \t]+|[ \t]+$", "", text.replace("\u00a0", " "), flags=re.MULTILINE).strip()
