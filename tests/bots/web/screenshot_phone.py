"""Writes docs/web-chat-phone.png: the web chat at a phone's width (390 by 800 CSS px, drawn at twice that).

Not a test (pytest does not collect it): the real app on loopback, the LLM stand-in answering
with a code block and a table, Debian's chromium through Playwright, as the browser tests run.

    .venv/bin/python -m tests.bots.web.screenshot_phone [output.png]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from playwright.async_api import async_playwright, expect

from tests.bots.web.conftest import serve_web
from tests.bots.web.test_browser import CHROMIUM, CHROMIUM_ARGS, PHONE, WAIT
from tests.fakes.llm_server import FakeLLMServer, Reply

OUT = Path(__file__).resolve().parents[3] / "docs" / "web-chat-phone.png"
ANSWER = """Here is a comparison:

| Store | Survives a restart | Shared by processes |
|:------|:------------------:|:-------------------:|
| memory | no | no |
| SQLite | yes | one host |
| Redis | yes | yes |

And the setting:

```bash
STORE_URL=redis://localhost:6379/0 WEB_AUTH_TOKEN=... llmconnect run --host 0.0.0.0
```"""


async def main(out: Path) -> None:
    async with FakeLLMServer(models=["fake"]) as llm:
        env = {"LOCAL_BASE_URL": llm.openai_base_url}
        async with (
            serve_web(env=env, llmconnect_model="local/fake") as server,
            async_playwright() as playwright,
        ):
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            context = await browser.new_context(
                viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
            )
            page = await context.new_page()
            await page.goto(f"{server.url}/#stores")
            await expect(page.locator("#model")).to_have_value("local/fake", timeout=WAIT)
            llm.enqueue(Reply(text=ANSWER))
            await page.fill("#input", "Which conversation store should I use?")
            await page.press("#input", "Enter")
            reply = page.locator("#messages .msg.assistant").last
            await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
            await expect(reply.locator("table")).to_have_count(1, timeout=WAIT)
            await page.screenshot(path=str(out))
            await browser.close()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    asyncio.run(main(target))
    print(target)
