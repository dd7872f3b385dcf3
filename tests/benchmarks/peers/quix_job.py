"""The benchmark's job in Quix Streams (run by tests/benchmarks/bench_peers.py with Quix's own virtualenv): a
consumer group from the earliest offset, JSON values, validation, enrichment from the catalogue loaded once,
engagement figures, `group_by` content (Quix's repartition topic), a 60 s event-time tumbling window (reduce:
count and engagement seconds) with its final value written to Redis. Windows close per partition once a later
event arrives (the bench ends the backlog with one later event per content)."""
from __future__ import annotations

import sys
import uuid
from datetime import datetime
from pathlib import Path

import redis
from quixstreams import Application

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

CATALOGUE = common.load_catalogue()
CLIENT = redis.Redis.from_url(common.REDIS_URL)


def event_time(value, headers, timestamp, timestamp_type) -> int:
    try:
        return int(datetime.fromisoformat(value['event_ts']).timestamp() * 1000)
    except (TypeError, KeyError, ValueError):
        return timestamp


def write(window, key, timestamp, headers) -> None:
    count, seconds = window['value']
    content_id = key.decode() if isinstance(key, bytes) else str(key)
    common.write_windows(CLIENT, [(window['start'] // 1000, content_id, count, seconds)])


def main() -> None:
    app = Application(broker_address=common.BOOTSTRAP, consumer_group=f'peer-quix-{uuid.uuid4().hex[:8]}',
                      auto_offset_reset='earliest', state_dir=sys.argv[1] if len(sys.argv) > 1 else 'quix-state',
                      loglevel='WARNING')
    topic = app.topic(common.TOPIC, value_deserializer='json', timestamp_extractor=event_time)
    sdf = app.dataframe(topic)
    sdf = sdf.apply(common.validate).filter(lambda event: event is not None)
    sdf = sdf.apply(lambda event: common.enrich(event, CATALOGUE)).filter(lambda event: event is not None)
    sdf = sdf.apply(lambda event: {'content_id': event['content_id'],
                                   'event_ts': event['event_ts'],
                                   'engagement_seconds': event['engagement_seconds'] or 0.0})
    sdf = sdf.group_by('content_id')
    sdf = (sdf.tumbling_window(duration_ms=common.WINDOW_S * 1000, grace_ms=common.GRACE_S * 1000)
           .reduce(reducer=lambda acc, event: [acc[0] + 1, acc[1] + event['engagement_seconds']],
                   initializer=lambda event: [1, event['engagement_seconds']])
           .final(closing_strategy='partition'))
    sdf = sdf.update(write, metadata=True)
    app.run(sdf)


if __name__ == '__main__':
    main()
