"""`make demo`: start the stack, run the load generator, and watch change events arrive on Kafka live.

    python -m launch.demo [--rate 300] [--keep-stack] [stack settings]

Every second it prints what Debezium delivered to Kafka: events/s, the total, the mix of event types, and the
insert-to-Kafka delay (Kafka record time minus the row's event_ts, for events that are not stamped late on
purpose). Ctrl-C stops the generator and every stack component this command started (components that were
already running are left running).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime

from launch import config as stack_config
from launch.stack import Stack, StackError


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float('nan')
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def watch(cfg: stack_config.StackConfig, out=sys.stdout, seconds: float | None = None) -> int:
    """Print one line a second about change events arriving on the CDC topic; returns how many arrived."""
    from kafka import KafkaConsumer
    consumer = KafkaConsumer(cfg.events_topic, bootstrap_servers=cfg.kafka_bootstrap, auto_offset_reset='latest',
                             enable_auto_commit=False, group_id=None)
    total = 0
    by_type: collections.Counter = collections.Counter()
    started = tick = time.monotonic()
    delays: list[float] = []
    in_tick = 0
    last = None
    try:
        while seconds is None or time.monotonic() - started < seconds:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    row = (json.loads(record.value) or {}).get('after') or {}
                    total += 1
                    in_tick += 1
                    by_type[row.get('event_type')] += 1
                    event_ts = datetime.fromisoformat(row['event_ts'].replace('Z', '+00:00')).timestamp()
                    delay = record.timestamp / 1000 - event_ts
                    if delay < 5:  # events stamped late on purpose say nothing about the pipeline's delay
                        delays.append(delay)
                    last = row
            now = time.monotonic()
            if now - tick >= 1.0:
                mix = ' '.join(f'{t}={by_type[t]:,}' for t in ('play', 'pause', 'finish', 'click'))
                latest = (f'  last: id={last["id"]} {last["event_type"]} on {last["content_id"][:8]}…'
                          if last else '')
                print(f'[{time.strftime("%H:%M:%S")}] Kafka {cfg.events_topic}: {in_tick / (now - tick):7,.0f} ev/s'
                      f'  total {total:,}  {mix}  insert→Kafka p50 {statistics.median(delays) * 1000 if delays else float("nan"):4.0f} ms'
                      f' p99 {_percentile(delays, 0.99) * 1000:4.0f} ms{latest}', file=out, flush=True)
                tick, in_tick, delays = now, 0, []
    finally:
        consumer.close()
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rate', type=float, default=300, help='generator events per second (default 300)')
    parser.add_argument('--keep-stack', action='store_true', help='leave the stack running on exit')
    stack_config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = stack_config.from_args(args)
    except stack_config.ConfigError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    stack = Stack(cfg)
    already = {c.name for c in stack.components if c.running()}
    generator = None
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as cleanly on SIGTERM as on Ctrl-C
    try:
        print('starting the stack ...', flush=True)
        stack.up()
        generator = subprocess.Popen(
            [sys.executable, '-m', 'launch.generate', '--rate', str(args.rate), '--duration', '31536000'],
            env={**os.environ, **cfg.env()}, stdout=subprocess.DEVNULL,
            stderr=open(cfg.log_file('generator'), 'ab'))
        print(f'generator running at {args.rate:,.0f} events/s into Postgres (pid {generator.pid}); '
              f'watching Debezium change events on Kafka. Ctrl-C stops everything this demo started.', flush=True)
        watch(cfg)
    except KeyboardInterrupt:
        print('\nstopping ...', flush=True)
    except (StackError, stack_config.ConfigError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    finally:
        if generator and generator.poll() is None:
            generator.terminate()
            generator.wait(10)
        if not args.keep_stack:
            for comp in reversed(stack.components):
                if comp.name not in already:
                    print(f'  {comp.name:<9} {comp.stop()}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
