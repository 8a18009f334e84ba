"""Attacks on the web chat, through the real app on a real uvicorn server (and, where the
deployment matters, through ``llmconnect run``'s own :class:`~bots.run.Runner`): cross-site
requests, bad text, forwarded addresses, oversized bodies, echoed input, a store that goes away,
too many streams, links the Markdown must not break, forged sign-ins.

Each test states the outcome a user (or the operator) must see; none checks timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiohttp import web as aioweb
from httpx_sse import aconnect_sse
from playwright.async_api import Page, expect

from bots.run import Runner
from bots.web import WebFrontEnd, WebSettings
from bots.web.guard import COOKIE, SIGN_IN_FAILURES, session_value
from core.conversations import Conversation, ConversationKey, Message, Status
from core.engine import STORE_UNAVAILABLE
from core.settings import SettingsError, load_settings
from core.stores.sqlite_store import SqliteStore
from tests.bots.web import conftest as web_fixtures
from tests.bots.web import test_browser as browser_tests
from tests.bots.web.conftest import ServeWeb, echo_text, serve_web

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The web tests' own fixtures, reused by name.
make_web = web_fixtures.make_web
browser = browser_tests.browser
page = browser_tests.page
needs_chromium = pytest.mark.skipif(
    not Path(browser_tests.CHROMIUM).exists(), reason="needs Debian's chromium"
)

TOKEN = "web-attack-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
#: What a script (curl, httpx) sends: no Origin, no Sec-Fetch-Site, a JSON body.
JSON_BODY: dict[str, Any] = {"json": {}}
BAD = "\ud800 x"  # a lone surrogate: valid JSON ("\ud800"), not encodable as UTF-8
WAIT = browser_tests.WAIT


def client_for(url: str, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=60, **kwargs)


async def end_of_reply(client: httpx.AsyncClient, conv: str) -> dict[str, Any]:
    async with aconnect_sse(client, "GET", f"/chat/{conv}/bot-stream") as source:
        async for event in source.aiter_sse():
            if event.event == "end":
                return json.loads(event.data)  # type: ignore[no-any-return]
    raise AssertionError("the stream closed without an end event")


async def chat_with_history(client: httpx.AsyncClient, conv: str, text: str) -> None:
    sent = await client.post(f"/chat/{conv}/send-message", json={"text": text})
    assert sent.status_code == 202, sent.text
    assert (await end_of_reply(client, conv))["status"] == "complete"


def cookie_header(value: str) -> dict[str, str]:
    """The session cookie as a browser sends it (set per request, not kept by the client)."""
    return {"Cookie": f"{COOKIE}={value}"}


def raw_json(text: str) -> bytes:
    """``{"text": text}`` as JSON with every non-ASCII character escaped (lone surrogates too)."""
    return json.dumps({"text": text}).encode()


@contextlib.asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[str]:
    """``llmconnect run``'s Runner (the web chat only) on a free port; its URL."""
    web = WebFrontEnd(load_settings(WebSettings, web_port=0, **settings))
    runner = Runner(load_settings(**settings), [web], env={}, out=StringIO())
    task = asyncio.create_task(runner.run(install_signal_handlers=False))
    started = asyncio.create_task(runner.started.wait())
    await asyncio.wait([task, started], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    try:
        assert runner.started.is_set(), "run did not start"
        assert web.url is not None
        yield web.url
    finally:
        runner.request_stop()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def attacker_site(script: str) -> AsyncIterator[str]:
    """A page on another port of 127.0.0.1 (same site, another origin) running ``script``."""
    html = f"<!doctype html><html><body><script>{script}</script></body></html>"

    async def index(_: aioweb.Request) -> aioweb.Response:
        return aioweb.Response(text=html, content_type="text/html")

    app = aioweb.Application()
    app.router.add_get("/", index)
    runner = aioweb.AppRunner(app)
    await runner.setup()
    site = aioweb.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own (it is stopped mid-test), on a private Unix socket."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server (apt-get install redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="llmc-wr-"))
    sock = workdir / "redis.sock"
    proc = subprocess.Popen(
        [
            *(binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"),
            *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"unix://{sock}?db=0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(500):
            with contextlib.suppress(redis.exceptions.ConnectionError):
                if client.ping():
                    break
            assert proc.poll() is None, "redis-server exited"
            time.sleep(0.01)
        yield url, proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


# -- 2. cross-site requests ---------------------------------------------------------------------


async def test_state_changes_from_another_origin_are_refused(make_web: ServeWeb) -> None:
    server = await make_web()
    other = "http://127.0.0.1:1"  # another port of the same host: same site, another origin
    async with client_for(server.url) as client:
        await chat_with_history(client, "kept", "remember this")
        reply = (await client.get("/chat/kept")).json()["messages"][-1]["id"]
        button = f"/chat/kept/replies/{reply}"
        attempts = [
            await client.post(f"{button}/regenerate", headers={"Origin": other}),
            await client.post(f"{button}/up", headers={"Sec-Fetch-Site": "cross-site"}),
            await client.post(f"{button}/down"),  # not a browser, and no JSON body
            await client.post("/chat/kept/reset", headers={"Origin": other}),
            await client.post("/chat/kept/reset", headers={"Origin": "null"}),
            await client.post("/chat/kept/reset", headers={"Sec-Fetch-Site": "same-site"}),
            await client.post("/chat/kept/reset", headers={"Sec-Fetch-Site": "cross-site"}),
            await client.post("/api/conversations", headers={"Origin": "https://evil.test"}),
            # neither header (not a browser) and no JSON body: a form or text/plain post
            await client.post("/chat/kept/reset"),
            await client.post(
                "/chat/kept/reset", content=b"x", headers={"Content-Type": "text/plain"}
            ),
        ]
        state = (await client.get("/chat/kept")).json()
        listed = (await client.get("/api/conversations")).json()["conversations"]
    for response in attempts:
        assert response.status_code == 403, response.text
        assert "refused" in response.json()["error"]
    assert len(state["messages"]) == 2
    assert state["messages"][-1]["id"] == reply  # not regenerated
    assert state["messages"][-1]["vote"] == 0  # nor rated
    assert [c["id"] for c in listed] == ["kept"]


async def test_the_chats_own_origin_and_json_scripts_may_change_state(make_web: ServeWeb) -> None:
    server = await make_web()
    async with client_for(server.url) as client:
        same_origin = await client.post("/api/conversations", headers={"Origin": server.url})
        fetch_meta = await client.post(
            "/api/conversations", headers={"Sec-Fetch-Site": "same-origin"}
        )
        script = await client.post("/api/conversations", **JSON_BODY)
    assert same_origin.status_code == fetch_meta.status_code == script.status_code == 201


async def test_with_a_token_a_script_needs_the_bearer_and_the_cookie_needs_the_page(
    make_web: ServeWeb,
) -> None:
    server = await make_web(auth_token=TOKEN)
    cookie = cookie_header(session_value(TOKEN))
    async with client_for(server.url) as client:
        bearer = await client.post("/api/conversations", headers=BEARER)  # no JSON needed
        cookie_only = await client.post("/api/conversations", headers=cookie, **JSON_BODY)
        cookie_page = await client.post(
            "/api/conversations", headers={**cookie, "Origin": server.url}
        )
        cookie_cross = await client.post(
            "/api/conversations", headers={**cookie, "Sec-Fetch-Site": "same-site"}
        )
        login_cross = await client.post(
            "/login", data={"token": TOKEN}, headers={"Origin": "http://127.0.0.1:1"}
        )
    assert bearer.status_code == 201
    assert cookie_only.status_code == 403
    assert cookie_page.status_code == 201
    assert cookie_cross.status_code == 403
    assert login_cross.status_code == 403
    assert COOKIE not in login_cross.headers.get("set-cookie", "")


ATTACK = """
window.attack = (async () => {
  const target = "%s";
  await fetch(target + "/chat/victim/reset", {method: "POST", mode: "no-cors", credentials: "include"});
  await fetch(target + "/api/conversations", {method: "POST", mode: "no-cors", credentials: "include"});
  await fetch(target + "/chat/victim/stop", {method: "POST", mode: "no-cors", credentials: "include",
    headers: {"Content-Type": "text/plain"}, body: "{}"});
  return "sent";
})();
"""


@needs_chromium
@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "signed-in"])
async def test_a_page_on_another_port_cannot_reset_a_chat(
    page: Page, make_web: ServeWeb, token: str | None
) -> None:
    """SameSite=Strict does not separate ports of 127.0.0.1: the Origin check must."""
    server = await make_web(auth_token=token)
    headers = BEARER if token else {}
    async with client_for(server.url, headers=headers) as client:
        await chat_with_history(client, "victim", "precious history")
        if token:  # the victim signed in in this browser: the cookie rides along (same site)
            await page.goto(f"{server.url}/#victim")
            await page.fill("input[name=token]", token)
            await page.click("button[type=submit]")
            await expect(page.locator("#model")).to_have_value("echo/echo", timeout=WAIT)
        before = (await client.get("/api/conversations")).json()["conversations"]
        async with attacker_site(ATTACK % server.url) as evil:
            await page.goto(evil)
            assert await page.evaluate("() => window.attack") == "sent"
        state = (await client.get("/chat/victim")).json()
        after = (await client.get("/api/conversations")).json()["conversations"]
    assert [m["role"] for m in state["messages"]] == ["user", "assistant"]
    assert state["messages"][1]["content"] == echo_text("precious history")
    assert after == before


# -- 3. lone surrogates --------------------------------------------------------------------------


async def test_a_lone_surrogate_in_a_prompt_never_breaks_the_chat(
    make_web: ServeWeb, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/web.db"
    server = await make_web(store_url=url)
    async with client_for(server.url) as client:
        sent = await client.post(
            "/chat/bad/send-message",
            content=raw_json(BAD),
            headers={"Content-Type": "application/json"},
        )
        assert sent.status_code in (202, 400, 422), sent.text
        if sent.status_code == 202:
            end = await end_of_reply(client, "bad")
            assert end["status"] == "complete"
        page_state = await client.get("/chat/bad")
        listing = await client.get("/api/conversations")
    assert page_state.status_code == 200, page_state.text
    assert listing.status_code == 200, listing.text
    if sent.status_code == 202:  # repaired: the prompt is kept with U+FFFD
        assert page_state.json()["messages"][0]["content"] == "\ufffd x"


async def test_stored_bad_text_still_loads_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SqliteStore(path)
    conversation = Conversation(ConversationKey("web", "old"))
    conversation.messages = [
        Message("user", BAD),
        Message("assistant", "broken \udfff reply", status=Status.COMPLETE),
    ]
    await store.save(conversation)
    await store.aclose()
    async with serve_web(store_url=f"sqlite:///{path}") as server, client_for(server.url) as client:
        page_state = await client.get("/chat/old")
        listing = await client.get("/api/conversations")
    assert page_state.status_code == 200, page_state.text
    assert listing.status_code == 200, listing.text
    messages = page_state.json()["messages"]
    assert [m["content"] for m in messages] == ["\ufffd x", "broken \ufffd reply"]
    assert [c["id"] for c in listing.json()["conversations"]] == ["old"]
    assert listing.json()["conversations"][0]["title"] == "\ufffd x"


# -- 6. forwarded addresses ----------------------------------------------------------------------


async def wrong_tokens(url: str, forwarded: list[str]) -> list[int]:
    codes = []
    async with client_for(url) as client:
        for address in forwarded:
            response = await client.get(
                "/api/models",
                headers={"Authorization": "Bearer wrong", "X-Forwarded-For": address},
            )
            codes.append(response.status_code)
    return codes


async def test_rotating_x_forwarded_for_does_not_escape_the_sign_in_throttle() -> None:
    rotating = [f"203.0.113.{n}" for n in range(SIGN_IN_FAILURES + 1)]
    async with running(web_auth_token=TOKEN) as url:
        codes = await wrong_tokens(url, rotating)
    assert codes == [401] * SIGN_IN_FAILURES + [429]


async def test_a_trusted_proxys_forwarded_address_is_the_client() -> None:
    rotating = [f"203.0.113.{n}" for n in range(SIGN_IN_FAILURES + 1)]
    one = ["198.51.100.7"] * (SIGN_IN_FAILURES + 1)
    async with running(web_auth_token=TOKEN, web_trusted_proxies="127.0.0.1") as url:
        spread = await wrong_tokens(url, rotating)  # six clients behind the proxy, one try each
        single = await wrong_tokens(url, one)  # one client behind it, six tries
    assert spread == [401] * (SIGN_IN_FAILURES + 1)
    assert single == [401] * SIGN_IN_FAILURES + [429]


async def test_trusted_proxies_are_checked_at_start_up() -> None:
    assert load_settings(WebSettings).web_trusted_proxies == []
    assert load_settings(
        WebSettings, web_trusted_proxies="10.0.0.1, 10.1.0.0/16"
    ).web_trusted_proxies == [
        "10.0.0.1",
        "10.1.0.0/16",
    ]
    for wrong in ("not-an-address", "10.1.0.1/16"):
        with pytest.raises(SettingsError, match="WEB_TRUSTED_PROXIES"):
            load_settings(WebSettings, web_trusted_proxies=wrong)


# -- 9. request bodies ---------------------------------------------------------------------------

LIMIT = 256


def body_of(size: int) -> bytes:
    """A send-message body of exactly ``size`` bytes."""
    empty = len(raw_json(""))
    return raw_json("x" * (size - empty))


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    """``data`` sent chunked, without a Content-Length."""
    for start in range(0, len(data), 50):
        yield data[start : start + 50]


async def test_a_body_at_the_limit_is_taken_one_byte_more_is_413(make_web: ServeWeb) -> None:
    server = await make_web(web_max_body_bytes=LIMIT)
    headers = {"Content-Type": "application/json"}
    async with client_for(server.url, headers=headers) as client:
        at = await client.post("/chat/a/send-message", content=body_of(LIMIT))
        await end_of_reply(client, "a")
        over = await client.post("/chat/b/send-message", content=body_of(LIMIT + 1))
        chunked_at = await client.post("/chat/c/send-message", content=chunks(body_of(LIMIT)))
        await end_of_reply(client, "c")
        chunked_over = await client.post("/chat/d/send-message", content=chunks(body_of(LIMIT + 1)))
        unread_over = await client.post("/chat/e/reset", content=body_of(LIMIT + 1))
        listing = (await client.get("/api/conversations")).json()["conversations"]
    assert at.status_code == chunked_at.status_code == 202
    assert "content-length" not in chunked_over.request.headers
    for response in (over, chunked_over, unread_over):
        assert response.status_code == 413, response.text
    assert sorted(c["id"] for c in listing) == ["a", "c"]


async def test_the_default_body_limit_is_one_mebibyte(make_web: ServeWeb) -> None:
    assert load_settings(WebSettings).web_max_body_bytes == 1024 * 1024
    server = await make_web()
    headers = {"Content-Type": "application/json"}
    async with client_for(server.url, headers=headers) as client:
        at = await client.post("/chat/a/send-message", content=body_of(1024 * 1024))
        over = await client.post("/chat/a/send-message", content=chunks(body_of(1024 * 1024 + 1)))
    assert at.status_code == 400  # taken, then refused for its length (MAX_INPUT_CHARS)
    assert "the limit is 8,000" in at.json()["error"]
    assert over.status_code == 413


async def test_a_validation_error_never_echoes_the_input(make_web: ServeWeb) -> None:
    server = await make_web()
    marker = "PRIVATE-" + "z" * 40
    async with client_for(server.url) as client:
        wrong_field = await client.post("/chat/a/send-message", json={"txt": marker})
        wrong_type = await client.post("/chat/a/send-message", json={"text": {"secret": marker}})
        not_json = await client.post(
            "/chat/a/send-message",
            content=b'{"text": "' + marker.encode() + b'"',
            headers={"Content-Type": "application/json"},
        )
    for response in (wrong_field, wrong_type, not_json):
        assert response.status_code == 422, response.text
        assert marker not in response.text
        assert "input" not in response.text
        body = response.json()
        assert body["error"].startswith("Invalid request")
        assert all(set(e) <= {"loc", "msg", "type"} for e in body["detail"])
    assert wrong_field.json()["detail"][0]["loc"] == ["body", "text"]


# -- 10. the listing survives a restart ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_the_conversation_list_survives_a_restart(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path}/web.db"
        if backend == "sqlite"
        else request.getfixturevalue("fresh_redis_url")
    )
    async with serve_web(store_url=url) as server, client_for(server.url) as client:
        await chat_with_history(client, "first", "one")
        await chat_with_history(client, "second", "two")
        await server.engine.conversation(ConversationKey("slack", "C1"))  # not the web's
    async with serve_web(store_url=url) as server, client_for(server.url) as client:
        listing = (await client.get("/api/conversations")).json()["conversations"]
        state = (await client.get("/chat/first")).json()
    assert [(c["id"], c["size"]) for c in listing] == [("second", 2), ("first", 2)]
    assert len(state["messages"]) == 2


# -- 11. the store goes away ---------------------------------------------------------------------


async def test_redis_stopping_mid_session_gets_a_clean_503_everywhere() -> None:
    with private_redis() as (url, proc):
        async with serve_web(store_url=url) as server, client_for(server.url) as client:
            await chat_with_history(client, "r", "before the outage")
            proc.terminate()
            proc.wait(10)
            responses = {
                "GET /chat/r": await client.get("/chat/r"),
                "GET /api/conversations": await client.get("/api/conversations"),
                "POST /api/conversations": await client.post("/api/conversations", json={}),
                "POST model": await client.post("/chat/r/model", json={"model": "echo"}),
                "POST reset": await client.post("/chat/r/reset", json={}),
                "POST send-message": await client.post(
                    "/chat/r/send-message", json={"text": "during"}
                ),
            }
    for what, response in responses.items():
        assert response.status_code == 503, (what, response.text)
        assert response.json() == {"error": STORE_UNAVAILABLE}, what
        assert "Traceback" not in response.text


# -- 13. streams per client, links in the Markdown -----------------------------------------------


async def test_open_streams_per_client_are_bounded(make_web: ServeWeb) -> None:
    assert load_settings(WebSettings).web_max_streams == 100
    server = await make_web(web_max_streams=2, options={"delay": 0.05})
    long_prompt = " ".join(["word"] * 400)
    async with client_for(server.url) as client:
        sent = await client.post("/chat/s/send-message", json={"text": long_prompt})
        assert sent.status_code == 202
        async with contextlib.AsyncExitStack() as streams:
            for _ in range(2):  # at the limit: both open
                source = await streams.enter_async_context(
                    aconnect_sse(client, "GET", "/chat/s/bot-stream")
                )
                assert source.response.status_code == 200
            refused = await client.get("/chat/s/bot-stream")
        # Both closed: a new one is taken again (once the server has seen them go).
        for _ in range(500):
            async with aconnect_sse(client, "GET", "/chat/s/bot-stream") as again:
                if again.response.status_code == 200:
                    break
            await asyncio.sleep(0.01)
        await client.post("/chat/s/stop", json={})
    assert refused.status_code == 429
    assert "WEB_MAX_STREAMS" in refused.json()["error"]
    assert again.response.status_code == 200


LINKS = {
    "a": "https://x.test/a_b_c_d",
    "b": "https://x.test/*x*/y*z",
    "c": "https://x.test/__init__/~~s~~?q=a_b*c",
    "d": "https://x.test/path_(x)_y",
}


@needs_chromium
async def test_emphasis_never_rewrites_a_links_href(page: Page, make_web: ServeWeb) -> None:
    server = await make_web()
    prompt = " ".join(f"[{label}]({url})" for label, url in LINKS.items() if label != "d")
    prompt += " and [*it*](https://x.test/i_j_k) plus _real_ emphasis"
    await browser_tests.open_chat(page, server, "links")
    await browser_tests.send(page, prompt)
    reply = browser_tests.last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT)
    anchors = reply.locator(".body a")
    hrefs = await anchors.evaluate_all("els => els.map(a => a.getAttribute('href'))")
    labels = await anchors.all_inner_texts()
    assert hrefs == [LINKS["a"], LINKS["b"], LINKS["c"], "https://x.test/i_j_k"]
    assert labels == ["a", "b", "c", "it"]
    await expect(reply.locator(".body a em")).to_have_text("it")
    await expect(reply.locator(".body > p > em")).to_have_text("real")


# -- 15. sign-in promises, through `llmconnect run` ---------------------------------------------


async def test_forged_cookies_and_partial_bearers_are_refused() -> None:
    async with running(web_auth_token=TOKEN) as url, client_for(url) as client:
        attempts = {
            "forged cookie": await client.get("/api/models", headers=cookie_header("0" * 64)),
            "the token as cookie": await client.get("/api/models", headers=cookie_header(TOKEN)),
            "another token's cookie": await client.get(
                "/api/models", headers=cookie_header(session_value(TOKEN[:-1]))
            ),
            "empty bearer": await client.get("/api/models", headers={"Authorization": "Bearer"}),
            "token minus its last character": await client.get(
                "/api/models", headers={"Authorization": f"Bearer {TOKEN[:-1]}"}
            ),
        }
        prefix = await client.get("/api/models", headers={"Authorization": f"Bearer {TOKEN[:8]}"})
        right = await client.get("/api/models", headers=BEARER)
    for what, response in {**attempts, "a prefix": prefix}.items():
        assert response.status_code == 401, what
        assert TOKEN not in response.text
    assert right.status_code == 200
