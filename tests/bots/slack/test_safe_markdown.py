"""The Markdown streamed natively to Slack: no mention shapes, links only to the web and mail,
and the same text however the answer is cut into pieces."""

from __future__ import annotations

import random

import pytest

from bots.slack.safe_markdown import HOLD_LIMIT, ZWSP, SafeMarkdown, safe_markdown

Z = ZWSP


def streamed(text: str, sizes: list[int]) -> str:
    """``text`` fed in pieces of the given sizes (cycled), then flushed."""
    guard, out, i, n = SafeMarkdown(), [], 0, 0
    while i < len(text):
        size = sizes[n % len(sizes)]
        out.append(guard.feed(text[i : i + size]))
        i, n = i + size, n + 1
    return "".join(out) + guard.flush()


@pytest.mark.parametrize(
    ("markdown", "safe"),
    [
        # Slack's special tokens: a zero-width space after "<", so they read the same.
        (
            "<!here> <!channel|all> <@U1> <@W1|x> <#C1>",
            f"<{Z}!here> <{Z}!channel|all> <{Z}@U1> <{Z}@W1|x> <{Z}#C1>",
        ),
        ("<!subteam^S1|@t> <!date^1^{date}|d>", f"<{Z}!subteam^S1|@t> <{Z}!date^1^{{date}}|d>"),
        ("< !here> <\n@U1>", f"< {Z}!here> <\n{Z}@U1>"),
        # Character references that spell syntax are no longer references.
        ("&lt;!here&gt; &#60;@U1&#x3E; &LT;", f"&lt{Z};!here&gt{Z}; &#60{Z};@U1&#x3E{Z}; &LT{Z};"),
        ("AT&T, &mut x; a && b", "AT&T, &mut x; a && b"),
        # Bare @here and friends, any case.
        ("@here @Channel @EVERYONE a@b.test", f"@her{Z}e @Channe{Z}l @EVERYON{Z}E a@b.test"),
        # Links: to the web and mail kept, anything else shown as its label.
        (
            "[a](https://x.test) [m](mailto:a@b.test) ![i](HTTP://x/i.png)",
            "[a](https://x.test) [m](mailto:a@b.test) ![i](HTTP://x/i.png)",
        ),
        ("[hi](!channel) [u](@U1) [j](javascript:x) ![i](data:x) [](tel:1)", "hi u j i tel:1"),
        ("[x]( !here) [y](<!channel>)", "x y"),
        ("[x](slack://a(b)) [y](<slack://a b>) [z](slack://q 'title')", "x y z"),
        ("[**bold** `code`](slack://x)", "**bold** `code`"),
        ("[multi\nline](slack://x)", "multi\nline"),
        ("[a [b](slack://x) c](https://y)", "[a b c](https://y)"),
        ("[<!here> & <@U1>](https://x.test/a)", f"[<{Z}!here> & <{Z}@U1>](https://x.test/a)"),
        # Definitions to other targets are broken (shown as text), so references don't link.
        (
            "[r][ref]\n\n[ref]: slack://x\n[ok]: https://y",
            f"[r][ref]\n\n[ref]{Z}: slack://x\n[ok]: https://y",
        ),
        ("[s]: <@U1>", f"[s]{Z}: <{Z}@U1>"),
        # Autolinks only to the web and mail.
        (
            "<https://x> <mailto:a@b> <slack://x> <JavaScript:y>",
            f"<https://x> <mailto:a@b> <slack{Z}://x> <JavaScript{Z}:y>",
        ),
        # Code is code: its links stay, its mention shapes are still broken.
        ("`[a](slack://x)` <!here>", f"`[a](slack://x)` <{Z}!here>"),
        (
            "```\n[a](slack://x) <!here>\n```\n[b](slack://y)",
            f"```\n[a](slack://x) <{Z}!here>\n```\nb",
        ),
        # Not links at all.
        (
            "a[0] = [1, 2] and [x] (y) and \\[z](slack://w)",
            "a[0] = [1, 2] and [x] (y) and \\[z](slack://w)",
        ),
        ("", ""),
    ],
)
def test_safe_markdown(markdown: str, safe: str) -> None:
    assert safe_markdown(markdown) == safe


SAMPLES = [
    "Hi <!here>, see [docs](https://x.test/a?b=1&c=2) and [bad](!channel) `<@U1>` &lt;!everyone&gt;",
    "```python\nx = a[0] < b and c@here\n```\n[r]: slack://x\nand ![img](data:x) [ok](mailto:a@b.test)",
    "[a [b](slack://x) c](https://y) <slack://z> @channel `` `tick` `` [x](<!channel>)",
    '[t](https://x "title [with] brackets") [u](slack://a(b)c) [unfinished](https://x',
    "`open code [a](slack://x) and more\n\nnext paragraph [b](slack://y)",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_the_same_text_however_it_is_cut(text: str) -> None:
    whole = safe_markdown(text)
    assert streamed(text, [1]) == whole
    assert streamed(text, [2, 3]) == whole
    rng = random.Random(text)
    for _ in range(50):
        assert streamed(text, [rng.randint(1, 9) for _ in range(7)]) == whole


def test_a_possible_link_waits_until_it_is_complete() -> None:
    guard = SafeMarkdown()
    assert guard.feed("see ") == "see "
    assert guard.feed("[the docs") == ""
    assert guard.feed("](slack://x") == ""
    assert guard.feed(") now") == "the docs now"
    assert guard.feed("!") == ""  # may become an image
    assert guard.feed(" yes [a] b") == "! yes [a] b"  # [a] followed by a space: not a link
    assert guard.feed(" `co") == " "  # a code span may hold a link: it waits for its end
    assert guard.feed("de` x") == "`code` x"
    assert guard.flush() == ""


def test_nothing_waits_in_a_code_block() -> None:
    guard = SafeMarkdown()
    assert guard.feed("```\nx = [") == "```\nx = ["
    assert guard.feed("1](") == "1]("
    assert guard.feed("\n```\n[a") == "\n```\n"
    assert guard.flush() == "[a"


def test_a_possible_link_waits_at_most_hold_limit_characters() -> None:
    at_limit = "[" + "x" * (HOLD_LIMIT - 1)
    guard = SafeMarkdown()
    assert guard.feed(at_limit) == ""  # HOLD_LIMIT characters: still waiting
    assert guard.feed("x") == at_limit + "x"  # one more: it goes out as it is
    assert guard.feed("](slack://x)") == "](slack://x)"
    # Its mention shapes are still broken when it goes out unrewritten.
    guard = SafeMarkdown(hold_limit=3)
    assert guard.feed("[abcd") == "[abcd"
    assert guard.feed("](!here)") == f"]({Z}!here)"


def test_what_waits_goes_out_on_flush() -> None:
    guard = SafeMarkdown()
    assert guard.feed("done [") == "done "
    assert guard.flush() == "["
    assert guard.flush() == ""
