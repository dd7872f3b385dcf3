"""The benchmark's job in Bytewax (run by tests/benchmarks/bench_peers.py with Bytewax's own virtualenv): Kafka
source from the beginning to the end of the topic (`tail=False`), JSON parse and validation, enrichment from the
catalogue loaded once, engagement figures, a 60 s event-time tumbling fold (count and engagement seconds) per
content, each closed window written to Redis."""
from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import redis
from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.operators import windowing as win
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.run import cli_main

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

ALIGN = datetime(2020, 1, 1, tzinfo=timezone.utc)
CATALOGUE = common.load_catalogue()


def parse(message):
    try:
        return common.validate(orjson.loads(message.value))
    except orjson.JSONDecodeError:
        return None


class RedisPartition(StatelessSinkPartition):
    def __init__(self):
        self.client = redis.Redis.from_url(common.REDIS_URL)

    def write_batch(self, items):
        common.write_windows(self.client, [
            (int((ALIGN + timedelta(seconds=common.WINDOW_S * window_id)).timestamp()), content_id, n, seconds)
            for content_id, (window_id, (n, seconds)) in items])


class RedisSink(DynamicSink):
    def build(self, step_id, worker_index, worker_count):
        return RedisPartition()


def fold(acc, event):
    acc[0] += 1
    acc[1] += event['engagement_seconds'] or 0.0
    return acc


flow = Dataflow('engagement')
messages = op.input('kafka', flow, KafkaSource([common.BOOTSTRAP], [common.TOPIC], tail=False))
events = op.filter_map('parse', messages, parse)
enriched = op.filter_map('enrich', events, lambda event: common.enrich(event, CATALOGUE))
keyed = op.key_on('by_content', enriched, lambda event: event['content_id'])
clock = win.EventClock(lambda event: event['ts'], wait_for_system_duration=timedelta(seconds=common.GRACE_S))
windows = win.fold_window('per_minute', keyed, clock,
                          win.TumblingWindower(length=timedelta(seconds=common.WINDOW_S), align_to=ALIGN),
                          builder=lambda: [0, 0.0], folder=fold, merger=lambda a, b: [a[0] + b[0], a[1] + b[1]],
                          ordered=False)
op.output('redis', windows.down, RedisSink())

if __name__ == '__main__':
    cli_main(flow, workers_per_process=1)
