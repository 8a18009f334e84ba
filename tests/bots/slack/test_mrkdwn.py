"""Markdown → Slack mrkdwn, and Slack's encoded message text → plain text for the LLM."""

from __future__ import annotations

import pytest

from bots.slack.mrkdwn import escape, from_slack, to_mrkdwn
from core.split import split_message


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold**, __bold__, *italic*, _italic_", "*bold*, *bold*, _italic_, _italic_"),
        ("***both***", "*_both_*"),
        ("~~gone~~", "~gone~"),
        ("# Title\n## **Sub** title", "*Title*\n*Sub title*"),
        ("[docs](https://x.test/a?b=1&c=2)", "<https://x.test/a?b=1&amp;c=2|docs>"),
        ("![chart](https://x.test/c.png)", "<https://x.test/c.png|chart>"),
        ("see <https://x.test>", "see <https://x.test>"),
        (
            "- one\n* two\n  + nested\n- [x] done\n- [ ] todo",
            "• one\n• two\n  • nested\n• ☑ done\n• ☐ todo",
        ),
        ("1. first\n2. second", "1. first\n2. second"),
        ("> quoted **text**", "> quoted *text*"),
        ("---", "──────────"),
        ("**bold with [a link](https://x.test)**", "*bold with <https://x.test|a link>*"),
    ],
)
def test_markdown_becomes_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        # Slack's control characters are escaped: an answer can't ping @channel or hide text.
        (
            "<!channel> <@U123> a < b && c > d",
            "&lt;!channel&gt; &lt;@U123&gt; a &lt; b &amp;&amp; c &gt; d",
        ),
        # Arithmetic and identifiers are not emphasis.
        ("2*3*4 and a * b * c and snake_case_name", "2*3*4 and a * b * c and snake_case_name"),
        # Code is shown exactly as written (only escaped).
        ("`**not bold** <x>`", "`**not bold** &lt;x&gt;`"),
        (
            "```python\nx = a**2  # *no*\nif a < b: pass\n```",
            "```\nx = a**2  # *no*\nif a &lt; b: pass\n```",
        ),
        ("~~~\n**raw**\n~~~\n**bold**", "```\n**raw**\n```\n*bold*"),
    ],
)
def test_what_must_not_change_does_not(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        # Only the web and mail are links: Slack would read any other target as a token.
        ("[hi](!channel) [u](@U0VICTIM) [g](!subteam^S123)", "hi u g"),
        ("[c](#C1) [d](!date^1^{date}|x) [j](javascript:x) ![i](data:x)", "c d j i"),
        ("[](!here) [](slack://open)", "!here slack://open"),
        ("[a](HTTPS://x.test) [m](mailto:a@b.test)", "<HTTPS://x.test|a> <mailto:a@b.test|m>"),
        # A label is text: escaped, whatever the target.
        (
            "[<!channel> & <@U1>](https://x.test/a) [<!here>](!everyone)",
            "<https://x.test/a|&lt;!channel&gt; &amp; &lt;@U1&gt;> &lt;!here&gt;",
        ),
        ("<https://x.test/<!here>>", "<https://x.test/&lt;!here>&gt;"),
    ],
)
def test_links_only_to_the_web_and_mail(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        # Tildes as well as backticks; the info string is dropped either way.
        ("~~~python\n*a* <b>\n~~~\n*c*", "```\n*a* &lt;b&gt;\n```\n_c_"),
        # A closer is the opening character, at least as long, with no info string.
        ("````\n```\n*a*\n```\n````\n*b*", "```\n```\n*a*\n```\n```\n_b_"),
        ("~~~\n```\n*a*\n~~~~~  \n*b*", "```\n```\n*a*\n```\n_b_"),
        ("```\n~~~\n*a*\n``` x\n*b*", "```\n~~~\n*a*\n``` x\n*b*\n```"),
        # Up to three spaces of indentation; four make no fence (and close no fence).
        ("   ~~~\n*a*\n   ~~~\n*b*", "```\n*a*\n```\n_b_"),
        ("    ~~~\n*a*", "    ~~~\n_a_"),
        ("~~~\n*a*\n    ~~~", "```\n*a*\n    ~~~\n```"),
        # After backticks an info string may not hold a backtick: an inline code span.
        ("```a`b```", "`a`b`"),
        ("~~~ `a`\n*b*\n~~~", "```\n*b*\n```"),
    ],
)
def test_code_fences_as_commonmark_reads_them(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_each_part_of_a_split_answer_is_its_own_code_block() -> None:
    """core.split and this converter read fences alike: each part of a long tilde block converts
    to one closed code block, its code untouched."""
    text = "~~~python\n" + "x = a*b*c  # <y>\n" * 30 + "~~~\n"
    parts = split_message(text, 120)
    assert len(parts) >= 4
    for part in parts:
        converted = to_mrkdwn(part).rstrip("\n")
        lines = converted.split("\n")
        assert lines[0] == lines[-1] == "```"
        assert set(lines[1:-1]) == {"x = a*b*c  # &lt;y&gt;"}


def test_partial_text_while_streaming_stays_readable() -> None:
    assert to_mrkdwn("```js\nlet a = 1 ▌") == "```\nlet a = 1 ▌\n```"  # open block closed
    assert to_mrkdwn("**half bold ▌") == "**half bold ▌"  # left as typed until closed
    assert to_mrkdwn("") == ""


def test_private_use_placeholders_in_the_input_cannot_inject() -> None:
    assert to_mrkdwn("\ue0000\ue001 `code`") == "0 `code`"


def test_escape() -> None:
    assert escape("a & <b>") == "a &amp; &lt;b&gt;"


@pytest.mark.parametrize(
    ("slack", "plain"),
    [
        ("<@UBOT> what is 2 &lt; 3 &amp;&amp; 4 &gt; 1?", "what is 2 < 3 && 4 > 1?"),
        ("<@UBOT|llm> hi", "hi"),
        ("ask <@U2|bob> or <@U3>", "ask @bob or @U3"),
        ("in <#C1|general> or <#C2>", "in #general or #C2"),
        ("<!here> <!subteam^S1|@team>", "@here @team"),
        (
            "<https://x.test/a|x.test/a> and <https://y.test|the site>",
            "https://x.test/a and the site (https://y.test)",
        ),
        ("mail <mailto:a@b.test|a@b.test>", "mail a@b.test"),
        ("  spaced\u00a0out  ", "spaced out"),
    ],
)
def test_from_slack(slack: str, plain: str) -> None:
    assert from_slack(slack, "UBOT") == plain
