"""The GCRA rate limiter on the real Redis: units of work, no boundary burst, atomic under concurrency, expiry."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from shared.rate_limit import RateDecision, RateLimiter
from shared.settings import get_settings
from shared.store import key


@pytest.fixture
def limiter(redis_env) -> RateLimiter:
    return RateLimiter(get_settings(), redis.Redis.from_url(redis_env, decode_responses=True))


@pytest.fixture
def client(redis_env) -> redis.Redis:
    return redis.Redis.from_url(redis_env, decode_responses=True)


def test_five_a_minute_admits_five_then_asks_to_wait_twelve_seconds(limiter):
    decisions = [limiter.take("k", per_minute=5) for _ in range(5)]
    assert all(d.allowed and d.retry_after == 0 for d in decisions)
    assert [d.available for d in decisions] == [4, 3, 2, 1, 0]
    sixth = limiter.take("k", per_minute=5)
    assert not sixth.allowed
    assert sixth.available == 0
    assert 11.5 < sixth.retry_after <= 12.0


def test_a_cost_is_all_or_nothing(limiter):
    too_big = limiter.take("batch", per_minute=5, cost=100)
    assert (too_big.allowed, too_big.available, too_big.retry_after) == (False, 5, 0)  # full bucket: never fits
    whole = limiter.take("batch", per_minute=5, cost=5)  # the refusal spent nothing
    assert whole.allowed and whole.available == 0

    assert limiter.take("other", per_minute=5, cost=3) == RateDecision(allowed=True, retry_after=0, available=2)
    assert limiter.take("other", per_minute=5, cost=0).available == 2  # asking spends nothing
    refused = limiter.take("other", per_minute=5, cost=3)
    assert not refused.allowed and refused.available == 2
    assert 11.5 < refused.retry_after <= 12.0  # one more unit is needed: one interval


def test_a_cost_above_the_rate_reports_the_time_until_the_bucket_is_full(limiter):
    assert limiter.take("k", per_minute=6, cost=4).allowed
    refused = limiter.take("k", per_minute=6, cost=7)
    assert not refused.allowed and refused.available == 2
    assert 39.5 < refused.retry_after <= 40.0  # four units at ten seconds each


def test_no_burst_across_a_boundary(limiter):
    """600 a minute is 10 a second: after the burst is spent, 1.2 s admits about 12, not another 600."""
    assert limiter.take("fast", per_minute=600, cost=600).allowed
    assert not limiter.take("fast", per_minute=600).allowed
    admitted = 0
    started = time.monotonic()
    while time.monotonic() - started < 1.2:
        admitted += limiter.take("fast", per_minute=600).allowed
    assert 10 <= admitted <= 13


def test_concurrent_takes_never_overspend(limiter):
    with ThreadPoolExecutor(16) as pool:
        decisions = list(pool.map(lambda _: limiter.take("shared", per_minute=50), range(400)))
    admitted = sum(d.allowed for d in decisions)
    assert 50 <= admitted <= 51  # the burst, and at most one unit refilled (1.2 s) while the test runs


def test_keys_are_independent(limiter):
    assert limiter.take("a", per_minute=2, cost=2).allowed
    assert not limiter.take("a", per_minute=2).allowed
    b = limiter.take("b", per_minute=2)
    assert b.allowed and b.available == 1


def test_a_key_expires_when_its_bucket_is_full_again(limiter, client):
    settings = get_settings()
    limiter.take("ttl", per_minute=5)
    ttl = client.pttl(key(settings, "rate", "ttl"))
    assert 11_000 < ttl <= 12_000  # one unit spent: full again in one interval
    limiter.take("ttl", per_minute=5, cost=4)
    assert 59_000 < client.pttl(key(settings, "rate", "ttl")) <= 60_000

    limiter.take("brief", per_minute=60_000, cost=5)  # a millisecond a unit
    assert client.exists(key(settings, "rate", "brief"))
    time.sleep(0.05)
    assert not client.exists(key(settings, "rate", "brief"))
    assert limiter.take("brief", per_minute=60_000, cost=0).available == 60_000


def test_the_arrival_time_is_stored_as_exact_microseconds(limiter, client):
    """Lua's tostring keeps 14 digits, which would round a microsecond clock; the value must be exact."""
    seconds, micros = client.time()
    before = seconds * 1_000_000 + micros
    limiter.take("exact", per_minute=5)
    seconds, micros = client.time()
    after = seconds * 1_000_000 + micros
    stored = client.get(key(get_settings(), "rate", "exact"))
    assert stored.isdigit()
    assert before + 12_000_000 <= int(stored) <= after + 12_000_000


def test_a_refused_or_free_take_writes_nothing(limiter, client):
    settings = get_settings()
    assert not limiter.take("none", per_minute=5, cost=6).allowed
    assert limiter.take("none", per_minute=5, cost=0).allowed
    assert not client.exists(key(settings, "rate", "none"))


def test_invalid_arguments(limiter):
    with pytest.raises(ValueError):
        limiter.take("k", per_minute=0)
    with pytest.raises(ValueError):
        limiter.take("k", per_minute=5, cost=-1)
