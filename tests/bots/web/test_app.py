"""The web chat's HTTP endpoints and its SSE stream, over a real uvicorn server and httpx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from bots.web.guard import COOKIE, SIGN_IN_FAILURES, SIGN_IN_WINDOW
from core.clock import FakeClock
from core.conversations import Status
from core.delivery import EMPTY_NOTE, STOPPED_NOTE, final_note
from core.engine import NOT_WAITING
from tests.bots.web.conftest import ServeWeb, WebServer, echo_text
from tests.fakes.llm_server import Fail, FakeLLMServer, FakeToolCall, Reply
from tests.fakes.mcp_server import stdio_servers

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLOW = {"delay": 0.02}
LONG_PROMPT = " ".join(f"word{i}" for i in range(40))
WORDS = "one two three four five six"


async def events(client: httpx.AsyncClient, conv: str) -> AsyncIterator[ServerSentEvent]:
    async with aconnect_sse(client, "GET", f"/chat/{conv}/bot-stream") as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for event in source.aiter_sse():
            yield event


async def collect(client: httpx.AsyncClient, conv: str) -> tuple[list[str], dict[str, Any]]:
    """The deltas of one bot-stream, and its end event."""
    deltas: list[str] = []
    async for event in events(client, conv):
        if event.event == "delta":
            deltas.append(json.loads(event.data))
        elif event.event == "end":
            return deltas, json.loads(event.data)
    raise AssertionError("the stream closed without an end event")


def client_for(server: WebServer, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=30, **kwargs)


async def test_page_static_files_and_security_headers(make_web: ServeWeb) -> None:
    server = await make_web()
    async with client_for(server) as client:
        page = await client.get("/")
        script = await client.get("/static/app.js")
        style = await client.get("/static/app.css")
    assert page.status_code == 200
    assert 'id="messages"' in page.text
    assert '<script src="/static/app.js"' in page.text
    assert script.status_code == style.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_send_message_then_bot_stream_streams_to_complete(make_web: ServeWeb) -> None:
    server = await make_web(options=SLOW)
    async with client_for(server) as client:
        created = (await client.post("/api/conversations", json={})).json()
        conv = created["id"]
        assert created["messages"] == []
        sent = await client.post(f"/chat/{conv}/send-message", json={"text": LONG_PROMPT})
        assert sent.status_code == 202
        assert sent.json()["model"] == "echo/echo"
        deltas, end = await collect(client, conv)
        state = (await client.get(f"/chat/{conv}")).json()
    assert len(deltas) > 1  # streamed, not delivered at once
    assert "".join(deltas) == end["content"] == echo_text(LONG_PROMPT)
    assert end["status"] == "complete"
    assert end["busy"] is False
    assert [(m["role"], m["status"]) for m in state["messages"]] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert state["messages"][1]["content"] == echo_text(LONG_PROMPT)
    assert state["title"].startswith("word0 word1")
    assert state["busy"] is False


async def test_reattached_stream_gets_the_text_so_far_then_the_rest(make_web: ServeWeb) -> None:
    """A reload (or a second tab) mid-reply: the text so far as one delta, then the rest."""
    server = await make_web(options={"delay": 0.03})
    async with client_for(server) as first, client_for(server) as second:
        await first.post("/chat/reload/send-message", json={"text": LONG_PROMPT})
        seen: list[str] = []
        stream = events(first, "reload")
        async for event in stream:
            if event.event == "delta":
                seen.append(json.loads(event.data))
                if len(seen) == 3:
                    break
        await stream.aclose()  # the first page goes away mid-reply
        midway = (await second.get("/chat/reload")).json()
        assert midway["busy"] is True
        assert midway["messages"][-1]["status"] == "streaming"
        deltas, end = await collect(second, "reload")
        # A third observer once it is over: everything at once, then the end.
        after, end_after = await collect(first, "reload")
    assert "".join(deltas) == end["content"] == echo_text(LONG_PROMPT)
    assert deltas[0].startswith("".join(seen))  # the first delta is the text so far
    assert len(deltas) > 1  # and the rest kept streaming
    assert end["status"] == "complete"
    assert after == [echo_text(LONG_PROMPT)]
    assert end_after["status"] == "complete"


async def test_two_tabs_see_the_same_stream(make_web: ServeWeb) -> None:
    server = await make_web(options={"delay": 0.01})
    async with client_for(server) as tab1, client_for(server) as tab2:
        await tab1.post("/chat/tabs/send-message", json={"text": LONG_PROMPT})
        (d1, e1), (d2, e2) = await asyncio.gather(collect(tab1, "tabs"), collect(tab2, "tabs"))
    assert "".join(d1) == "".join(d2) == echo_text(LONG_PROMPT)
    assert e1["status"] == e2["status"] == "complete"


async def test_a_stream_opened_right_after_send_follows_the_queued_reply(
    make_web: ServeWeb,
) -> None:
    """Two prompts in a row: the first stream says another reply is queued; the next shows it."""
    server = await make_web(options=SLOW)
    async with client_for(server) as client:
        await client.post("/chat/queue/send-message", json={"text": "first question"})
        await client.post("/chat/queue/send-message", json={"text": "second question"})
        deltas1, end1 = await collect(client, "queue")
        deltas2, end2 = await collect(client, "queue")
        state = (await client.get("/chat/queue")).json()
    assert "".join(deltas1) == echo_text("first question")
    assert end1["busy"] is True
    assert "".join(deltas2) == echo_text("second question")
    assert end2["busy"] is False
    assert [m["content"] for m in state["messages"]] == [
        "first question",
        echo_text("first question"),
        "second question",
        echo_text("second question"),
    ]


async def test_conversations_are_listed_most_recent_first_with_their_size(
    make_web: ServeWeb,
) -> None:
    server = await make_web()
    async with client_for(server) as client:
        fresh = (await client.post("/api/conversations", json={})).json()
        await client.post("/chat/older/send-message", json={"text": "first"})
        await collect(client, "older")
        await client.post("/chat/newer/send-message", json={"text": "second"})
        await collect(client, "newer")
        listed = (await client.get("/api/conversations")).json()["conversations"]
    assert [(c["id"], c["title"], c["size"], c["busy"]) for c in listed] == [
        ("newer", "second", 2, False),
        ("older", "first", 2, False),
        (fresh["id"], "New chat", 0, False),
    ]


async def test_bot_stream_with_nothing_to_show_ends_idle(make_web: ServeWeb) -> None:
    server = await make_web()
    async with client_for(server) as client:
        deltas, end = await collect(client, "empty")
    assert deltas == []
    assert end == {"status": "idle", "busy": False}


async def test_models_listed_and_switched_next_reply_from_the_new_model(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    env = {"LOCAL_BASE_URL": llm_server.openai_base_url}
    server = await make_web(env=env, llmconnect_allowed_models=["echo", "local/fake"])
    llm_server.enqueue(Reply(text="Hello from the fake model."))
    async with client_for(server) as client:
        models = (await client.get("/api/models")).json()
        assert models == {"models": ["echo/echo", "local/fake"], "default": "echo/echo"}
        await client.post("/chat/switch/send-message", json={"text": "one"})
        first, _ = await collect(client, "switch")
        switched = await client.post("/chat/switch/model", json={"model": "local/fake"})
        assert switched.json() == {"id": "switch", "model": "local/fake"}
        sent = await client.post("/chat/switch/send-message", json={"text": "two"})
        assert sent.json()["model"] == "local/fake"
        second, end = await collect(client, "switch")
        refused = await client.post("/chat/switch/model", json={"model": "groq"})
        state = (await client.get("/chat/switch")).json()
        listed = (await client.get("/api/conversations")).json()["conversations"]
    assert "".join(first) == echo_text("one")
    assert "".join(second) == "Hello from the fake model."
    assert end["model"] == "local/fake"
    assert refused.status_code == 400
    assert "GROQ_API_KEY" in refused.json()["error"]
    assert "echo/echo, local/fake" in refused.json()["error"]
    assert state["model"] == "local/fake"
    assert [(c["id"], c["model"], c["title"]) for c in listed] == [("switch", "local/fake", "one")]


async def test_stop_ends_the_reply_stopped_and_keeps_what_was_shown(make_web: ServeWeb) -> None:
    server = await make_web(options={"delay": 0.05})
    async with client_for(server) as client:
        await client.post("/chat/stop/send-message", json={"text": LONG_PROMPT})
        ended: dict[str, Any] = {}
        stopped: dict[str, Any] = {}
        async for event in events(client, "stop"):
            # Once only: deltas already on their way after the stop still arrive.
            if event.event == "delta" and not stopped:
                stopped = (await client.post("/chat/stop/stop", json={})).json()
            elif event.event == "end":
                ended = json.loads(event.data)
        state = (await client.get("/chat/stop")).json()
        again = (await client.post("/chat/stop/stop", json={})).json()
    assert stopped == {"id": "stop", "stopped": True}
    assert ended["status"] == "cancelled"
    assert echo_text(LONG_PROMPT).startswith(ended["content"])
    assert ended["content"] != echo_text(LONG_PROMPT)
    assert state["messages"][-1]["status"] == "cancelled"
    assert again["stopped"] is False


async def test_reset_clears_the_history_and_keeps_the_model(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(env={"LOCAL_BASE_URL": llm_server.openai_base_url})
    async with client_for(server) as client:
        await client.post("/chat/r/model", json={"model": "local/fake"})
        await client.post("/chat/r/send-message", json={"text": "remember me"})
        await collect(client, "r")
        reset = (await client.post("/chat/r/reset", json={})).json()
    assert reset["messages"] == []
    assert reset["model"] == "local/fake"
    assert reset["busy"] is False


async def test_reset_stops_the_running_reply_and_drops_the_queued_one(make_web: ServeWeb) -> None:
    server = await make_web(options={"delay": 0.05})
    key = server.web.key("rq")
    async with client_for(server) as client:
        await client.post("/chat/rq/send-message", json={"text": LONG_PROMPT})
        await client.post("/chat/rq/send-message", json={"text": "and then this"})
        first, second = server.engine.replies(key)  # one runs, one waits
        for _ in range(500):
            if first.text:
                break
            await asyncio.sleep(0.01)
        assert first.text, "the first reply never started"

        reset = (await client.post("/chat/rq/reset", json={})).json()

    assert server.engine.replies(key) == []
    assert (first.status, second.status) == (Status.CANCELLED, Status.CANCELLED)
    assert second.text == ""  # dropped: never run
    assert reset["messages"] == []
    assert reset["busy"] is False


async def test_refused_prompts_say_why(make_web: ServeWeb) -> None:
    server = await make_web(max_input_chars=20)
    async with client_for(server) as client:
        empty = await client.post("/chat/x/send-message", json={"text": "   "})
        long = await client.post("/chat/x/send-message", json={"text": "y" * 21})
        bad_id = await client.post("/chat/no!pe/send-message", json={"text": "hi"})
        no_body = await client.post(
            "/chat/x/send-message", headers={"Content-Type": "application/json"}
        )
    assert empty.status_code == 400
    assert "Ask me anything" in empty.json()["error"]
    assert long.status_code == 400
    assert "limit is 20" in long.json()["error"]
    assert bad_id.status_code in (404, 422)
    assert no_body.status_code == 422


async def test_the_daily_limit_refuses_says_when_it_resets_and_status_shows_the_tokens(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    """CHANNEL_DAILY_TOKENS over HTTP: the web has no user (no per-user cap), the conversation's
    cap holds. The stand-in reports 7 input tokens and one output token per delta."""
    clock = FakeClock(wall_start=datetime(2026, 12, 2, 20, 48, tzinfo=UTC).timestamp())
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url, "LOCAL_API_KEY": "sk-secret-999"},
        llmconnect_model="local/fake",
        channel_daily_tokens=11,
        model_prices='{"local/*": [10000, 5000]}',
        clock=clock,
        edit_interval=0,
    )
    key = server.web.key("q")
    async with client_for(server) as client:
        sent = await client.post("/chat/q/send-message", json={"text": "one two"})
        assert sent.status_code == 202
        reply = server.engine.reply_for(key)
        assert reply is not None
        await reply
        status = await client.get("/chat/q/status")
        chats = len(llm_server.requests)
        refused = await client.post("/chat/q/send-message", json={"text": "more please"})
        assert len(llm_server.requests) == chats  # nothing reached the LLM
        other = await client.post("/chat/elsewhere/send-message", json={"text": "hi"})
        await clock.advance(datetime(2026, 12, 3, tzinfo=UTC).timestamp() - clock.wall())
        tomorrow = await client.post("/chat/q/send-message", json={"text": "one two"})
    assert status.status_code == 200
    body = status.json()
    assert body["text"].splitlines()[1:] == [
        "Tokens here today (UTC): 11 (7 in, 4 out), about $0.09; in total: 11 (7 in, 4 out), "
        "about $0.09.",
        "Price of local/fake: $10000 / $5000 per million input / output tokens (approximate).",
        "Daily limit here: 11 of 11 tokens used; resets in 3 h 12 min (00:00 UTC).",
        "Feedback here: none yet.",
    ]
    assert body["usage"] == {
        "day": "2026-12-02",
        "today": {"input_tokens": 7, "output_tokens": 4, "cost": 0.09},
        "total": {"input_tokens": 7, "output_tokens": 4, "cost": 0.09},
        "daily_limit": 11,
    }
    assert "sk-secret-999" not in status.text
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "This conversation has used its 11 tokens for today (11); the limit resets in "
        "3 h 12 min (00:00 UTC)."
    )
    assert other.status_code == 202  # another conversation has its own count
    assert tomorrow.status_code == 202  # 00:00 UTC: a new day


async def test_a_provider_error_ends_the_reply_in_error(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/fake",
        llm_max_retries=0,
    )
    llm_server.enqueue(Fail(status=500))
    async with client_for(server) as client:
        await client.post("/chat/err/send-message", json={"text": "hello"})
        deltas, end = await collect(client, "err")
        state = (await client.get("/chat/err")).json()
    assert deltas == []
    assert end["status"] == "error"
    assert end["error"]
    assert "Traceback" not in end["error"]
    assert state["messages"][-1]["status"] == "error"


async def test_shutting_down_refuses_new_prompts(make_web: ServeWeb) -> None:
    server = await make_web()
    server.web.closing = True
    async with client_for(server) as client:
        response = await client.post("/chat/late/send-message", json={"text": "hello"})
    assert response.status_code == 503


# --------------------------------------------------------------------------- access


TOKEN = "s3cret-web-token-0123456789"

PROTECTED = [
    ("GET", "/"),
    ("GET", "/static/app.js"),
    ("GET", "/api/models"),
    ("GET", "/api/conversations"),
    ("POST", "/api/conversations"),
    ("GET", "/chat/a"),
    ("POST", "/chat/a/send-message"),
    ("GET", "/chat/a/bot-stream"),
    ("POST", "/chat/a/model"),
    ("POST", "/chat/a/stop"),
    ("POST", "/chat/a/reset"),
    ("POST", "/chat/a/replies/0123456789ab/up"),
    ("GET", "/chat/a/status"),
    ("GET", "/chat/a/tools"),
    ("POST", "/chat/a/tools"),
    ("GET", "/nonexistent"),
]


async def test_every_endpoint_needs_the_token_when_one_is_set(make_web: ServeWeb) -> None:
    server = await make_web(auth_token=TOKEN)
    async with client_for(server) as anonymous:
        for method, path in PROTECTED:
            response = await anonymous.request(method, path, json={"text": "hi", "model": "echo"})
            assert response.status_code == 401, (method, path)
            assert TOKEN not in response.text
        wrong = await anonymous.get("/api/models", headers={"Authorization": "Bearer nope"})
        login_page = await anonymous.get("/", headers={"Accept": "text/html"})
    assert wrong.status_code == 401
    assert login_page.status_code == 401
    assert 'action="/login"' in login_page.text


async def test_the_token_is_in_no_repr(make_web: ServeWeb) -> None:
    server = await make_web(auth_token=TOKEN)
    assert TOKEN not in repr(server.app.user_middleware)
    assert TOKEN not in repr(server.app.middleware_stack)


async def test_a_bearer_token_opens_every_endpoint_including_the_stream(
    make_web: ServeWeb,
) -> None:
    server = await make_web(auth_token=TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with client_for(server, headers=headers) as client:
        assert (await client.get("/")).status_code == 200
        await client.post("/chat/auth/send-message", json={"text": "secret plans"})
        deltas, end = await collect(client, "auth")
    assert "".join(deltas) == echo_text("secret plans")
    assert end["status"] == "complete"


async def test_the_login_form_sets_a_cookie_that_is_not_the_token(make_web: ServeWeb) -> None:
    server = await make_web(auth_token=TOKEN)
    async with client_for(server, headers={"Origin": server.url}) as browser:
        refused = await browser.post("/login", data={"token": "guess"})
        assert refused.status_code == 401
        assert COOKIE not in browser.cookies
        signed_in = await browser.post("/login", data={"token": TOKEN})
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/"
        cookie = signed_in.headers["set-cookie"]
        assert TOKEN not in cookie
        assert "httponly" in cookie.lower()
        assert "samesite=strict" in cookie.lower()
        assert (await browser.get("/")).status_code == 200
        await browser.post("/chat/c/send-message", json={"text": "by cookie"})
        deltas, _ = await collect(browser, "c")
    assert "".join(deltas) == echo_text("by cookie")


async def test_guessing_the_token_is_throttled_per_address(make_web: ServeWeb) -> None:
    clock = FakeClock()
    server = await make_web(auth_token=TOKEN, guard_clock=clock)
    async with client_for(server, headers={"Origin": server.url}) as guesser:
        for n in range(SIGN_IN_FAILURES - 1):
            assert (await guesser.post("/login", data={"token": f"guess{n}"})).status_code == 401
            await clock.advance(1)
        last = await guesser.get("/api/models", headers={"Authorization": "Bearer guess"})
        assert last.status_code == 401  # the fifth wrong token (a bearer one counts too)
        blocked = await guesser.post("/login", data={"token": TOKEN})  # even the right one
        blocked_bearer = await guesser.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        anonymous = await guesser.get("/", headers={"Accept": "text/html"})
        await clock.advance(SIGN_IN_WINDOW - (SIGN_IN_FAILURES - 1))  # the first failure expires
        allowed = await guesser.post("/login", data={"token": TOKEN})
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == str(int(SIGN_IN_WINDOW - (SIGN_IN_FAILURES - 1)))
    assert "try again in 56 s" in blocked.text
    assert TOKEN not in blocked.text
    assert blocked_bearer.status_code == 429
    assert anonymous.status_code == 401  # the sign-in page itself still shows
    assert allowed.status_code == 303


async def test_a_foreign_host_header_is_turned_away(make_web: ServeWeb) -> None:
    """A DNS-rebinding page sends its own Host; a loopback server only answers its names."""
    server = await make_web(allowed_hosts=["127.0.0.1", "localhost", "::1"])
    async with client_for(server) as client:
        ok = await client.get("/api/models")
        local = await client.get("/api/models", headers={"Host": "localhost:8000"})
        foreign = await client.get("/api/models", headers={"Host": "evil.example:8000"})
    assert ok.status_code == local.status_code == 200
    assert foreign.status_code == 400


# -- the note under a reply: the server's, the same line every front end shows ----------------


@pytest.mark.parametrize(
    ("reply", "settings", "start"),
    [
        (Fail(status=500), {"llm_max_retries": 0}, "⚠️ The provider is unavailable"),
        (
            Reply(text=WORDS, hang_after=2),
            {"llm_idle_timeout": 0.3},
            "⚠️ The provider took too long",
        ),
        (Reply(text=""), {}, EMPTY_NOTE),
        (Reply(text=WORDS), {}, None),
    ],
    ids=["error", "time-limit", "empty", "complete"],
)
async def test_the_end_event_and_the_history_carry_the_final_note(
    make_web: ServeWeb,
    llm_server: FakeLLMServer,
    reply: Reply | Fail,
    settings: dict[str, Any],
    start: str | None,
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/fake",
        **settings,
    )
    llm_server.enqueue(reply)
    async with client_for(server) as client:
        await client.post("/chat/noted/send-message", json={"text": "hello"})
        _, end = await collect(client, "noted")
        state = (await client.get("/chat/noted")).json()
    done = server.engine.reply_for(server.web.key("noted"))
    assert done is not None
    assert end["note"] == final_note(done)  # core's note, not one of the page's own
    if start is None:
        assert end["note"] is None
    else:
        assert end["note"].startswith(start)
    # The stored conversation (what a reload shows) has the same note; a prompt has none.
    assert [m["note"] for m in state["messages"]] == [None, end["note"]]


async def test_a_stopped_reply_ends_with_the_stop_note(make_web: ServeWeb) -> None:
    server = await make_web(options={"delay": 0.05})
    async with client_for(server) as client:
        await client.post("/chat/halt/send-message", json={"text": LONG_PROMPT})
        ended: dict[str, Any] = {}
        async for event in events(client, "halt"):
            if event.event == "delta" and not ended:
                ended = {"stopping": True}
                await client.post("/chat/halt/stop", json={})
            elif event.event == "end":
                ended = json.loads(event.data)
        state = (await client.get("/chat/halt")).json()
    assert ended["status"] == "cancelled"
    assert ended["note"] == STOPPED_NOTE
    assert state["messages"][-1]["note"] == STOPPED_NOTE


async def test_the_page_has_no_note_text_of_its_own(make_web: ServeWeb) -> None:
    server = await make_web()
    async with client_for(server) as client:
        script = (await client.get("/static/app.js")).text
    for text in (STOPPED_NOTE, EMPTY_NOTE, "⚠️", "failed to answer"):
        assert text not in script


async def test_the_model_dropdown_offers_a_model_only_the_providers_list_has(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    env = {"LOCAL_BASE_URL": llm_server.openai_base_url}
    saved = llm_server.models
    llm_server.models = ["fake", "listed-only"]
    try:
        server = await make_web(env=env, llmconnect_model="local/fake")
        async with client_for(server) as client:
            first = (await client.get("/api/models")).json()
            for _ in range(500):
                if not server.engine.catalogue.refreshing():
                    break
                await asyncio.sleep(0.01)
            listed = (await client.get("/api/models")).json()
            switched = await client.post("/chat/listed/model", json={"model": "local/listed-only"})
    finally:
        llm_server.models = saved
    assert first == {"models": ["echo/echo", "local/fake"], "default": "local/fake"}
    assert listed == {
        "models": ["echo/echo", "local/fake", "local/listed-only"],
        "default": "local/fake",
    }
    assert switched.json() == {"id": "listed", "model": "local/listed-only"}


async def test_a_fallback_answer_ends_with_the_answered_by_note(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/down",
        llmconnect_fallback_models="local/fake",
        llm_max_retries=0,
    )
    llm_server.enqueue(Fail(status=503))
    async with client_for(server) as client:
        await client.post("/chat/fallback/send-message", json={"text": "hello"})
        deltas, end = await collect(client, "fallback")
        state = (await client.get("/chat/fallback")).json()
    note = "answered by local/fake — local/down was unavailable"
    assert "".join(deltas) == "You said: hello"
    assert (end["status"], end["note"]) == ("complete", note)
    assert end["model"] == "local/fake"
    assert state["messages"][-1]["note"] == note
    assert state["messages"][-1]["model"] == "local/fake"


# --------------------------------------------------------------------------- reasoning


async def _thinking_reply(
    make_web: ServeWeb, llm_server: FakeLLMServer, show: str, conv: str, **scripted: Any
) -> tuple[list[tuple[str, Any]], dict[str, Any], dict[str, Any]]:
    """A reply that thinks for 3 s of the engine's (fake) clock, then answers; every SSE event
    the page got (kind, data), the end event and the conversation's JSON afterwards."""
    clock = FakeClock()
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/fake",
        show_reasoning=show,
        edit_interval=0,
        clock=clock,
    )
    gate = asyncio.Event()
    llm_server.enqueue(
        Reply(
            deltas=["Forty", "-two."],
            reasoning=["Six ", "times ", "seven."],
            text_gate=gate,
            **scripted,
        )
    )
    seen: list[tuple[str, Any]] = []
    async with client_for(server) as client:
        await client.post(f"/chat/{conv}/send-message", json={"text": "why?"})

        async def read() -> dict[str, Any]:
            async for event in events(client, conv):
                seen.append((event.event, json.loads(event.data)))
                if event.event == "end":
                    return seen[-1][1]  # type: ignore[no-any-return]
            raise AssertionError("no end event")

        reader = asyncio.ensure_future(read())
        reply = server.engine.reply_for(server.web.key(conv))
        assert reply is not None
        for _ in range(500):
            if reply.reasoning_text == "Six times seven." and (
                show != "status" or ("status", "💭 thinking… (0 s)") in seen
            ):
                break
            await asyncio.sleep(0.01)
        for _ in range(3):
            await clock.advance(1.0)
            await asyncio.sleep(0.05)  # the SSE event reaches the client over loopback
        gate.set()
        end = await asyncio.wait_for(reader, 10)
        state = (await client.get(f"/chat/{conv}")).json()
    return seen, end, state


@pytest.mark.parametrize("way", ["reasoning_content", "think"])
async def test_web_status_shows_thinking_seconds_never_the_reasoning(
    make_web: ServeWeb, llm_server: FakeLLMServer, way: str
) -> None:
    seen, end, state = await _thinking_reply(
        make_web, llm_server, "status", f"st-{way}", reasoning_as=way
    )
    statuses = [data for kind, data in seen if kind == "status"]
    # once when the thinking starts, then once per second of the engine clock, each once
    assert statuses == [f"💭 thinking… ({n} s)" for n in range(4)]
    kinds = [kind for kind, _ in seen]
    assert max(i for i, k in enumerate(kinds) if k == "status") < kinds.index("delta")
    assert "".join(data for kind, data in seen if kind == "delta") == "Forty-two."
    assert end["content"] == "Forty-two."
    assert "reasoning" not in end
    everything = json.dumps([seen, state])
    assert "Six" not in everything
    assert "seven" not in everything


async def test_web_off_sends_nothing_of_the_reasoning(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    seen, end, state = await _thinking_reply(make_web, llm_server, "off", "off-1")
    assert [kind for kind, _ in seen if kind not in ("start", "delta")] == ["end"]
    assert end["content"] == "Forty-two."
    assert "Six" not in json.dumps([seen, state])


async def test_web_full_streams_the_reasoning_and_keeps_it_out_of_the_history(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    seen, end, state = await _thinking_reply(make_web, llm_server, "full", "full-1")
    assert "".join(data for kind, data in seen if kind == "reasoning") == "Six times seven."
    assert not [kind for kind, _ in seen if kind == "status"]
    assert end["reasoning"] == "Six times seven."
    assert end["content"] == "Forty-two."
    assert end["created_at"] == state["messages"][-1]["created_at"]  # how the page keeps it
    assert "Six" not in json.dumps(state)  # never stored


# -- attachments: multipart send-message ----------------------------------------------------------


def png_bytes(size: tuple[int, int] = (6, 4)) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (0, 120, 255)).save(out, "PNG")
    return out.getvalue()


async def upload(
    server: WebServer, conv: str, text: str | None, *files: tuple[str, bytes, str]
) -> httpx.Response:
    """A multipart ``send-message`` as the page sends it (its own Origin), then its reply ended."""
    data = {} if text is None else {"text": text}
    async with client_for(server, headers={"Origin": server.url}) as client:
        sent = await client.post(
            f"/chat/{conv}/send-message",
            data=data,
            files=[("files", f) for f in files],
        )
    if sent.status_code == 202:
        reply = server.engine.reply_for(server.web.key(conv))
        assert reply is not None
        await reply
    return sent


async def test_an_uploaded_image_reaches_a_vision_model_and_the_chat_shows_it(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    from tests.fakes.llm_server import ReceivedPart

    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/gpt-4o-mini",
        edit_interval=0,
    )
    png = png_bytes()
    sent = await upload(server, "img", "what is this?", ("cat.png", png, "image/png"))
    assert sent.status_code == 202
    assert llm_server.requests[-1].parts() == [
        ReceivedPart("text", "text", text="what is this?"),
        ReceivedPart("image", "image_url", media_type="image/png", data=png),
    ]
    async with client_for(server) as client:
        conv = (await client.get("/chat/img")).json()
        (user, answer) = conv["messages"]
        image = await client.get(user["attachments"][0]["url"])
        missing = await client.get("/chat/img/attachment/0/5")
    assert user["attachments"][0]["url"] == "/chat/img/attachment/0/0"
    assert "data" not in json.dumps(user["attachments"])  # never the bytes in the JSON
    assert answer["note"] is None
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content == png
    assert missing.status_code == 404


async def test_a_text_model_gets_a_note_a_py_file_is_inlined_and_a_big_file_has_its_line(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/fake",
        max_attachment_bytes=1024,
        edit_interval=0,
    )
    sent = await upload(
        server,
        "txt",
        "review",
        ("cat.png", png_bytes(), "image/png"),
        ("a.py", b"x = 1\n", "text/x-python"),
        ("big.log", b"y" * 1025, "text/plain"),
    )
    assert sent.status_code == 202
    (content,) = [
        m["content"] for m in llm_server.requests[-1].json["messages"] if m["role"] == "user"
    ]
    assert content == (
        "review\n\n[image: cat.png — this model does not read images]\n\na.py\n```py\nx = 1\n```"
    )
    async with client_for(server) as client:
        conv = (await client.get("/chat/txt")).json()
    user, answer = conv["messages"]
    assert [(f["name"], f["kind"]) for f in user["attachments"]] == [
        ("cat.png", "image"),
        ("a.py", "text"),
    ]
    assert answer["status"] == "complete"  # the text is still answered
    assert answer["note"] == "Skipped big.log: larger than the 0.000977 MB limit."


async def test_files_without_text_are_answered_and_only_unread_ones_are_refused(
    make_web: ServeWeb,
) -> None:
    server = await make_web(edit_interval=0)
    only_file = await upload(server, "f", None, ("n.md", b"# notes", "text/markdown"))
    refused = await upload(server, "f2", "", ("x.exe", b"MZ", "application/octet-stream"))
    assert only_file.status_code == 202
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "Skipped x.exe: this type of file is not read (images, text files and PDFs are).\n"
        "No text and no file I can read: nothing to answer."
    )


async def test_an_upload_passes_the_same_cross_site_guard_and_its_own_size_bound(
    make_web: ServeWeb,
) -> None:
    # The upload bound: WEB_MAX_BODY_BYTES + MAX_ATTACHMENTS * MAX_ATTACHMENT_BYTES = 4,048.
    server = await make_web(web_max_body_bytes=2000, max_attachments=2, max_attachment_bytes=1024)
    files = {"files": ("a.txt", b"hi", "text/plain")}
    async with client_for(server) as client:
        no_origin = await client.post("/chat/g/send-message", data={"text": "x"}, files=files)
        other_site = await client.post(
            "/chat/g/send-message",
            data={"text": "x"},
            files=files,
            headers={"Origin": "http://evil.example"},
        )
        big_json = await client.post("/chat/g/send-message", json={"text": "z" * 2100})
    async with client_for(server, headers={"Origin": server.url}) as client:
        too_big = await client.post(
            "/chat/g/send-message", files={"files": ("a.txt", b"q" * 4100, "text/plain")}
        )
        fits = await client.post(
            "/chat/g/send-message", files={"files": ("a.txt", b"q" * 1024, "text/plain")}
        )
    assert no_origin.status_code == other_site.status_code == 403
    assert "must be JSON" in no_origin.json()["error"]
    assert big_json.status_code == too_big.status_code == 413
    assert fits.status_code == 202


async def test_a_pdf_reaches_anthropic_as_a_document_and_a_text_model_as_its_text(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    from tests.fakes.llm_server import ReceivedPart
    from tests.llmconnect.test_parts import make_pdf

    pdf = make_pdf("Revenue grew by nine percent")
    env = {
        "ANTHROPIC_BASE_URL": llm_server.anthropic_base_url,
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "LOCAL_BASE_URL": llm_server.openai_base_url,
    }
    server = await make_web(
        env=env, llmconnect_model="anthropic/claude-sonnet-4-5", edit_interval=0
    )
    sent = await upload(server, "pdf", "summarise", ("r.pdf", pdf, "application/pdf"))
    assert sent.status_code == 202
    request = llm_server.requests[-1]
    assert request.protocol == "anthropic"
    assert request.parts() == [
        ReceivedPart("text", "text", text="summarise"),
        ReceivedPart("document", "document", media_type="application/pdf", data=pdf, name="r.pdf"),
    ]
    async with client_for(server, headers={"Origin": server.url}) as client:
        switched = await client.post("/chat/pdf2/model", json={"model": "local/fake"})
    assert switched.status_code == 200
    await upload(server, "pdf2", "summarise", ("r.pdf", pdf, "application/pdf"))
    (content,) = [
        m["content"] for m in llm_server.requests[-1].json["messages"] if m["role"] == "user"
    ]
    assert content.startswith("summarise\n\n")
    assert "Revenue grew by nine percent" in content


# -- reply buttons (core.controls) -----------------------------------------------------------------


async def test_the_reply_being_written_is_stopped_by_its_own_button(make_web: ServeWeb) -> None:
    server = await make_web(options={"delay": 0.05})
    async with client_for(server) as client:
        await client.post("/chat/b1/send-message", json={"text": LONG_PROMPT})
        started: dict[str, Any] = {}
        ended: dict[str, Any] = {}
        async for event in events(client, "b1"):
            if event.event == "start":
                started = json.loads(event.data)
            elif event.event == "delta" and not ended.get("pressed"):
                rid = started["reply_id"]
                stop = await client.post(f"/chat/b1/replies/{rid}/stop", json={})
                assert stop.status_code == 200
                assert stop.json() == {
                    "id": "b1",
                    "reply_id": rid,
                    "text": "",
                    "vote": 0,
                    "regenerating": False,
                }
                ended["pressed"] = True
            elif event.event == "end":
                ended = json.loads(event.data)
        again = await client.post(f"/chat/b1/replies/{started['reply_id']}/stop", json={})
    assert ended["status"] == "cancelled"
    assert ended["reply_id"] == started["reply_id"]
    assert again.status_code == 400
    assert again.json() == {"error": "This reply has already ended."}


async def test_regenerate_asks_again_without_the_old_answer_and_streams_the_new_one(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url}, llmconnect_model="local/fake"
    )
    llm_server.enqueue(Reply("the first try"), Reply("the second try"))
    async with client_for(server) as client:
        await client.post("/chat/b2/send-message", json={"text": "make it good"})
        _, first = await collect(client, "b2")
        state = (await client.get("/chat/b2")).json()
        rid = state["messages"][-1]["id"]
        assert rid == first["reply_id"]
        pressed = await client.post(f"/chat/b2/replies/{rid}/regenerate", json={})
        deltas, second = await collect(client, "b2")
        after = (await client.get("/chat/b2")).json()
    assert pressed.status_code == 200
    assert pressed.json()["regenerating"] is True
    assert "".join(deltas) == second["content"] == "the second try"
    assert second["reply_id"] != rid
    sent = llm_server.requests[-1].json["messages"]
    assert [m["content"] for m in sent] == ["make it good"]
    assert [(m["role"], m["content"]) for m in after["messages"]] == [
        ("user", "make it good"),
        ("assistant", "the second try"),
    ]


async def test_only_the_latest_reply_regenerates_and_votes_are_counted_in_status(
    make_web: ServeWeb,
) -> None:
    server = await make_web()
    async with client_for(server) as client:
        await client.post("/chat/b3/send-message", json={"text": "one"})
        await collect(client, "b3")
        await client.post("/chat/b3/send-message", json={"text": "two"})
        await collect(client, "b3")
        messages = (await client.get("/chat/b3")).json()["messages"]
        old, new = messages[1]["id"], messages[3]["id"]
        stale = await client.post(f"/chat/b3/replies/{old}/regenerate", json={})
        up = await client.post(f"/chat/b3/replies/{new}/up", json={})
        state = (await client.get("/chat/b3")).json()
        down = await client.post(f"/chat/b3/replies/{new}/down", json={})
        withdrawn = await client.post(f"/chat/b3/replies/{new}/down", json={})
        await client.post(f"/chat/b3/replies/{old}/up", json={})
        status = (await client.get("/chat/b3/status")).json()
        unknown = await client.post("/chat/b3/replies/0123456789ab/up", json={})
        bad = await client.post(f"/chat/b3/replies/{new}/explode", json={})
    assert (stale.status_code, stale.json()) == (
        400,
        {"error": "Only the latest reply here can be regenerated."},
    )
    assert (up.json()["vote"], up.json()["text"]) == (1, "Thanks for the feedback: 👍.")
    assert state["messages"][-1]["vote"] == 1
    assert state["buttons"] is True
    assert down.json()["vote"] == -1
    assert (withdrawn.json()["vote"], withdrawn.json()["text"]) == (0, "Your 👎 was withdrawn.")
    assert status["text"].endswith("Feedback here: echo/echo 👍 1 👎 0.")
    assert unknown.status_code == 400
    assert bad.status_code == 422


async def test_reply_buttons_follow_the_cross_site_guard_and_the_token(make_web: ServeWeb) -> None:
    server = await make_web(auth_token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with client_for(server, headers=bearer) as client:
        await client.post("/chat/b4/send-message", json={"text": "hi"})
        _, end = await collect(client, "b4")
        rid = end["reply_id"]
        foreign = await client.post(
            f"/chat/b4/replies/{rid}/regenerate", headers={"Origin": "http://evil.example"}
        )
        cross = await client.post(
            f"/chat/b4/replies/{rid}/up", headers={"Sec-Fetch-Site": "cross-site"}
        )
        ok = await client.post(f"/chat/b4/replies/{rid}/up")
        state = (await client.get("/chat/b4")).json()
    async with client_for(server) as anonymous:
        refused = await anonymous.post(f"/chat/b4/replies/{rid}/up", json={})
    assert (foreign.status_code, cross.status_code) == (403, 403)
    assert ok.status_code == 200
    assert refused.status_code == 401
    assert state["messages"][-1]["id"] == rid  # the refused regeneration never ran


async def test_tools_lists_the_servers_and_enables_one_for_the_conversation(
    make_web: ServeWeb,
) -> None:
    server = await make_web(mcp_servers=stdio_servers("files"))
    await server.engine.start()
    await server.engine.mcp.wait_ready()
    async with client_for(server) as client:
        before = (await client.get("/chat/t/tools")).json()
        enabled = await client.post("/chat/t/tools", json={"server": "files", "enabled": True})
        after = (await client.get("/chat/t/tools")).json()
        other = (await client.get("/chat/u/tools")).json()
        unknown = await client.post("/chat/t/tools", json={"server": "nope", "enabled": True})
    assert before["servers"] == [
        {
            "name": "files",
            "enabled": False,
            "status": "ready",
            "tools": [
                "files.add",
                "files.echo",
                "files.slow",
                "files.fail",
                "files.env",
                "files.die",
            ],
        }
    ]
    assert before["text"].splitlines()[1] == "• files — 6 tools"
    assert enabled.json() == {"id": "t", "servers": ["files"]}
    assert after["servers"][0]["enabled"] is True
    assert after["text"].splitlines()[1] == "✓ files — 6 tools"
    assert other["servers"][0]["enabled"] is False
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "No tool server 'nope'. Servers: files."


async def test_a_tool_call_streams_its_progress_and_the_answer_follows(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/fake",
        mcp_servers=stdio_servers("files"),
        mcp_default_servers="files",
        edit_interval=0,
    )
    await server.engine.start()
    await server.engine.mcp.wait_ready()
    llm_server.enqueue(
        Reply(text="Adding.", tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 3})]),
        Reply(text="It is 5."),
    )
    async with client_for(server) as client:
        sent = await client.post("/chat/t/send-message", json={"text": "2 + 3?"})
        assert sent.status_code == 202
        tools: list[str] = []
        end: dict[str, Any] = {}
        async for event in events(client, "t"):
            if event.event == "tools":
                tools.append(json.loads(event.data))
            elif event.event == "end":
                end = json.loads(event.data)
                break
        stored = (await client.get("/chat/t")).json()
    assert tools[-1] == "🔧 files.add(a=2, b=3) ✓"
    assert (end["status"], end["content"], end["note"]) == (
        "complete",
        "Adding.\n\nIt is 5.",
        "🔧 files.add",
    )
    assert llm_server.requests[-1].tool_results()[0].content == "5"
    assert stored["messages"][-1]["note"] == "🔧 files.add"


async def test_a_confirm_call_waits_for_approve_or_deny_from_the_page(
    make_web: ServeWeb, llm_server: FakeLLMServer
) -> None:
    """The ``approvals`` event names the waiting call; ``approve?call=N`` runs it, ``deny``
    makes it an error result the model reads; a call no longer waiting is refused."""
    server = await make_web(
        env={"LOCAL_BASE_URL": llm_server.openai_base_url},
        llmconnect_model="local/fake",
        mcp_servers=stdio_servers("files", confirm=True),
        mcp_default_servers="files",
        edit_interval=0,
    )
    await server.engine.start()
    await server.engine.mcp.wait_ready()

    async def answer(client: httpx.AsyncClient, action: str) -> tuple[str, dict[str, Any]]:
        reply_id, pressed, end = "", "", {}
        async for event in events(client, "t"):
            if event.event == "start":
                reply_id = json.loads(event.data)["reply_id"]
            elif event.event == "approvals" and not pressed:
                waiting = json.loads(event.data)
                if waiting:
                    assert waiting == [
                        {"call": 0, "line": "🔧 files.add(a=2, b=3) — waiting for approval"}
                    ]
                    chats = [r for r in llm_server.requests if r.path.endswith("/completions")]
                    assert len(chats) % 2 == 1  # nothing more was asked yet
                    url = f"/chat/t/replies/{reply_id}/{action}"
                    assert (await client.post(url, json={})).status_code == 400  # which call?
                    done = await client.post(url, params={"call": 0}, json={})
                    assert done.status_code == 200, done.text
                    pressed = url
            elif event.event == "end":
                end = json.loads(event.data)
                break
        return pressed, end

    async with client_for(server) as client:
        for action, said in (("approve", "It is 5."), ("deny", "You said no.")):
            llm_server.enqueue(
                Reply(text="Adding.", tool_calls=[FakeToolCall("files__add", {"a": 2, "b": 3})]),
                Reply(text=said),
            )
            sent = await client.post("/chat/t/send-message", json={"text": "2 + 3?"})
            assert sent.status_code == 202
            pressed, end = await answer(client, action)
            assert end["status"] == "complete"
            assert end["content"] == f"Adding.\n\n{said}"
            late = await client.post(pressed, params={"call": 0}, json={})
            assert late.status_code == 400
            assert late.json()["error"] == NOT_WAITING
            result = llm_server.requests[-1].tool_results()[-1]  # earlier ones: the history
            if action == "approve":
                assert result.content == "5"
                assert end["note"] == "🔧 files.add"
            else:
                assert result.content == "Error: files.add: the user denied this call."
                assert end["note"] == "🔧 files.add ✗"
