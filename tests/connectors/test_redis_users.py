"""WriteUserEngagementToRedis against a real Redis (fixture `redis_only`): per user the N newest contents and the
engagement milliseconds per content type, unchanged by replays in any order, a CDC update replacing its event's
contribution, the TTL on every key."""
from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import apache_beam as beam
import pytest
import redis
from apache_beam.testing import test_pipeline

from connectors.redis_users import WriteUserEngagementToRedis

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 5, 9, 0, tzinfo=timezone.utc)
USER = str(uuid.UUID(int=1))
CONTENTS = [str(uuid.UUID(int=100 + i)) for i in range(6)]


def event(i: int, content: int, content_type: str, ms: int | None, lsn: int | None = None, user: str = USER):
    return SimpleNamespace(id=i, user_id=user, content_id=CONTENTS[content], content_type=content_type,
                           duration_ms=ms, source_lsn=lsn, event_ts=T0 + timedelta(seconds=i))


def write(cfg, events, prefix: str) -> None:
    with test_pipeline.TestPipeline(runner='FnApiRunner') as p:
        _ = (p | beam.Create(events, reshuffle=False)
             | WriteUserEngagementToRedis(cfg.redis_url, prefix, recent_contents=3, ttl_seconds=3600))


def test_recent_contents_and_milliseconds_per_type_survive_replays_and_updates(redis_only):
    events = [event(1, 0, 'video', 1000), event(2, 1, 'podcast', 2000), event(3, 2, 'video', None),
              event(4, 3, 'newsletter', 500), event(5, 0, 'video', 250), event(6, 4, 'podcast', 4000, lsn=10)]
    update = event(6, 4, 'podcast', 6000, lsn=20)  # a CDC update of event 6: its duration is now 6000
    stale = event(6, 4, 'podcast', 1, lsn=15)      # an older version arriving late: ignored
    prefix = f'u{uuid.uuid4().hex[:6]}'
    write(redis_only, events, prefix)
    replay = events + [update, stale] + events     # everything again, in another order
    random.Random(7).shuffle(replay)
    write(redis_only, replay, prefix)
    client = redis.Redis.from_url(redis_only.redis_url, decode_responses=True)
    recent = client.zrevrange(f'{prefix}:user:{USER}:recent', 0, -1, withscores=True)
    ts = lambda i: (T0 + timedelta(seconds=i)).timestamp() * 1000  # noqa: E731
    assert recent == [(CONTENTS[4], ts(6)), (CONTENTS[0], ts(5)), (CONTENTS[3], ts(4))]  # 3 newest, by last event
    assert client.hgetall(f'{prefix}:user:{USER}:ms') == {'video': '1250', 'podcast': '8000', 'newsletter': '500'}
    for key in client.keys(f'{prefix}:user:*'):
        assert 3500 < client.ttl(key) <= 3600


def test_invalid_settings_fail_at_construction():
    with pytest.raises(ValueError, match='recent_contents'):
        WriteUserEngagementToRedis('redis://127.0.0.1:1/0', 'p', recent_contents=0)
