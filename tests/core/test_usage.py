"""Tests for core.usage: token counts per reply, daily quotas at midnight UTC, prices, /status.

The engine talks to the LLM stand-in over loopback as the OpenAI-compatible provider ``local``
(it asks for ``stream_options.include_usage``; the stand-in then reports 7 input tokens and one
output token per delta). Calendar time is the injected :class:`FakeClock`'s ``wall()``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.clock import FakeClock
from core.commands import Command, execute
from core.conversations import ConversationKey, Status
from core.engine import ChatEngine, Refused
from core.policy import Actor
from core.settings import SettingsError, load_settings
from core.usage import Tokens, cost_of, price_of, resets_in, utc_day
from tests.fakes.llm_server import FakeLLMServer

from .conftest import KEY, OTHER, EngineMaker

#: 20:48 UTC: the daily counters reset in 3 h 12 min.
EVENING = datetime(2026, 12, 2, 20, 48, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 12, 3, tzinfo=UTC).timestamp()
ALICE, BOB = Actor("alice"), Actor("bob")
#: "You said: one two" is 4 deltas: 7 input + 4 output tokens.
PROMPT, PER_REPLY = "one two", Tokens(7, 4)


def chats(server: FakeLLMServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/chat/completions"))


async def ask(engine: ChatEngine, key: ConversationKey = KEY, actor: Actor = ALICE) -> None:
    reply = await engine.submit(key, PROMPT, actor=actor)
    await reply
    assert reply.status is Status.COMPLETE, reply.error


# -- the calendar and prices ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "minute", "second", "expected"),
    [
        (20, 48, 0, "resets in 3 h 12 min (00:00 UTC)"),
        (21, 0, 0, "resets in 3 h (00:00 UTC)"),
        (23, 59, 30, "resets in 1 min (00:00 UTC)"),  # rounded up, never "0 min"
        (23, 15, 1, "resets in 45 min (00:00 UTC)"),
        (0, 0, 0, "resets in 24 h (00:00 UTC)"),
    ],
)
def test_resets_in_says_when_midnight_utc_comes(
    hour: int, minute: int, second: int, expected: str
) -> None:
    wall = datetime(2026, 12, 2, hour, minute, second, tzinfo=UTC).timestamp()
    assert resets_in(wall) == expected


def test_the_day_is_the_utc_calendar_day() -> None:
    assert utc_day(MIDNIGHT - 1) == "2026-12-02"
    assert utc_day(MIDNIGHT) == "2026-12-03"


def test_prices_exact_name_then_longest_prefix_then_built_in() -> None:
    prices = {"groq/*": (1.0, 2.0), "groq/llama-3.3*": (3.0, 4.0), "openai/gpt-4o": (5.0, 6.0)}
    assert price_of("groq/llama-3.3-70b-versatile", prices) == (3.0, 4.0)
    assert price_of("groq/mixtral", prices) == (1.0, 2.0)
    assert price_of("openai/gpt-4o", prices) == (5.0, 6.0)
    # Not in MODEL_PRICES: the built-in (approximate) table; unknown anywhere: None.
    assert price_of("openai/gpt-4o-mini", prices) == (0.15, 0.60)
    assert price_of("openai/gpt-4o-mini", {"openai/*": (9.0, 9.0)}) == (9.0, 9.0)
    assert price_of("echo/echo", {}) == (0.0, 0.0)
    assert price_of("someone/else", prices) is None


def test_cost_counts_priced_models_and_names_the_others() -> None:
    cost, unpriced = cost_of(
        {"openai/gpt-4o-mini": Tokens(1_000_000, 2_000_000), "mystery/m": Tokens(5, 5)}, {}
    )
    assert cost == pytest.approx(0.15 + 1.20)
    assert unpriced == ["mystery/m"]


def test_model_prices_is_json_and_refuses_a_negative_price() -> None:
    settings = load_settings(model_prices='{"openai/gpt-4o-mini": [0.1, 0.2], " groq/*": [1, 2]}')
    assert settings.model_prices == {"openai/gpt-4o-mini": (0.1, 0.2), "groq/*": (1.0, 2.0)}
    with pytest.raises(SettingsError, match="MODEL_PRICES"):
        load_settings(model_prices='{"openai/gpt-4o-mini": [-1, 0.2]}')
    with pytest.raises(SettingsError, match="MODEL_PRICES"):
        load_settings(model_prices="{not json")
    with pytest.raises(SettingsError) as caught:
        load_settings(user_daily_tokens=-1)
    # A count, not a secret: the wrong value is shown.
    assert caught.value.problems == [
        "USER_DAILY_TOKENS: Input should be greater than or equal to 0 (got -1)"
    ]


# -- counting --------------------------------------------------------------------------------------


async def test_a_reply_counts_its_tokens_for_the_conversation_and_the_user(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(clock=FakeClock(wall_start=EVENING))
    await ask(engine)
    await ask(engine, OTHER)
    # The provider was asked for its usage (OpenAI-compatible: only when asked).
    assert llm_server.requests[-1].json["stream_options"] == {"include_usage": True}
    report = await engine.usage_of(KEY, ALICE)
    assert report is not None
    assert report.day == "2026-12-02"
    assert report.conversation_day == {"local/fake": PER_REPLY}
    assert report.conversation_total == {"local/fake": PER_REPLY}
    assert report.user_day == {"local/fake": Tokens(14, 8)}  # both conversations


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
async def test_every_protocol_s_usage_is_counted(
    make_engine: EngineMaker, llm_server: FakeLLMServer, provider: str
) -> None:
    base = {"anthropic": llm_server.anthropic_base_url, "gemini": llm_server.gemini_base_url}
    env = {
        f"{provider.upper()}_API_KEY": "test-key-123",
        f"{provider.upper()}_BASE_URL": base[provider],
    }
    engine = make_engine(
        env=env, llmconnect_model=f"{provider}/fake", clock=FakeClock(wall_start=EVENING)
    )
    await ask(engine)
    report = await engine.usage_of(KEY, ALICE)
    assert report is not None
    assert report.user_day == {f"{provider}/fake": PER_REPLY}


async def test_a_provider_that_reports_no_usage_counts_nothing_and_status_says_so(
    make_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    # Mistral's spec sends no stream_options; the stand-in then reports no usage.
    env = {"MISTRAL_API_KEY": "test-key-123", "MISTRAL_BASE_URL": llm_server.openai_base_url}
    engine = make_engine(env=env, llmconnect_model="mistral/fake", clock=FakeClock(EVENING))
    await ask(engine)
    assert "stream_options" not in llm_server.requests[-1].json
    report = await engine.usage_of(KEY, ALICE)
    assert report is not None
    assert report.conversation_day == {}
    assert report.user_day == {}
    status = (await execute(engine, KEY, Command("status"), ALICE)).text
    assert "Usage not reported by mistral" in status
    assert "test-key-123" not in status


# -- quotas -----------------------------------------------------------------------------------------


async def test_user_cap_refuses_at_the_cap_and_resets_at_midnight_utc(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    clock = FakeClock(wall_start=EVENING)
    engine = local_engine(clock=clock, user_daily_tokens=2 * PER_REPLY.total)
    await ask(engine)
    await ask(engine, OTHER)  # the cap is the user's, across conversations
    sent = chats(llm_server)
    with pytest.raises(Refused) as refused:
        await engine.submit(KEY, PROMPT, actor=ALICE)
    assert refused.value.user_message == (
        "You have used your 22 tokens for today (22); the limit resets in 3 h 12 min (00:00 UTC)."
    )
    assert chats(llm_server) == sent  # nothing reached the LLM
    await ask(engine, KEY, BOB)  # another user is not affected
    other_platform = ConversationKey("other", "general")
    await ask(engine, other_platform, ALICE)  # nor the same id on another platform

    await clock.advance(MIDNIGHT - 1 - clock.wall())
    with pytest.raises(Refused, match=r"resets in 1 min \(00:00 UTC\)"):
        await engine.submit(KEY, PROMPT, actor=ALICE)
    await clock.advance(1)  # 00:00 UTC: a new day
    await ask(engine)
    report = await engine.usage_of(KEY, ALICE)
    assert report is not None
    assert report.user_day == {"local/fake": PER_REPLY}
    assert report.conversation_total == {"local/fake": Tokens(21, 12)}  # 3 replies here


@pytest.mark.parametrize(
    ("cap", "replies"),
    [
        # Cap N: a prompt when the day's count is N - 1 runs (and its reply finishes past the
        # cap); at N it is refused.
        (PER_REPLY.total + 1, 2),
        (PER_REPLY.total, 1),
        (PER_REPLY.total - 1, 1),
    ],
)
async def test_the_cap_is_checked_before_a_prompt(
    local_engine: EngineMaker, cap: int, replies: int
) -> None:
    engine = local_engine(clock=FakeClock(wall_start=EVENING), user_daily_tokens=cap)
    for _ in range(replies):
        await ask(engine)
    with pytest.raises(Refused, match="You have used your"):
        await engine.submit(KEY, PROMPT, actor=ALICE)
    report = await engine.usage_of(KEY, ALICE)
    assert report is not None
    assert report.user_day == {"local/fake": Tokens(7 * replies, 4 * replies)}


async def test_channel_cap_refuses_everyone_in_that_conversation_only(
    local_engine: EngineMaker, llm_server: FakeLLMServer
) -> None:
    engine = local_engine(clock=FakeClock(wall_start=EVENING), channel_daily_tokens=10)
    await ask(engine, KEY, ALICE)
    sent = chats(llm_server)
    with pytest.raises(Refused) as refused:
        await engine.submit(KEY, PROMPT, actor=BOB)
    assert refused.value.user_message == (
        "This conversation has used its 10 tokens for today (11); the limit resets in 3 h 12 min "
        "(00:00 UTC)."
    )
    with pytest.raises(Refused, match="This conversation"):
        await engine.submit(KEY, PROMPT)  # no actor (the web): the conversation's cap holds
    assert chats(llm_server) == sent
    await ask(engine, OTHER, BOB)


async def test_caps_are_live(local_engine: EngineMaker) -> None:
    engine = local_engine(clock=FakeClock(wall_start=EVENING), user_daily_tokens=5)
    await ask(engine)
    with pytest.raises(Refused):
        await engine.submit(KEY, PROMPT, actor=ALICE)
    engine.update_settings(load_settings(llmconnect_model="local/fake", user_daily_tokens=0))
    await ask(engine)


# -- /status ----------------------------------------------------------------------------------------


async def test_status_shows_tokens_cost_price_and_the_users_day(
    local_engine: EngineMaker,
) -> None:
    clock = FakeClock(wall_start=EVENING)
    engine = local_engine(
        clock=clock, user_daily_tokens=100, model_prices={"local/*": (10_000, 5_000)}
    )
    await ask(engine)
    await ask(engine, OTHER)
    lines = (await execute(engine, KEY, Command("status"), ALICE)).text.splitlines()
    assert lines[1:] == [
        # 7 * 10,000 + 4 * 5,000 dollars per million tokens: $0.09
        "Tokens here today (UTC): 11 (7 in, 4 out), about $0.09; in total: 11 (7 in, 4 out), "
        "about $0.09.",
        "Price of local/fake: $10000 / $5000 per million input / output tokens (approximate).",
        "Your tokens today: 22 of 100; resets in 3 h 12 min (00:00 UTC).",
        "Feedback here: none yet.",
    ]
    await clock.advance(MIDNIGHT - clock.wall())
    lines = (await execute(engine, KEY, Command("status"), ALICE)).text.splitlines()
    assert lines[1] == (
        "Tokens here today (UTC): 0 (0 in, 0 out); in total: 11 (7 in, 4 out), about $0.09."
    )
    assert lines[3] == "Your tokens today: 0 of 100; resets in 24 h (00:00 UTC)."


async def test_status_without_a_price_or_caps(local_engine: EngineMaker) -> None:
    engine = local_engine(clock=FakeClock(wall_start=EVENING), channel_daily_tokens=50)
    await ask(engine)
    lines = (await execute(engine, KEY, Command("status"), ALICE)).text.splitlines()
    assert lines[1:] == [
        "Tokens here today (UTC): 11 (7 in, 4 out); in total: 11 (7 in, 4 out).",
        "Price of local/fake: not known (MODEL_PRICES sets it).",
        "Daily limit here: 11 of 50 tokens used; resets in 3 h 12 min (00:00 UTC).",
        "Feedback here: none yet.",
    ]
