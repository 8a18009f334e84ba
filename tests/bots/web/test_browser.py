"""The web chat in headless Chromium (Debian's ``chromium`` driven by Playwright's Python package).

No timed assertions: every check waits for a condition (generous timeouts) and then asserts what
the page shows. Replies stream slowly and observably from the ``echo`` model with ``delay``.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, Route, async_playwright, expect

from core.delivery import final_note
from core.fences import closes, opens
from tests.bots.web.conftest import ServeWeb, WebServer, echo_text
from tests.fakes.llm_server import Fail, FakeLLMServer, FakeToolCall, RecordedRequest, Reply
from tests.fakes.mcp_server import stdio_servers

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="browser tests need Debian's chromium at /usr/bin/chromium "
        "(apt-get install chromium; .ci/run installs it)",
    ),
]

WAIT = 20_000  # ms: generous, these are conditions, not timings
PROMPT = " ".join(f"token{i}" for i in range(30))
XSS = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> **bold** and `code`'


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    await context.close()
    assert errors == [], errors


def last_reply(page: Page) -> Locator:
    return page.locator("#messages .msg.assistant").last


async def send(page: Page, text: str) -> None:
    await page.fill("#input", text)
    await page.press("#input", "Enter")


async def open_chat(page: Page, server: WebServer, conv: str, model: str = "echo/echo") -> None:
    await page.goto(f"{server.url}/#{conv}")
    await expect(page.locator("#model")).to_have_value(model, timeout=WAIT)


async def test_tokens_arrive_before_the_reply_completes(page: Page, make_web: ServeWeb) -> None:
    server = await make_web(options={"delay": 0.05})
    await open_chat(page, server, "first")
    await send(page, PROMPT)
    reply = last_reply(page)
    # Part of the text is on the page while the reply is still streaming.
    await page.wait_for_function(
        """() => {
            const el = [...document.querySelectorAll('#messages .msg.assistant')].pop();
            return el && el.dataset.status === 'streaming'
                && el.querySelector('.body').textContent.includes('[echo]');
        }""",
        timeout=WAIT,
    )
    partial = await reply.locator(".body").inner_text()
    assert partial != echo_text(PROMPT)
    await expect(page.locator("#status")).to_have_text("streaming")
    await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
    await expect(reply.locator(".body")).to_have_text(echo_text(PROMPT))
    await expect(page.locator("#status")).to_have_text("complete")
    await expect(page.locator("#messages .msg.user .body")).to_have_text([PROMPT])
    await expect(page.locator("#conversations a[aria-current=true]")).to_have_text(
        PROMPT[:59] + "…"
    )


async def test_reload_mid_stream_and_a_second_tab_continue_to_completion(
    page: Page, make_web: ServeWeb, browser: Browser
) -> None:
    server = await make_web(options={"delay": 0.08})
    await open_chat(page, server, "reload")
    await send(page, PROMPT)
    await expect(last_reply(page)).to_have_attribute("data-status", "streaming", timeout=WAIT)
    await expect(last_reply(page).locator(".body")).to_contain_text("token1", timeout=WAIT)

    await page.reload()
    reply = last_reply(page)
    # After the reload the text so far is there at once and the reply is still streaming...
    await expect(reply.locator(".body")).to_contain_text("[echo] You said: token0", timeout=WAIT)
    await expect(reply).to_have_attribute("data-status", "streaming", timeout=WAIT)

    # ...and a second tab on the same conversation shows the same stream.
    other = await browser.new_page()
    try:
        await open_chat(other, server, "reload")
        await expect(last_reply(other).locator(".body")).to_contain_text("[echo]", timeout=WAIT)
        for tab in (page, other):
            done = last_reply(tab)
            await expect(done).to_have_attribute("data-status", "complete", timeout=WAIT)
            await expect(done.locator(".body")).to_have_text(echo_text(PROMPT))
    finally:
        await other.close()


async def test_switching_the_model_answers_the_next_prompt_with_it(
    page: Page, make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_allowed_models=["echo", "local/fake"],
    )
    llm_server.enqueue(Reply(text="Hello from **the fake model**.", delay=0.02))
    await open_chat(page, server, "switch")
    await send(page, "before")
    await expect(last_reply(page).locator(".body")).to_have_text(echo_text("before"), timeout=WAIT)

    await page.select_option("#model", "local/fake")
    await page.wait_for_function(
        "() => document.querySelector('#model').dataset.current === 'local/fake'", timeout=WAIT
    )
    await send(page, "after")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
    await expect(reply.locator(".body")).to_have_text("Hello from the fake model.")
    await expect(reply.locator(".body strong")).to_have_text("the fake model")
    # The choice is the conversation's: a reload shows it.
    await page.reload()
    await expect(page.locator("#model")).to_have_value("local/fake", timeout=WAIT)


async def test_html_and_script_in_a_reply_do_not_run(page: Page, make_web: ServeWeb) -> None:
    server = await make_web()
    await open_chat(page, server, "xss")
    await send(page, XSS)
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
    assert await page.evaluate("() => window.pwned") is None
    messages = page.locator("#messages")
    assert await messages.locator("img, script, [onerror]").count() == 0
    # Shown as text (the echo repeats it), with the Markdown rendered.
    await expect(reply.locator(".body")).to_contain_text("<script>window.pwned=2</script>")
    await expect(reply.locator(".body strong")).to_have_text("bold")
    await expect(reply.locator(".body code")).to_have_text("code")
    await expect(page.locator("#messages .msg.user .body")).to_contain_text("onerror=")
    # And again after a reload, rendered from the stored conversation.
    await page.reload()
    await expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=WAIT)
    assert await page.evaluate("() => window.pwned") is None
    assert await messages.locator("img, script, [onerror]").count() == 0


async def test_the_stop_button_stops_the_reply(page: Page, make_web: ServeWeb) -> None:
    server = await make_web(options={"delay": 0.1})
    await open_chat(page, server, "stop")
    await send(page, PROMPT)
    reply = last_reply(page)
    await expect(reply.locator(".body")).to_contain_text("[echo]", timeout=WAIT)
    await page.click("#stop")
    await expect(reply).to_have_attribute("data-status", "cancelled", timeout=WAIT)
    await expect(page.locator("#status")).to_have_text("stopped")
    await expect(reply.locator(".note")).to_have_text("⏹ stopped")
    assert await reply.locator(".body").inner_text() != echo_text(PROMPT)


async def test_the_bare_address_opens_an_empty_conversation_without_piling_them_up(
    page: Page, make_web: ServeWeb
) -> None:
    server = await make_web()
    await page.goto(server.url)
    await page.wait_for_function("() => location.hash.length > 1", timeout=WAIT)
    first = await page.evaluate("() => location.hash")
    await page.goto(server.url)
    await page.wait_for_function("() => location.hash.length > 1", timeout=WAIT)
    assert await page.evaluate("() => location.hash") == first
    await expect(page.locator("#conversations li")).to_have_count(1, timeout=WAIT)
    await expect(page.locator("#status")).to_have_text("idle")


# ---------------------------------------------------------------------- the phone layout

PHONE = {"width": 390, "height": 800}
LONG_CODE = "```python\n" + "x = " + " + ".join(f"value_{i}" for i in range(60)) + "\n```"
TABLE = """Prices:

| Model | Input | Note |
|:------|------:|:----:|
| `a\\|b` | 1.5 | **bold** \\| bar |
| <img src=x onerror="window.pwned=1"> | 2 | [link](https://example.test/a_b) |

After."""
WIDE_TABLE = "| " + " | ".join(f"column_number_{i}" for i in range(12)) + " |\n"
WIDE_TABLE += "|" + "---|" * 12 + "\n| " + " | ".join(f"cell_{i}" for i in range(12)) + " |"


@pytest_asyncio.fixture(loop_scope="module")
async def phone(browser: Browser) -> AsyncIterator[Page]:
    """A page at a phone's width (390 by 800 px, touch, the meta viewport honoured)."""
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    await context.close()
    assert errors == [], errors


async def page_width(page: Page) -> int:
    return int(await page.evaluate("() => document.scrollingElement.scrollWidth"))


async def scrolls_inside(page: Page, selector: str) -> None:
    """Waits until ``selector`` in the last reply is wider inside than its box (it scrolls)."""
    await page.wait_for_function(
        """(sel) => {
            const el = [...document.querySelectorAll('#messages .msg.assistant')].pop()
                ?.querySelector(sel);
            return !!el && el.clientWidth > 0 && el.scrollWidth > el.clientWidth;
        }""",
        arg=selector,
        timeout=WAIT,
    )


async def test_at_390_px_the_chat_fits_and_the_sidebar_is_a_drawer(
    phone: Page, make_web: ServeWeb, llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url}, llmconnect_model="local/fake"
    )
    page = phone
    llm_server.enqueue(Reply(text="Elsewhere."))
    await open_chat(page, server, "other", "local/fake")
    await send(page, "another conversation")
    await expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=WAIT)
    llm_server.enqueue(Reply(text="Here:\n\n" + LONG_CODE + "\n\nDone.", delay=0.01))
    await open_chat(page, server, "phone", "local/fake")  # the same document, a new fragment:
    await expect(page.locator("#messages .msg")).to_have_count(0, timeout=WAIT)  # switched
    await send(page, "a long line of code, please")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)

    # Nothing wider than the screen; the message box takes most of the width, Send fits.
    assert await page_width(page) <= PHONE["width"]
    box = await page.locator("#input").bounding_box()
    send_box = await page.locator("#send").bounding_box()
    assert box is not None
    assert send_box is not None
    assert box["width"] >= 250, box
    assert send_box["x"] + send_box["width"] <= PHONE["width"]
    for button in ("#menu", "#stop", "#reset", "#usage"):
        b = await page.locator(button).bounding_box()
        assert b is not None, button
        assert b["x"] >= 0, button
        assert b["x"] + b["width"] <= PHONE["width"], button

    # The long code line scrolls inside its message, which stays within the screen.
    await scrolls_inside(page, ".body pre")
    pre = reply.locator(".body pre")
    msg_box = await reply.bounding_box()
    assert msg_box is not None
    assert msg_box["x"] + msg_box["width"] <= PHONE["width"]
    assert await pre.evaluate("(el) => { el.scrollLeft = 200; return el.scrollLeft; }") > 0
    assert await page_width(page) <= PHONE["width"]

    # The sidebar hides behind the menu button.
    menu = page.locator("#menu")
    sidebar = page.locator("#sidebar")
    await expect(menu).to_be_visible()
    await expect(menu).to_have_attribute("aria-expanded", "false")
    await expect(sidebar).to_be_hidden()
    await page.screenshot(path=str(tmp_path / "phone.png"))
    assert (tmp_path / "phone.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Open, close with the button again.
    await menu.click()
    await expect(menu).to_have_attribute("aria-expanded", "true")
    await expect(sidebar).to_be_visible()
    await expect(page.locator("#new-chat")).to_be_focused()
    assert await page_width(page) <= PHONE["width"]
    await menu.click()  # it stays above the drawer, in its corner
    await expect(menu).to_have_attribute("aria-expanded", "false")
    await expect(sidebar).to_be_hidden()
    # Open, close with Escape (the focus goes back to the button).
    await menu.click()
    await expect(sidebar).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(menu).to_have_attribute("aria-expanded", "false")
    await expect(sidebar).to_be_hidden()
    await expect(menu).to_be_focused()
    # Open, close with a tap outside it.
    await menu.click()
    await expect(sidebar).to_be_visible()
    await page.mouse.click(PHONE["width"] - 20, PHONE["height"] // 2)
    await expect(menu).to_have_attribute("aria-expanded", "false")
    await expect(sidebar).to_be_hidden()
    # Open, pick the other conversation: it opens and the drawer closes.
    await menu.click()
    await page.locator("#conversations a", has_text="another conversation").click()
    await expect(menu).to_have_attribute("aria-expanded", "false")
    await expect(sidebar).to_be_hidden()
    await expect(last_reply(page).locator(".body")).to_have_text("Elsewhere.", timeout=WAIT)
    assert await page.evaluate("() => location.hash") == "#other"


async def test_a_markdown_table_renders_as_a_table_and_a_wide_one_scrolls_inside_it(
    phone: Page, make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url}, llmconnect_model="local/fake"
    )
    page = phone
    llm_server.enqueue(Reply(text=TABLE, delay=0.01))
    await open_chat(page, server, "table", "local/fake")
    await send(page, "a table")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
    for _ in range(2):  # as streamed, then as a reload renders the stored conversation
        table = reply.locator(".body table")
        await expect(table).to_have_count(1, timeout=WAIT)
        await expect(table.locator("thead th")).to_have_text(["Model", "Input", "Note"])
        rows = table.locator("tbody tr")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0).locator("td")).to_have_text(["a|b", "1.5", "bold | bar"])
        await expect(rows.nth(0).locator("td code")).to_have_text("a|b")
        await expect(rows.nth(0).locator("td strong")).to_have_text("bold")
        assert await rows.nth(0).locator("td").nth(1).get_attribute("class") == "al-right"
        assert await rows.nth(0).locator("td").nth(2).get_attribute("class") == "al-center"
        assert await table.locator("th").nth(0).get_attribute("class") == "al-left"
        # A cell's HTML is text; its link is a checked link.
        await expect(rows.nth(1).locator("td").nth(0)).to_have_text(
            '<img src=x onerror="window.pwned=1">'
        )
        assert await reply.locator("img, [onerror]").count() == 0
        assert await rows.nth(1).locator("a").get_attribute("href") == "https://example.test/a_b"
        await expect(reply.locator(".body p")).to_have_text(["Prices:", "After."])
        await page.reload()
        reply = last_reply(page)
        await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
    assert await page.evaluate("() => window.pwned") is None

    llm_server.enqueue(Reply(text=WIDE_TABLE))
    await send(page, "a wide table")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
    await expect(reply.locator(".body table th")).to_have_count(12)
    await scrolls_inside(page, ".body .table")
    assert await page_width(page) <= PHONE["width"]


async def test_reloading_the_page_adds_no_conversation(phone: Page, make_web: ServeWeb) -> None:
    server = await make_web()
    page = phone
    await open_chat(page, server, "talked")
    await send(page, "hello")
    await expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=WAIT)
    listed = page.locator("#conversations li")
    await expect(listed).to_have_count(1, timeout=WAIT)

    # The bare address: one empty conversation to type into, then the same one again.
    await page.goto(server.url)
    await page.wait_for_function("() => location.hash.length > 1", timeout=WAIT)
    empty = await page.evaluate("() => location.hash")
    assert empty != "#talked"
    await expect(listed).to_have_count(2, timeout=WAIT)
    for _ in range(2):
        await page.reload()
        await expect(page.locator("#status")).to_have_text("idle", timeout=WAIT)
        await expect(listed).to_have_count(2, timeout=WAIT)
        assert await page.evaluate("() => location.hash") == empty
    for _ in range(2):
        await page.goto(server.url)
        await page.wait_for_function("() => location.hash.length > 1", timeout=WAIT)
        assert await page.evaluate("() => location.hash") == empty
        await expect(listed).to_have_count(2, timeout=WAIT)
    # "New chat" on the empty conversation stays on it.
    await page.click("#menu")
    await page.click("#new-chat")
    await expect(page.locator("#input")).to_be_focused()
    assert await page.evaluate("() => location.hash") == empty
    ids = await page.evaluate(
        "async () => (await (await fetch('/api/conversations')).json())"
        ".conversations.map((c) => c.id)"
    )
    assert sorted(ids) == sorted(["talked", empty[1:]])


async def test_at_1280_px_the_sidebar_shows_without_the_menu_button(
    page: Page, make_web: ServeWeb
) -> None:
    server = await make_web()
    await page.set_viewport_size({"width": 1280, "height": 800})
    await open_chat(page, server, "desk")
    await send(page, "hello")
    await expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=WAIT)
    await expect(page.locator("#menu")).to_be_hidden()
    await expect(page.locator("#sidebar")).to_be_visible()
    await expect(page.locator("#scrim")).to_be_hidden()
    side = await page.locator("#sidebar").bounding_box()
    main = await page.locator("main").bounding_box()
    assert side is not None
    assert main is not None
    assert (side["x"], side["width"]) == (0, 240)
    assert (main["x"], main["width"]) == (240, 1280 - 240)
    await page.locator("#conversations a", has_text="hello").click()
    await expect(page.locator("#sidebar")).to_be_visible()
    # Narrowed to a phone's width, the same page turns the sidebar into the drawer; widened
    # again with the drawer open, the desktop layout comes back whole.
    await page.set_viewport_size(PHONE)
    await expect(page.locator("#sidebar")).to_be_hidden()
    await page.click("#menu")
    await expect(page.locator("#sidebar")).to_be_visible()
    await page.set_viewport_size({"width": 1280, "height": 800})
    await expect(page.locator("#scrim")).to_be_hidden()
    await expect(page.locator("#menu")).to_be_hidden()
    await expect(page.locator("#menu")).to_have_attribute("aria-expanded", "false")
    await page.wait_for_function(
        "() => document.querySelector('#sidebar').getBoundingClientRect().x === 0", timeout=WAIT
    )
    assert await page.locator("#sidebar").bounding_box() == side


FENCED = """Before.

~~~python
x = *1* <b>
~~~

````md
```js
inner
```
````

```
one
```text
two
```

After **bold**."""


async def test_tilde_fences_and_a_longer_fence_holding_a_shorter_one_render_as_code(
    page: Page, make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    """The page reads fences as core/fences.py does: ~~~ fences; ``` lines inside a ```` fence
    are code (not a fence that would end the block early), and so is a ```text line inside a ```
    fence (a closing fence has no info string)."""
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url}, llmconnect_model="local/fake"
    )
    llm_server.enqueue(Reply(text=FENCED, delay=0.01))
    await open_chat(page, server, "fences", "local/fake")
    await send(page, "show me code")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
    for _ in range(2):  # as streamed, then as a reload renders the stored conversation
        blocks = reply.locator(".body pre code")
        await expect(blocks).to_have_count(3, timeout=WAIT)
        assert await blocks.nth(0).text_content() == "x = *1* <b>"
        assert await blocks.nth(0).get_attribute("class") == "language-python"
        assert await blocks.nth(1).text_content() == "```js\ninner\n```"
        assert await blocks.nth(1).get_attribute("class") == "language-md"
        assert await blocks.nth(2).text_content() == "one\n```text\ntwo"
        await expect(reply.locator(".body strong")).to_have_text("bold")
        await expect(reply.locator(".body p")).to_have_text(["Before.", "After bold."])
        await page.reload()
        reply = last_reply(page)
        await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)


async def test_an_error_shows_the_servers_note(
    page: Page, make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/fake",
        llm_max_retries=0,
    )
    llm_server.enqueue(Fail(status=500))
    await open_chat(page, server, "failing", "local/fake")
    await send(page, "hello")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "error", timeout=WAIT)
    done = server.engine.reply_for(server.web.key("failing"))
    assert done is not None
    note = final_note(done)
    assert note is not None
    assert note.startswith("⚠️ The provider is unavailable")
    await expect(reply.locator(".note")).to_have_text(note)
    await expect(page.locator("#status")).to_have_text("error")
    await page.reload()  # the stored conversation carries the same note
    await expect(last_reply(page).locator(".note")).to_have_text(note, timeout=WAIT)


def _code_blocks(text: str) -> list[str]:
    """The code blocks of ``text`` as core.fences reads them (each code line loses up to as
    many leading spaces as its opening fence had, as CommonMark says)."""
    blocks: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        fence = opens(lines[i])
        i += 1
        if fence is None:
            continue
        indent = len(lines[i - 1]) - len(lines[i - 1].lstrip(" "))
        code: list[str] = []
        while i < len(lines) and not closes(lines[i], fence):
            line = lines[i]
            code.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            i += 1
        i += 1  # the closing fence
        blocks.append("\n".join(code))
    return blocks


async def test_the_page_finds_the_code_blocks_core_fences_finds(
    page: Page, make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    """The page's fence scanner against core.fences on generated fence-like lines (fixed seed)."""
    pieces = ["```", "````", "~~~", "~~~~", "`", "~", " ", "   ", "\t", "a", "py"]
    rng = random.Random(12)
    samples = [
        "\n".join(
            ["start"]
            + ["".join(rng.choices(pieces, k=rng.randint(0, 4))) for _ in range(rng.randint(3, 9))]
            + ["end"]
        )
        for _ in range(10)
    ]
    assert sum(bool(_code_blocks(s)) for s in samples) >= 5  # the samples do hold fences
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url}, llmconnect_model="local/fake"
    )
    await open_chat(page, server, "generated", "local/fake")
    for n, sample in enumerate(samples):
        llm_server.enqueue(Reply(text=sample))
        await send(page, f"sample {n}")
        reply = last_reply(page)
        await expect(page.locator("#messages .msg.assistant")).to_have_count(n + 1, timeout=WAIT)
        await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
        shown = await reply.locator(".body pre code").all_text_contents()
        assert shown == _code_blocks(sample), sample
        await expect(page.locator("#send")).to_be_enabled(timeout=WAIT)  # ready for the next


async def test_status_button_and_the_daily_limit_refusal(page: Page, make_web: ServeWeb) -> None:
    """CHANNEL_DAILY_TOKENS in the page: the Status button shows the tokens used here, and a
    prompt past the limit is refused with when it resets (the echo model reports its usage)."""
    server = await make_web(channel_daily_tokens=1)
    await open_chat(page, server, "quota")
    await send(page, "hello there")
    await expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=WAIT)
    await page.click("#usage")
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("Tokens here today (UTC):", timeout=WAIT)
    await expect(notice).to_contain_text("Price of echo/echo: free")
    await expect(notice).to_have_attribute("data-kind", "info")
    await send(page, "and again")
    await expect(notice).to_contain_text(
        "This conversation has used its 1 tokens for today", timeout=WAIT
    )
    await expect(notice).to_contain_text("(00:00 UTC).")
    await expect(notice).to_have_attribute("data-kind", "error")
    await expect(page.locator("#messages .msg.user .body")).to_have_text(["hello there"])


async def test_reasoning_status_then_a_collapsed_section_with_full(
    page: Page, make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    env = {"LOCAL_BASE_URL": llm_server.openai_base_url}
    # status: the thinking line while the model thinks, gone with the answer, no reasoning
    server = await make_web(env=env, llmconnect_model="local/fake", show_reasoning="status")
    gate = asyncio.Event()
    llm_server.enqueue(
        Reply(deltas=["The ", "answer."], reasoning="Hidden thoughts.", text_gate=gate)
    )
    await open_chat(page, server, "thinks", "local/fake")
    await send(page, "why?")
    reply = last_reply(page)
    await expect(reply.locator(".body")).to_have_text(
        re.compile(r"💭 thinking… \(\d+ s\)"), timeout=WAIT
    )
    gate.set()
    await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
    await expect(reply.locator(".body")).to_have_text("The answer.")
    assert await reply.locator("details").count() == 0
    assert "Hidden" not in await page.locator("#messages").inner_text()

    # full: the reasoning in a collapsed <details> above the answer, kept after the reload
    # of the conversation the page does at the end
    server = await make_web(env=env, llmconnect_model="local/fake", show_reasoning="full")
    llm_server.enqueue(Reply(deltas=["The ", "answer."], reasoning="Shown thoughts."))
    await open_chat(page, server, "shows", "local/fake")
    await send(page, "why?")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
    await expect(reply.locator(".body")).to_have_text("The answer.", timeout=WAIT)
    details = reply.locator("details.reasoning")
    await expect(details).to_have_count(1, timeout=WAIT)
    assert await details.get_attribute("open") is None  # collapsed
    await expect(details.locator(".thought")).to_have_text("Shown thoughts.")
    assert not await details.locator(".thought").is_visible()
    await details.locator("summary").click()
    await expect(details.locator(".thought")).to_be_visible()
    # away to another conversation and back (same page): redrawn from the server's JSON, which
    # has no reasoning; the page still has it
    await page.evaluate("location.hash = '#elsewhere'")
    await expect(page.locator("#messages .msg")).to_have_count(0, timeout=WAIT)
    await page.evaluate("location.hash = '#shows'")
    await expect(last_reply(page).locator(".body")).to_have_text("The answer.", timeout=WAIT)
    await expect(last_reply(page).locator("details.reasoning .thought")).to_have_text(
        "Shown thoughts."
    )


async def test_a_file_attached_with_the_button_reaches_the_model_and_shows_as_a_thumbnail(
    page: Page, make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    from tests.bots.web.test_app import png_bytes
    from tests.fakes.llm_server import ReceivedPart

    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/gpt-4o-mini",
    )
    await open_chat(page, server, "attach", "local/gpt-4o-mini")
    png = png_bytes()
    await page.set_input_files(
        "#file-input",
        files=[
            {"name": "dot.png", "mimeType": "image/png", "buffer": png},
            {"name": "a.py", "mimeType": "text/x-python", "buffer": b"print(2)\n"},
        ],
    )
    await expect(page.locator("#pending-files .file-chip")).to_have_count(2)
    await expect(page.locator("#pending-files img.thumb")).to_have_count(1)
    await send(page, "what is this?")
    await expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=WAIT)
    await expect(page.locator("#pending-files")).to_be_hidden()
    assert llm_server.requests[-1].parts() == [  # the files in the order attached
        ReceivedPart("text", "text", text="what is this?"),
        ReceivedPart("image", "image_url", media_type="image/png", data=png),
        ReceivedPart("text", "text", text="a.py\n```py\nprint(2)\n```"),
    ]
    await page.reload()  # the stored conversation shows the files: the image from the server
    user = page.locator("#messages .msg.user").last
    await expect(user.locator(".file-chip")).to_have_count(2, timeout=WAIT)
    await expect(user.locator("img.thumb")).to_have_attribute("src", "/chat/attach/attachment/0/0")
    await page.wait_for_function(
        "() => document.querySelector('#messages .msg.user img.thumb').naturalWidth === 6",
        timeout=WAIT,
    )
    await expect(user.locator(".file-chip").last).to_contain_text("a.py")


async def test_a_file_dropped_on_the_chat_or_pasted_is_sent_with_the_message(
    page: Page, make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url}, llmconnect_model="local/fake"
    )
    await open_chat(page, server, "dropped", "local/fake")
    await page.evaluate(
        """() => {
            const drop = new DataTransfer();
            drop.items.add(new File(["dropped text\\n"], "drop.txt", { type: "text/plain" }));
            const main = document.querySelector("main");
            main.dispatchEvent(new DragEvent("dragover", { dataTransfer: drop, bubbles: true,
                                                           cancelable: true }));
            main.dispatchEvent(new DragEvent("drop", { dataTransfer: drop, bubbles: true,
                                                       cancelable: true }));
            const paste = new DataTransfer();
            paste.items.add(new File(["x = 5\\n"], "p.py", { type: "text/x-python" }));
            document.getElementById("input").dispatchEvent(
                new ClipboardEvent("paste", { clipboardData: paste, bubbles: true,
                                              cancelable: true }));
        }"""
    )
    await expect(page.locator("#pending-files .file-chip")).to_have_count(2)
    await send(page, "two files")
    await expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=WAIT)
    (content,) = [
        m["content"] for m in llm_server.requests[-1].json["messages"] if m["role"] == "user"
    ]
    assert content == "two files\n\ndrop.txt\n```txt\ndropped text\n```\n\np.py\n```py\nx = 5\n```"
    await expect(page.locator("#messages .msg.user").last.locator(".file-chip")).to_have_count(2)


async def test_the_pending_reply_shows_before_the_llm_is_asked_and_a_refusal_takes_it_back(
    page: Page, make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/fake",
        max_input_chars=50,
    )
    seen: list[object] = []

    async def look(request: RecordedRequest) -> None:
        # At the moment the LLM stand-in receives a chat request: what does the page show?
        if request.protocol is None:
            return  # the model list
        seen.append(
            await page.evaluate(
                """() => {
                    const el = [...document.querySelectorAll('#messages .msg.assistant')].pop();
                    return el ? el.dataset.status : null;
                }"""
            )
        )

    async def slow_answer(route: Route) -> None:
        # The network back to the page is slow: the server's answer to send-message reaches the
        # page only after the LLM was asked (or refused), so what the page showed then was shown
        # before the answer came.
        response = await route.fetch()
        if response.ok:
            for _ in range(2000):
                if seen:
                    break
                await asyncio.sleep(0.01)
        await route.fulfill(response=response)

    llm_server.on_request = look
    await page.route("**/send-message", slow_answer)
    try:
        await open_chat(page, server, "heard", model="local/fake")
        await send(page, "are you there")
        reply = last_reply(page)
        await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
        await expect(reply.locator(".body")).to_have_text("You said: are you there")
        assert seen == ["pending"]
        await expect(page.locator("#status")).to_have_attribute(
            "data-status", "complete", timeout=WAIT
        )

        await send(page, "x" * 51)  # over MAX_INPUT_CHARS: refused, and taken back
        await expect(page.locator("#notice")).to_contain_text("the limit is 50", timeout=WAIT)
        await expect(page.locator("#messages .msg.user .body")).to_have_text(["are you there"])
        await expect(page.locator("#messages .msg.assistant")).to_have_count(1)
        await expect(page.locator("#status")).to_have_attribute("data-status", "complete")
        assert seen == ["pending"]
    finally:
        llm_server.on_request = None
        await page.unroute("**/send-message")


# -- reply buttons --------------------------------------------------------------------------------


async def test_the_reply_buttons_stop_regenerate_and_rate(page: Page, make_web: ServeWeb) -> None:
    server = await make_web(options={"delay": 0.05})
    await open_chat(page, server, "buttons")
    await send(page, PROMPT)
    reply = last_reply(page)
    # While it is written: Stop on the reply, and only Stop.
    await expect(reply.locator(".body")).to_contain_text("[echo]", timeout=WAIT)
    await expect(reply.locator("button.ctl")).to_have_count(1, timeout=WAIT)
    await reply.locator("button.ctl-stop").click()
    await expect(page.locator("#status")).to_have_text("stopped", timeout=WAIT)
    await expect(reply.locator(".note")).to_have_text("⏹ stopped")
    shown = await reply.locator(".body").inner_text()
    assert echo_text(PROMPT).startswith(shown.strip())
    # Stopped: Regenerate, but nothing to rate.
    await expect(reply.locator("button.ctl")).to_have_text(["🔄 Regenerate"], timeout=WAIT)

    await reply.locator("button.ctl-regenerate").click()
    await expect(page.locator("#status")).to_have_text("complete", timeout=WAIT)
    reply = last_reply(page)
    await expect(reply.locator(".body")).to_have_text(echo_text(PROMPT), timeout=WAIT)
    await expect(page.locator("#messages .msg")).to_have_count(2)  # replaced, not added
    await expect(reply.locator("button.ctl")).to_have_text(["🔄 Regenerate", "👍", "👎"])

    await reply.locator("button.ctl-up").click()
    await expect(reply.locator("button.ctl-up")).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#notice")).to_have_text("Thanks for the feedback: 👍.")
    await reply.locator("button.ctl-down").click()
    await expect(reply.locator("button.ctl-down")).to_have_attribute("aria-pressed", "true")
    await expect(reply.locator("button.ctl-up")).to_have_attribute("aria-pressed", "false")
    counts = await server.engine.feedback_of(server.web.key("buttons"))
    assert counts is not None
    assert {m: (c.up, c.down) for m, c in counts.items()} == {"echo/echo": (0, 1)}
    # The vote shows again after a reload.
    await page.reload()
    await expect(last_reply(page).locator("button.ctl-down")).to_have_attribute(
        "aria-pressed", "true", timeout=WAIT
    )


async def test_only_the_latest_reply_carries_buttons(page: Page, make_web: ServeWeb) -> None:
    server = await make_web()
    await open_chat(page, server, "latest")
    for prompt in ("one", "two"):
        await send(page, prompt)
        await expect(page.locator("#status")).to_have_text("complete", timeout=WAIT)
    replies = page.locator("#messages .msg.assistant")
    await expect(replies).to_have_count(2)
    await expect(replies.nth(0).locator("button.ctl")).to_have_count(0)
    await expect(replies.nth(1).locator("button.ctl")).to_have_count(3)


async def test_without_reply_buttons_the_page_shows_none(page: Page, make_web: ServeWeb) -> None:
    server = await make_web(reply_buttons=False)
    await open_chat(page, server, "plain")
    await send(page, "hello")
    await expect(page.locator("#status")).to_have_text("complete", timeout=WAIT)
    await expect(last_reply(page).locator("button.ctl")).to_have_count(0)


async def test_a_confirm_tool_call_is_approved_with_the_page_s_button(
    page: Page, make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/fake",
        mcp_servers=stdio_servers("files", confirm=True),
        mcp_default_servers="files",
    )
    await server.engine.start()
    await server.engine.mcp.wait_ready()
    llm_server.enqueue(
        Reply(text="Adding.", tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 3})]),
        Reply(text="It is 5."),
    )
    await open_chat(page, server, "confirm", "local/fake")
    await send(page, "2 + 3?")
    reply = last_reply(page)
    approval = reply.locator(".approvals .approval")
    await expect(approval).to_have_count(1, timeout=WAIT)
    await expect(approval.locator("span")).to_have_text(
        "🔧 files.add(a=2, b=3) — waiting for approval"
    )
    chats = [r for r in llm_server.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 1  # the call waits for the button
    await approval.locator("button.ctl-approve").click()
    await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
    await expect(reply.locator(".body p")).to_have_text(["Adding.", "It is 5."], timeout=WAIT)
    await expect(reply.locator(".approvals")).to_have_count(0)
    await expect(reply.locator(".note")).to_have_text("🔧 files.add")
    assert llm_server.requests[-1].tool_results()[0].content == "5"
