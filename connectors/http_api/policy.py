"""Retry and breaker policy of the REST API sink, pure and clock-injected: full-jitter backoff, `Retry-After`,
and a circuit breaker that opens after consecutive server-side failures and closes after one good probe."""
from __future__ import annotations

import datetime
import email.utils
import random
import time
from typing import Callable


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))] after the `attempt`-th failed call."""
    return rng.uniform(0.0, min(cap, base * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_delay(attempt: int, retry_after: float | None, base: float, cap: float, retry_after_cap: float,
                rng: random.Random) -> float:
    """The wait before the next call: the jittered backoff, but never less than the (capped) Retry-After."""
    delay = backoff_seconds(attempt, base, cap, rng)
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_cap))
    return delay


class CircuitBreaker:
    """Closed -> open after `failure_threshold` consecutive failed requests -> after `cooldown_seconds` one probe
    (half-open) -> closed on its success, open again on its failure."""
    CLOSED, OPEN, PROBE = 'closed', 'open', 'probe'

    def __init__(self, failure_threshold: int, cooldown_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self.consecutive_failures = 0
        self.opened_at: float | None = None

    def before_request(self) -> str:
        """CLOSED: send normally; PROBE: send one probe with a single attempt; OPEN: do not send."""
        if self.opened_at is None:
            return self.CLOSED
        if self._clock() - self.opened_at >= self.cooldown_seconds:
            return self.PROBE
        return self.OPEN

    def record_success(self) -> bool:
        """Returns True when this success closed an open breaker."""
        was_open = self.opened_at is not None
        self.consecutive_failures, self.opened_at = 0, None
        return was_open

    def record_failure(self) -> bool:
        """Returns True when this failure opened the breaker (or re-opened it after a failed probe)."""
        self.consecutive_failures += 1
        if self.opened_at is not None or self.consecutive_failures >= self.failure_threshold:
            self.opened_at = self._clock()
            return True
        return False

    def seconds_until_probe(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_seconds - self._clock())
