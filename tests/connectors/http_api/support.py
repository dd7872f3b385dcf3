"""Events and client settings the API sink tests share (the receiver itself is the `receiver` fixture of
`tests/conftest.py`)."""
from __future__ import annotations

from connectors.http_api.client import ApiSinkConfig
from schemas import EnrichedEvent
from tests.api_support import RECEIVER_SECRET, ReceiverProcess
from tests.transforms.builders import enriched

SECRET = RECEIVER_SECRET


def events(first: int, count: int) -> list[EnrichedEvent]:
    return [enriched(id=i, ts=1_795_522_212.0 + i) for i in range(first, first + count)]


def config(receiver: ReceiverProcess, **overrides) -> ApiSinkConfig:
    values = dict(api_url=receiver.url, client_id='engagement-local', client_secret=SECRET, batch_size=10,
                  timeout_seconds=0.3, max_attempts=3, breaker_failures=2, breaker_cooldown_seconds=0.5,
                  backoff_base_seconds=0.02, backoff_cap_seconds=0.2, retry_after_cap_seconds=0.1)
    values.update(overrides)
    return ApiSinkConfig(**values)
