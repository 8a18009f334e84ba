"""Tests for core.policy: allow/block lists, the admin rule and the per-user rate limit."""

from __future__ import annotations

from typing import Any

import pytest

from core.clock import FakeClock
from core.policy import AccessPolicy, Actor, SlidingLog, UserRateLimiter, is_prompt
from core.settings import load_settings

CHANNEL_OFF = "I am not enabled in this channel."
USER_OFF = "Sorry, you are not allowed to use this bot."


def policy(**overrides: Any) -> AccessPolicy:
    return AccessPolicy(load_settings(**overrides))


def member(user: str, *roles: str, admin: bool = False) -> Actor:
    return Actor(user, frozenset(roles), platform_admin=admin)


def test_everyone_is_served_by_default() -> None:
    p = policy()
    assert p.refusal(member("anyone"), "any-channel") is None
    assert p.refusal(None, "any-channel") is None


def test_blocked_and_not_allowed_channels() -> None:
    assert policy(blocked_channels="c1, c2").refusal(member("u"), "c2") == CHANNEL_OFF
    assert policy(blocked_channels="c1").refusal(member("u"), "c3") is None
    allowed = policy(allowed_channels="c1")
    assert allowed.refusal(member("u"), "c1") is None
    assert allowed.refusal(member("u"), "c2") == CHANNEL_OFF
    assert allowed.refusal(None, "c2") == CHANNEL_OFF  # channels are checked without an actor
    # Blocked wins over allowed.
    assert policy(allowed_channels="c1", blocked_channels="c1").refusal(None, "c1") == CHANNEL_OFF


def test_a_thread_follows_its_parent_channel() -> None:
    # A thread's own id is rarely listed: it is served when its parent channel is allowed...
    allowed = policy(allowed_channels="c1")
    assert allowed.refusal(member("u"), "c1/t1", parent="c1") is None
    assert allowed.refusal(member("u"), "c2/t1", parent="c2") == CHANNEL_OFF
    # ...and refused when either is blocked.
    assert policy(blocked_channels="c1").refusal(None, "c1/t1", parent="c1") == CHANNEL_OFF
    assert policy(blocked_channels="c1/t1").refusal(None, "c1/t1", parent="c1") == CHANNEL_OFF


def test_blocked_users_and_roles() -> None:
    p = policy(blocked_users="troll", blocked_roles="muted")
    assert p.refusal(member("troll"), "c") == USER_OFF
    assert p.refusal(member("u", "muted", "vip"), "c") == USER_OFF
    assert p.refusal(member("u", "vip"), "c") is None


def test_allowed_users_only() -> None:
    p = policy(allowed_users="alice,bob")
    assert p.refusal(member("alice"), "c") is None
    assert p.refusal(member("carol", "anything"), "c") == USER_OFF


def test_allowed_roles_only() -> None:
    p = policy(allowed_roles="staff")
    assert p.refusal(member("u", "staff"), "c") is None
    assert p.refusal(member("u", "guest"), "c") == USER_OFF
    assert p.refusal(member("u"), "c") == USER_OFF


def test_allowed_users_or_roles_either_admits() -> None:
    p = policy(allowed_users="alice", allowed_roles="staff")
    assert p.refusal(member("alice"), "c") is None
    assert p.refusal(member("carol", "staff"), "c") is None
    assert p.refusal(member("carol", "guest"), "c") == USER_OFF


def test_blocked_beats_allowed() -> None:
    p = policy(allowed_users="alice", blocked_users="alice", allowed_roles="staff")
    assert p.refusal(member("alice", "staff"), "c") == USER_OFF
    p = policy(allowed_roles="staff", blocked_roles="muted")
    assert p.refusal(member("u", "staff", "muted"), "c") == USER_OFF


def test_admin_rule() -> None:
    open_policy = policy()
    assert open_policy.is_admin(member("anyone"))
    assert open_policy.is_admin(None)

    p = policy(admin_user_ids="boss, deputy")
    assert p.is_admin(member("boss"))
    assert p.is_admin(member("deputy"))
    assert p.is_admin(member("owner", admin=True))
    assert not p.is_admin(member("someone"))
    assert not p.is_admin(member("someone", "admin-role"))
    assert not p.is_admin(None)


# -- rate limit -----------------------------------------------------------------------------------


async def test_rate_limit_sliding_window() -> None:
    clock = FakeClock()
    limiter = UserRateLimiter(limit=2, window=10, clock=clock)

    assert limiter.retry_after("u") == 0
    await clock.advance(1)
    assert limiter.retry_after("u") == 0
    await clock.advance(1)
    assert limiter.retry_after("u") == pytest.approx(8)  # until the first one leaves the window
    assert limiter.retry_after("other") == 0

    await clock.advance(8)  # t=10: the first prompt (t=0) has expired
    assert limiter.retry_after("u") == 0
    assert limiter.retry_after("u") == pytest.approx(1)  # t=1 is still in the window


async def test_refused_prompts_are_not_counted() -> None:
    clock = FakeClock()
    limiter = UserRateLimiter(limit=1, window=5, clock=clock)
    assert limiter.retry_after("u") == 0
    for _ in range(10):
        await clock.advance(0.4)
        assert limiter.retry_after("u") > 0
    await clock.advance(1)  # t=5
    assert limiter.retry_after("u") == 0


def test_limit_zero_is_unlimited() -> None:
    limiter = UserRateLimiter(limit=0, window=60, clock=FakeClock())
    assert all(limiter.retry_after("u") == 0 for _ in range(1000))


async def test_rate_limiter_memory_stays_bounded() -> None:
    clock = FakeClock()
    limiter = UserRateLimiter(limit=1, window=1, clock=clock)
    for n in range(10_001):
        limiter.retry_after(f"user{n}")
    await clock.advance(2)
    limiter.retry_after("newcomer")
    assert len(limiter._log) <= 2
    assert limiter.retry_after("user0") == 0  # forgotten users start afresh


async def test_sliding_log_waits_without_counting_and_stays_bounded() -> None:
    clock = FakeClock()
    log = SlidingLog(limit=2, window=10, clock=clock)
    log.record("ip")
    assert log.wait("ip") == 0  # asking does not count
    log.record("ip")
    assert log.wait("ip") == 10
    await clock.advance(10)
    assert log.wait("ip") == 0  # the log emptied by the check stays, empty
    for n in range(10_001):
        log.record(f"other{n}")
    await clock.advance(10)
    log.record("newcomer")  # past 10,000 keys: the expired and the empty logs are forgotten
    assert set(log._log) == {"newcomer"}


def test_follow_up_settings_defaults() -> None:
    s = load_settings()
    assert s.follow_up_in_threads is True
    assert s.auto_reply_channels == []
    assert s.allow_bots is False


def test_follow_up_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOLLOW_UP_IN_THREADS", "false")
    monkeypatch.setenv("AUTO_REPLY_CHANNELS", "C1, C2,")
    monkeypatch.setenv("ALLOW_BOTS", "true")
    s = load_settings()
    assert (s.follow_up_in_threads, s.auto_reply_channels, s.allow_bots) == (
        False,
        ["C1", "C2"],
        True,
    )


def test_is_prompt_mentions_dms_threads_and_auto_reply_channels() -> None:
    s = load_settings(auto_reply_channels="A1")
    plain = {"mention": False, "direct": False, "followed_thread": False}
    assert is_prompt(s, **{**plain, "mention": True}, channel="c")
    assert is_prompt(s, **{**plain, "direct": True}, channel="d")
    assert is_prompt(s, **{**plain, "followed_thread": True}, channel="t")
    assert not is_prompt(s, **plain, channel="c")
    assert is_prompt(s, **plain, channel="A1")
    assert is_prompt(s, **plain, channel="thread", parent="A1")
    assert not is_prompt(s, **plain, channel="thread", parent="c")
    off = load_settings(follow_up_in_threads=False)
    assert not is_prompt(off, **{**plain, "followed_thread": True}, channel="t")
    assert is_prompt(off, **{**plain, "mention": True}, channel="t")


def test_is_prompt_never_the_bots_own_and_other_bots_only_when_allowed() -> None:
    ask = {"mention": True, "direct": False, "followed_thread": True, "channel": "A1"}
    s = load_settings(auto_reply_channels="A1")
    assert not is_prompt(s, **ask, author_is_self=True, author_is_bot=True)
    assert not is_prompt(s, **ask, author_is_bot=True)
    allowed = load_settings(auto_reply_channels="A1", allow_bots=True)
    assert is_prompt(allowed, **ask, author_is_bot=True)
    assert not is_prompt(allowed, **ask, author_is_self=True, author_is_bot=True)
