"""Backoff with full jitter, Retry-After and the circuit breaker, on a fake clock."""
from __future__ import annotations

import email.utils
import random

import pytest

from connectors.http_api.policy import CircuitBreaker, backoff_seconds, parse_retry_after, retry_delay


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_backoff_is_full_jitter_doubling_up_to_the_cap():
    rng = random.Random(1)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (6, 8.0), (10, 8.0)):
        draws = [backoff_seconds(attempt, 0.5, 8.0, rng) for _ in range(2000)]
        assert 0 <= min(draws) < ceiling * 0.05 and ceiling * 0.95 < max(draws) <= ceiling


def test_retry_after_is_honoured_but_capped():
    rng = random.Random(2)
    assert all(retry_delay(1, 3.0, 0.5, 8.0, 10.0, rng) == 3.0 for _ in range(100))   # backoff < Retry-After
    assert all(retry_delay(1, 120.0, 0.5, 8.0, 10.0, rng) == 10.0 for _ in range(100))  # capped
    assert all(0 <= retry_delay(1, None, 0.5, 8.0, 10.0, rng) <= 0.5 for _ in range(100))


@pytest.mark.parametrize('header, seconds', [('5', 5.0), ('0', 0.0), (None, None), ('', None), ('soon', None),
                                             ('-3', None)])
def test_retry_after_header_forms(header, seconds):
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date():
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_breaker_opens_after_consecutive_failures_only():
    clock = FakeClock()
    breaker = CircuitBreaker(3, 10.0, clock)
    assert [breaker.record_failure(), breaker.record_failure()] == [False, False]
    assert breaker.record_success() is False           # a success in between resets the count
    assert [breaker.record_failure() for _ in range(3)] == [False, False, True]
    assert breaker.before_request() == CircuitBreaker.OPEN
    clock.now += 9.9
    assert breaker.before_request() == CircuitBreaker.OPEN
    assert breaker.seconds_until_probe() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.before_request() == CircuitBreaker.PROBE


def test_a_failed_probe_reopens_for_a_full_cooldown_and_a_good_one_closes():
    clock = FakeClock()
    breaker = CircuitBreaker(1, 5.0, clock)
    assert breaker.record_failure() is True
    clock.now += 5
    assert breaker.before_request() == CircuitBreaker.PROBE
    assert breaker.record_failure() is True              # probe failed: open again, counted as an opening
    clock.now += 4.9
    assert breaker.before_request() == CircuitBreaker.OPEN
    clock.now += 0.1
    assert breaker.before_request() == CircuitBreaker.PROBE
    assert breaker.record_success() is True              # closed by the probe
    assert breaker.before_request() == CircuitBreaker.CLOSED and breaker.consecutive_failures == 0
