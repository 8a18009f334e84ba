"""Attacks on the Slack bot through its real HTTP entry: answers that try to ping, links that try to
be something else, and signed requests whose content is not what Slack sends.

Every answer is read the way Slack would get it: every text field of every Web API call the
stand-in received (``text``, ``markdown_text``, ``chunks``, ``blocks``), in both streaming modes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.conversations import ConversationKey
from tests.bots.slack.conftest import SECRET, TEAM, next_ts
from tests.fakes.llm_server import Fail, FakeLLMServer, Reply
from tests.fakes.slack_api import FakeSlackAPI

from .conftest import CHANNEL, USER, BotMaker, Running, wait_for

MODES = ["update", "native"]
POSTING = (
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "chat.startStream",
    "chat.appendStream",
    "chat.stopStream",
)

# Answers a model could be talked into: every way we know to spell a Slack special mention.
BAITS = [
    "[hi](!channel) [u](@U0VICTIM) [g](!subteam^S123)",
    "<!channel> <!here> <!everyone> <!HERE> <!Channel> <!EVERYONE>",
    "<!here|x> <!channel|all> <@U0VICTIM|v> <@W123> <#C1|x> <#C1>",
    "<!subteam^S123|@team> <!date^1392734382^{date_pretty}|Feb 18> <!date^1^{date}^https://x.test|d>",
    "< !here> <! channel> <\t@U0VICTIM> <\n!everyone>",
    "&lt;!channel&gt; &#60;!here&#62; &#x3c;@U0VICTIM&#x3E; &LT;#C1&GT; &#060;!everyone&#062;",
    "[x]( !here) [y](<!channel>) [z](<@U0VICTIM>) [w](&#33;here) [v](&commat;U0VICTIM)",
    "see [r][ref] and [s]\n\n[ref]: !channel\n[s]: <@U0VICTIM>",
    "`<!channel>` and ```\n<!here> [a](!channel)\n``` and **<@U0VICTIM>** _<#C1>_",
    "[<!channel> & <@U1>](https://x.test/a) ![<!here>](!everyone)",
    "Hey @channel, @here and @everyone and @Here!",
]

# What users may type; Slack sends it encoded (`<` as `&lt;`) and the echo answers it back.
PROMPTS = [
    "&lt;!everyone&gt; &lt;!here|x&gt; &lt;@U0VICTIM&gt;",  # typed `<!everyone> ...`
    "&amp;lt;!channel&amp;gt; &amp;#60;!here&amp;#62;",  # typed `&lt;!channel&gt; ...`
    "<!here> <!channel> <!subteam^S123|@team> <@U0VICTIM|victim>",  # real mentions, decoded
    "[hi](!channel) [u](@U0VICTIM) ping them",
]

# In mrkdwn ``text`` a `<` is only ever a link to the web or a mail address.
MRKDWN_TOKEN = re.compile(r"<(?!https?://|mailto:)")
# In Markdown (``markdown_text``, chunks, markdown blocks) Slack renders links and entities itself.
MARKDOWN_BAIT = re.compile(
    r"<\s*[!@#]"  # <!here>, <@U1>, <#C1> (and spaced)
    r"|&(?:#[0-9]+|#x[0-9a-f]+|lt|gt|amp|excl|commat|num|vert|verbar|lpar|rpar|lsqb|rsqb"
    r"|lbrack|rbrack|colon);"  # a character reference spelling syntax: &lt;!here&gt;, &#33;
    r"|\]\s*\(\s*<?\s*[!@#]"  # [x](!channel), [x](<@U1>)
    r"|\]:\s*<?\s*[!@#]"  # [ref]: !channel
    r"|@(?:here|channel|everyone)\b",
    re.IGNORECASE,
)


def sent_fields(call_args: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(kind, text) of every text a Web API call carries; kind is ``mrkdwn`` or ``markdown``."""
    if isinstance(call_args.get("text"), str):
        yield "mrkdwn", call_args["text"]
    if isinstance(call_args.get("markdown_text"), str):
        yield "markdown", call_args["markdown_text"]
    chunks = call_args.get("chunks") or []
    if isinstance(chunks, str):
        chunks = json.loads(chunks)
    for chunk in chunks:
        yield "markdown", str(chunk.get("text", ""))
    blocks = call_args.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    yield from _block_texts(blocks, "mrkdwn")


def _block_texts(node: Any, kind: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, list):
        for item in node:
            yield from _block_texts(item, kind)
    elif isinstance(node, dict):
        kind = "markdown" if node.get("type") == "markdown" else kind
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                yield kind, value
            else:
                yield from _block_texts(value, kind)


def assert_pings_nobody(slack_api: FakeSlackAPI) -> list[str]:
    """Every text the bot sent is free of Slack special mentions; returns them."""
    texts = []
    calls = [c for c in slack_api.calls if c.method in POSTING]
    assert calls
    for call in calls:
        assert not call.args.get("link_names"), call
        assert call.args.get("parse") != "full", call
        for kind, text in sent_fields(call.args):
            bad = (MRKDWN_TOKEN if kind == "mrkdwn" else MARKDOWN_BAIT).search(text)
            assert bad is None, f"{call.method} {kind} {text!r} at {bad}"
            texts.append(text)
    for posts in slack_api.responses.values():
        for post in posts:
            for kind, text in sent_fields(post):
                assert (MRKDWN_TOKEN if kind == "mrkdwn" else MARKDOWN_BAIT).search(text) is None
    return texts


def pieces(text: str, size: int = 2) -> list[str]:
    """``text`` in small deltas, so that appends and edits cut through every token."""
    return [text[i : i + size] for i in range(0, len(text), size)]


async def answered(running: Running, slack_api: FakeSlackAPI, root: str) -> list[str]:
    """The final texts of the reply in thread ``root``, once its delivery is over."""
    key = ConversationKey("slack", f"{CHANNEL}/{root}")

    def done() -> bool:
        messages = slack_api.thread(CHANNEL, root)
        return (
            bool(messages)
            and not any(m.streaming for m in messages)
            and not running.bot._tasks
            and not running.engine.is_busy(key)
        )

    await wait_for(done, tries=2000)
    return slack_api.texts(CHANNEL, root)


async def ask(running: Running, slack_api: FakeSlackAPI, prompt: str) -> list[str]:
    root = next_ts()
    await running.slack.mention(prompt, thread_ts=root)
    return await answered(running, slack_api, root)


@pytest.mark.parametrize("mode", MODES)
async def test_no_answer_can_ping_in_any_streaming_mode(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, mode: str
) -> None:
    running = await make_bot(slack_streaming=mode)
    for bait in BAITS:
        llm.enqueue(Reply(deltas=pieces(bait), delay=0.002))
        shown = await ask(running, slack_api, "say the thing")
        assert shown, bait
    for prompt in PROMPTS:  # the echo model says back what was asked
        shown = await ask(running, slack_api, prompt)
        assert shown[-1].startswith("You said: ")
    assert_pings_nobody(slack_api)
    if mode == "native":
        assert slack_api.calls_to("chat.appendStream")  # really streamed, in pieces
        assert not slack_api.calls_to("chat.update")


@pytest.mark.parametrize("mode", MODES)
async def test_a_stream_cut_anywhere_still_pings_nobody(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, mode: str
) -> None:
    """One bait, delivered one character per delta: every split point is tried."""
    running = await make_bot(slack_streaming=mode)
    bait = "a<!here>b&lt;!channel&gt;c[d](@U0VICTIM)e <@W1> @everyone"
    llm.enqueue(Reply(deltas=list(bait), delay=0.002))
    await ask(running, slack_api, "slowly")
    assert_pings_nobody(slack_api)


async def test_a_native_stream_that_expires_goes_on_by_edits_that_ping_nobody(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="native")
    slack_api.expire_streams_after = 1  # the second append fails: the rest goes by chat.update
    bait = " ".join(BAITS)
    llm.enqueue(Reply(deltas=pieces(bait, 7), delay=0.002))
    await ask(running, slack_api, "expire")
    assert slack_api.calls_to("chat.update")
    assert_pings_nobody(slack_api)


@pytest.mark.parametrize("mode", MODES)
async def test_a_failed_answer_and_its_note_ping_nobody(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, mode: str
) -> None:
    """A failed answer's partial text and its note (under it, or alone) ping nobody either."""
    running = await make_bot(slack_streaming=mode)
    message = "<!channel> [x](!here) &lt;@U0VICTIM&gt; @everyone"
    llm.enqueue(Reply(deltas=["partial ", "answer <!here>"], error_after=2))
    llm.enqueue(Fail(500, {"error": {"message": message, "type": "server_error"}}))
    llm.enqueue(Fail(400, {"error": {"message": message, "type": "invalid_request_error"}}))
    for _ in range(3):
        await ask(running, slack_api, "fail")
    assert_pings_nobody(slack_api)


async def test_a_link_label_is_escaped_in_update_mode(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="update")
    llm.enqueue(Reply(text="[<!channel> & <@U1>](https://x.test/a)"))
    [shown] = await ask(running, slack_api, "link")
    assert shown == "<https://x.test/a|&lt;!channel&gt; &amp; &lt;@U1&gt;>"
    assert_pings_nobody(slack_api)


async def test_a_link_label_is_neutralised_in_native_mode(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_streaming="native")
    llm.enqueue(Reply(text="[<!channel> & <@U1>](https://x.test/a)"))
    [shown] = await ask(running, slack_api, "link")
    # Still a link to x.test whose label reads the same; a zero-width space breaks the tokens.
    assert shown == "[<\u200b!channel> & <\u200b@U1>](https://x.test/a)"
    assert_pings_nobody(slack_api)


LINKS = (
    "[docs](https://x.test/a) [mail](mailto:a@b.test) [js](javascript:void) "
    "[deep](slack://open?team=T1) [rel](/etc/passwd) [](tel:123) ![img](data:x)"
)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "update",
            "<https://x.test/a|docs> <mailto:a@b.test|mail> js deep rel tel:123 img",
        ),
        (
            "native",
            "[docs](https://x.test/a) [mail](mailto:a@b.test) js deep rel tel:123 img",
        ),
    ],
)
async def test_links_only_to_the_web_and_mail(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, mode: str, expected: str
) -> None:
    running = await make_bot(slack_streaming=mode)
    llm.enqueue(Reply(deltas=pieces(LINKS, 3), delay=0.002))
    [shown] = await ask(running, slack_api, "links")
    assert shown == expected
    assert_pings_nobody(slack_api)


# ------------------------------------------------------------------ signed but malformed requests


def signed_headers(body: bytes, timestamp: str, content_type: str) -> dict[str, str]:
    """Headers signed as Slack signs (over the raw bytes, whatever they are)."""
    base = b"v0:" + timestamp.encode() + b":" + body
    signature = "v0=" + hmac.new(SECRET.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
    }


async def post_raw(running: Running, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with running.slack.session.post(running.slack.url, data=body, headers=headers) as r:
        return r.status, await r.text()


EVENT = {
    "type": "app_mention",
    "user": USER,
    "text": "<@UBOT> hi",
    "ts": "1690000000.000001",
    "channel": CHANNEL,
    "team": TEAM,
}


@pytest.mark.parametrize(
    "timestamp",
    ["abc", "", " ", "12.5", "1e9", "-1", "0x10", "\u0661\u0667" + "\u0660" * 8, "9" * 5000],
)
async def test_a_signed_request_with_a_non_numeric_timestamp_gets_401(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer, timestamp: str
) -> None:
    running = await make_bot()
    body = running.slack.event_body(EVENT)
    headers = signed_headers(body, timestamp, "application/json")
    if not timestamp.isascii():  # aiohttp sends header values as latin-1: send the UTF-8 bytes
        headers["X-Slack-Request-Timestamp"] = timestamp.encode().decode("latin-1")
    status, answer = await post_raw(running, body, headers)
    assert status == 401, answer
    assert json.loads(answer) == {"error": "invalid request"}
    assert llm.requests == []
    assert [c.method for c in slack_api.calls] == []


MALFORMED: list[tuple[str, bytes, str]] = [
    ("not json", b'{"type": "event_callback", "event": {', "application/json"),
    ("json array", b"[1, 2, 3]", "application/json"),
    ("json string", b'"event_callback"', "application/json"),
    ("json null", b"null", "application/json"),
    ("json number", b"42", "application/json"),
    ("bad utf-8", b'{"type": "event_callback", "x": "\xff\xfe"}', "application/json"),
    ("nan", b'{"type": "event_callback", "n": NaN}', "application/json"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ("form payload not json", b"payload=%7Bnot+json", "application/x-www-form-urlencoded"),
    ("form payload array", b"payload=%5B1%2C2%5D", "application/x-www-form-urlencoded"),
    ("form bad utf-8", b"command=%2Fask&text=%FF%FE", "application/x-www-form-urlencoded"),
    ("event not an object", b'{"type": "event_callback", "event": "x"}', "application/json"),
    (
        "event fields of the wrong type",
        json.dumps(
            {
                "type": "event_callback",
                "team_id": TEAM,
                "event_id": "EvBAD1",
                "event": {"type": "app_mention", "user": ["U1"], "text": 5, "channel": {}},
            }
        ).encode(),
        "application/json",
    ),
    (
        "message event of the wrong type",
        json.dumps(
            {
                "type": "event_callback",
                "team_id": TEAM,
                "event_id": "EvBAD2",
                "event": {"type": "message", "channel_type": "im", "user": 7, "text": []},
            }
        ).encode(),
        "application/json",
    ),
    (
        "command fields repeated",
        b"command=%2Fask&command=%2Fmodel&text=a&text=b&team_id=T0001",
        "application/x-www-form-urlencoded",
    ),
    ("not a known content type", b"\x00\x01\x02", "application/octet-stream"),
    ("unknown charset", b'{"type": "event_callback"}', "application/json; charset=no-such"),
    ("utf-16 charset", b'{"type": "event_callback", "x": 1}', "application/json; charset=utf-16"),
]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [pytest.param(b, c, id=name) for name, b, c in MALFORMED],
)
async def test_a_signed_malformed_body_gets_a_4xx_and_the_bot_lives_on(
    make_bot: BotMaker,
    slack_api: FakeSlackAPI,
    llm: FakeLLMServer,
    body: bytes,
    content_type: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = await make_bot()
    status, answer = await post_raw(
        running, body, signed_headers(body, str(int(time.time())), content_type)
    )
    assert status in (200, 400, 401, 404), (status, answer)
    assert status < 500
    assert "Traceback" not in answer
    assert llm.requests == []
    # The bot still answers a good request.
    root = next_ts()
    await running.slack.mention("still there?", thread_ts=root)
    assert await answered(running, slack_api, root) == ["You said: still there?"]
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], [
        r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")
    ]


async def test_a_signed_body_at_slack_max_body_bytes_is_read_one_byte_more_is_413(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot(slack_max_body_bytes=4096)
    head, tail = b'{"type": "event_callback", "pad": "', b'"}'

    async def post(size: int) -> int:
        body = head + b"x" * (size - len(head) - len(tail)) + tail
        assert len(body) == size
        status, _ = await post_raw(
            running, body, signed_headers(body, str(int(time.time())), "application/json")
        )
        return status

    assert await post(4096) != 413  # read, then handled (an event with nothing to answer)
    assert await post(4097) == 413
    assert llm.requests == []


async def test_a_signed_body_over_1_mib_gets_413(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    running = await make_bot()
    body = b'{"type": "event_callback", "pad": "' + b"x" * (1024 * 1024) + b'"}'
    status, _ = await post_raw(
        running, body, signed_headers(body, str(int(time.time())), "application/json")
    )
    assert status == 413
    assert llm.requests == []


async def test_a_malformed_body_without_a_valid_signature_gets_401_not_400(
    make_bot: BotMaker, slack_api: FakeSlackAPI, llm: FakeLLMServer
) -> None:
    """The signature is checked before the body is read: nobody learns how we parse."""
    running = await make_bot()
    body = b"{not json"
    headers = signed_headers(body, str(int(time.time())), "application/json")
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    status, answer = await post_raw(running, body, headers)
    assert (status, json.loads(answer)) == (401, {"error": "invalid request"})
