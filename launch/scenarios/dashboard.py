"""A live terminal view of the pipeline, read from where its results land (Redis, Kafka):

    python -m launch.scenarios.dashboard [--window-seconds 60] [--redis-prefix engagement] [--group engagement-pipeline]

Once a second: the top contents of the current event-time window per content type (from the Redis data model in
docs/pipeline.md), events/s arriving on Kafka and events/s counted into Redis, dead letters so far, and the consumer
group's lag. It only reads; it never writes.
"""
from __future__ import annotations

import argparse
import sys
import time

from connectors.credentials import CredentialsRefused, check_kafka, check_redis
from launch.monitor.readmodel import CONTENT_TYPES
from launch.stack import config as stack_config


class Snapshot:
    def __init__(self, cfg: stack_config.StackConfig, prefix: str, window_seconds: int, group: str):
        import redis
        from kafka import KafkaAdminClient, KafkaConsumer
        self.cfg, self.prefix, self.window, self.group = cfg, prefix, window_seconds, group
        self.redis = redis.Redis.from_url(cfg.redis_url, decode_responses=True, **cfg.redis_credentials())
        self.consumer = KafkaConsumer(**cfg.kafka_client_config(), enable_auto_commit=False)
        self.admin = KafkaAdminClient(**cfg.kafka_client_config())

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()
        self.redis.close()

    def _end_offsets(self, topics) -> dict:
        from kafka import TopicPartition
        tps = [TopicPartition(t, p) for t in topics for p in sorted(self.consumer.partitions_for_topic(t) or ())]
        return self.consumer.end_offsets(tps) if tps else {}

    def counted(self, now: float) -> int:
        """Events counted into Redis over the windows that can still change (the last 15 minutes)."""
        start = int(now // self.window) * self.window
        keys = [f'{self.prefix}:totals:{w}' for w in range(start - 900 // self.window * self.window, start + 1,
                                                            self.window)]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, 'events')
        return sum(int(v or 0) for v in pipe.execute())

    def read(self) -> dict:
        now = time.time()
        window = int(now // self.window) * self.window
        top = {}
        for content_type in CONTENT_TYPES:
            ranked = self.redis.zrevrange(f'{self.prefix}:top:{window}:{content_type}', 0, 4, withscores=True)
            pipe = self.redis.pipeline(transaction=False)
            for content_id, _ in ranked:
                pipe.hget(f'{self.prefix}:stats:{window}:{content_id}', 'title')
            top[content_type] = [(title or content_id, int(score))
                                 for (content_id, score), title in zip(ranked, pipe.execute())]
        ends = self._end_offsets([self.cfg.events_topic, self.cfg.raw_topic])
        committed = self.admin.list_group_offsets({self.group: None}).get(self.group, {}) if self.group else {}
        lag = sum(max(0, end - committed[tp].offset) for tp, end in ends.items()
                  if tp in committed and committed[tp].offset >= 0)
        dead = sum(self._end_offsets([self.cfg.dead_letter_topic]).values())
        return {'at': now, 'window': window, 'top': top, 'in': sum(ends.values()), 'counted': self.counted(now),
                'dead_letters': dead, 'lag': lag if committed else None,
                'totals': self.redis.hgetall(f'{self.prefix}:totals:{window}'),
                'alerts': [fields for _, fields in self.redis.xrevrange(f'{self.prefix}:alerts', count=3)]}


def render(cur: dict, prev: dict | None) -> str:
    dt = (cur['at'] - prev['at']) if prev else 0
    rate_in = (cur['in'] - prev['in']) / dt if dt else 0.0
    rate_out = (cur['counted'] - prev['counted']) / dt if dt else 0.0
    t = cur['totals']
    lines = [f'engagement now — window {time.strftime("%H:%M:%S", time.gmtime(cur["window"]))} UTC   '
             f'in {rate_in:,.0f} ev/s   counted {rate_out:,.0f} ev/s   dead letters {cur["dead_letters"]:,}   '
             f'Kafka lag {"n/a" if cur["lag"] is None else format(cur["lag"], ",")}',
             f'this window: {int(t.get("events", 0)):,} events  '
             + '  '.join(f'{k}={int(t.get(k, 0)):,}' for k in ('play', 'pause', 'finish', 'click'))]
    for content_type, rows in cur['top'].items():
        lines.append(f'  top {content_type:<10} ' + (' | '.join(f'{title[:28]} ({n})' for title, n in rows)
                                                       or '(nothing yet)'))
    if cur.get('alerts'):
        lines.append('  viral: ' + ' | '.join(
            f"{a.get('title', '?')[:28]} {time.strftime('%H:%M', time.gmtime(int(a.get('window_start', 0))))} "
            f"({a.get('events')} vs {float(a.get('trailing_average', 0)):.1f})" for a in cur['alerts']))
    return '\n'.join(lines)


def run(cfg: stack_config.StackConfig, prefix: str, window_seconds: int, group: str, out=sys.stdout,
        seconds: float | None = None, alive=lambda: True) -> None:
    """Refresh the view every second for `seconds` (None: forever) or until `alive()` turns false."""
    snap = Snapshot(cfg, prefix, window_seconds, group)
    prev = None
    started = time.monotonic()
    tty = out.isatty()
    try:
        while (seconds is None or time.monotonic() - started < seconds) and alive():
            try:
                cur = snap.read()
            except Exception as exc:  # a component restarting: say so, keep watching
                out.write(f'(cannot read the pipeline\'s results right now: {type(exc).__name__}: {exc})\n')
                time.sleep(1.0)
                continue
            text = render(cur, prev)
            out.write(('\x1b[H\x1b[J' if tty else '') + text + '\n' + ('' if tty else '\n'))
            out.flush()
            prev = cur
            time.sleep(1.0)
    finally:
        snap.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.scenarios.dashboard', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--window-seconds', type=int, default=60, help='the pipeline\'s --window_seconds')
    parser.add_argument('--redis-prefix', default='engagement', help='the pipeline\'s --redis_prefix')
    parser.add_argument('--group', default='engagement-pipeline', help='the pipeline\'s --consumer_group')
    parser.add_argument('--seconds', type=float, default=None, help='stop after this many seconds (default never)')
    stack_config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = stack_config.from_args(args)
        check_kafka(cfg.kafka_client_config())
        check_redis(cfg.redis_url, credentials=cfg.redis_credentials())
    except (stack_config.ConfigError, CredentialsRefused) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    try:
        run(cfg, args.redis_prefix, args.window_seconds, args.group, seconds=args.seconds)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
