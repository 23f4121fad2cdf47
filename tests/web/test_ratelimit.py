"""The lookup rate limit: a token bucket per client, on an injected clock, with bounded memory."""

from __future__ import annotations

import pytest

from pipeline.web.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_client_gets_its_burst_then_waits_for_the_next_token() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    assert [limiter.take("10.0.0.1").allowed for _ in range(4)] == [True, True, True, False]
    refused = limiter.take("10.0.0.1")
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("10.0.0.1").allowed
    assert not limiter.take("10.0.0.1").allowed


def test_the_refill_is_capped_at_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1.0, burst=2, clock=clock)
    clock.now += 3600
    assert [limiter.take("a").allowed for _ in range(3)] == [True, True, False]


def test_clients_have_separate_buckets() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, clock=Clock())
    assert limiter.take("a").allowed and not limiter.take("a").allowed
    assert limiter.take("b").allowed


def test_idle_buckets_are_dropped_once_full_again() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1.0, burst=5, clock=clock)
    for client in ("a", "b", "c"):
        limiter.take(client)
    assert len(limiter) == 3
    clock.now += 0.5
    limiter.take("c")
    assert len(limiter) == 3  # a and b are still refilling: kept
    clock.now += 0.6  # a and b full again (1 s after their only lookup); c not yet
    limiter.take("d")
    assert len(limiter) == 2
    assert [limiter.take("c").allowed for _ in range(5)] == [True, True, True, True, False]  # 4.1 left


def test_memory_is_bounded_by_max_clients_least_recently_used_first() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=0.001, burst=1, max_clients=100, clock=clock)
    for i in range(1000):
        limiter.take(f"client-{i}")
        clock.now += 0.001
    assert len(limiter) == 100
    assert not limiter.take("client-999").allowed  # recent: still limited
    assert limiter.take("client-0").allowed  # evicted long ago: starts with a full bucket


@pytest.mark.parametrize(("rate", "burst", "clients"), [(0.0, 1, 1), (1.0, 0, 1), (1.0, 1, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int, clients: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=rate, burst=burst, max_clients=clients)
