"""Files shared with Slack messages (bots/slack/files.py), through bolt with signed requests
against the Slack stand-in, which serves ``url_private_download`` with the auth check Slack's
file host has (a sign-in page without the bot token) and ``files.info``."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from PIL import Image

from core.clock import FakeClock
from tests.fakes.llm_server import FakeLLMServer, ReceivedPart, Reply
from tests.fakes.slack_api import SIGN_IN_PAGE, FakeSlackAPI

from .conftest import CHANNEL, DM, TEAM, USER, BotMaker, SlackClient, next_ts, wait_for


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (250, 250, 0)).save(out, "PNG")
    return out.getvalue()


async def mention_with(
    slack: SlackClient, text: str, files: list[dict[str, Any]], *, channel: str = CHANNEL
) -> str:
    ts = next_ts()
    event = {
        "type": "app_mention",
        "user": USER,
        "text": f"<@UBOT> {text}",
        "ts": ts,
        "channel": channel,
        "team": TEAM,
        "event_ts": ts,
        "files": files,
    }
    status, _ = await slack.event(event)
    assert status == 200
    return ts


def user_content(llm: FakeLLMServer) -> Any:
    return [m["content"] for m in llm.requests[-1].json["messages"] if m["role"] == "user"][-1]


async def test_an_image_reaches_a_vision_model_downloaded_with_the_bot_token(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(
        slack_files_url=slack_api.files_url, llmconnect_model="local/gpt-4o-mini"
    )
    image = png()
    llm.enqueue(Reply(text="yellow"))
    await mention_with(running.slack, "colour?", [slack_api.add_file("y.png", image, "image/png")])
    await wait_for(lambda: slack_api.texts(CHANNEL) == ["yellow"])
    assert llm.requests[-1].parts() == [
        ReceivedPart("text", "text", text="colour?"),
        ReceivedPart("image", "image_url", media_type="image/png", data=image),
    ]
    assert [authorized for _, authorized in slack_api.downloads] == [True]


async def test_a_file_shared_in_a_dm_is_inlined(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_files_url=slack_api.files_url)
    ts = next_ts()
    event = {
        "type": "message",
        "subtype": "file_share",
        "channel_type": "im",
        "user": USER,
        "text": "review this",
        "ts": ts,
        "channel": DM,
        "team": TEAM,
        "event_ts": ts,
        "files": [slack_api.add_file("a.py", b"x = 1\n", "text/x-python")],
    }
    status, _ = await running.slack.event(event)
    assert status == 200
    await wait_for(lambda: len(llm.requests) == 1)
    assert user_content(llm) == "review this\n\na.py\n```py\nx = 1\n```"


async def test_a_file_still_processing_is_looked_up_again_then_read(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_files_url=slack_api.files_url)
    file = slack_api.add_file("notes.md", b"# plan", "text/markdown", processing=1)
    assert file == {"id": file["id"], "file_access": "check_file_info"}
    await mention_with(running.slack, "summarise", [file])
    await wait_for(lambda: len(llm.requests) == 1, tries=3000)
    assert len(slack_api.calls_to("files.info")) == 2  # processing, then ready
    assert user_content(llm) == "summarise\n\nnotes.md\n```md\n# plan\n```"


async def test_a_file_never_ready_and_a_file_off_the_host_get_lines_and_the_text_is_answered(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    clock = FakeClock(100.0)
    running = await make_bot(clock=clock, slack_files_url=slack_api.files_url)
    never = slack_api.add_file("slow.png", png(), "image/png", processing=100)
    elsewhere = slack_api.add_file("x.txt", b"x") | {
        "url_private_download": "https://evil.example/x.txt"
    }
    llm.enqueue(Reply(text="hi there"))
    await mention_with(running.slack, "hello", [never, elsewhere])
    for _ in range(200):  # the bounded retries wait on the bot's clock
        texts = slack_api.texts(CHANNEL)
        if texts and "hi there" in texts[-1] and not slack_api.bot_messages()[-1].streaming:
            break
        await clock.advance(1.0)
        await asyncio.sleep(0.01)
    assert slack_api.texts(CHANNEL)[-1] == (
        "hi there\n"
        "Skipped slow.png: the file was not ready in time.\n"
        "Skipped x.txt: not a file on this platform's file host."
    )
    assert len(slack_api.calls_to("files.info")) == 4  # bounded: once and three retries
    assert slack_api.downloads == []  # neither was fetched
    assert llm.requests[-1].parts() == [ReceivedPart("text", "text", text="hello")]


async def test_without_the_token_the_file_host_sends_a_sign_in_page(
    slack_api: FakeSlackAPI,
) -> None:
    """The stand-in's auth check, as Slack's file host: what a bot without the token would get
    (the Downloader then skips the file: core's tests cover that line)."""
    import httpx

    file = slack_api.add_file("a.txt", b"secret")
    async with httpx.AsyncClient() as client:
        anonymous = await client.get(file["url_private_download"])
        signed = await client.get(
            file["url_private_download"],
            headers={"Authorization": f"Bearer {slack_api.bot_token}"},
        )
    assert anonymous.status_code == 200
    assert anonymous.headers["content-type"].startswith("text/html")
    assert anonymous.content == SIGN_IN_PAGE
    assert signed.content == b"secret"


async def test_a_file_files_info_cannot_find_is_a_line_and_the_text_is_answered(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_files_url=slack_api.files_url)
    llm.enqueue(Reply(text="ok"))
    await mention_with(running.slack, "hi", [{"id": "FGONE", "file_access": "check_file_info"}])
    expected = "ok\nSkipped FGONE: the file could not be looked up."
    await wait_for(lambda: slack_api.texts(CHANNEL) == [expected])
    assert [c.error for c in slack_api.calls_to("files.info")] == ["file_not_found"]
