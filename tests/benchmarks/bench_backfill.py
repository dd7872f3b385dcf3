"""Benchmark: a backfill (`--mode=backfill`) of `--events` rows of Postgres through the whole graph into Redis.

    .venv/bin/python -m tests.benchmarks.bench_backfill [--events 500000] [--hours 2] [--runner DirectRunner]
        [--all-sinks] [--keep] [-- <pipeline flags>]

Starts a private stack, stops Kafka Connect (the rows would otherwise also go through Debezium, costing the cores
the backfill is measured on), inserts `--events` rows with one SQL statement (spread over `--hours` of event time
ending before the window in progress, over the 600 contents of the catalogue), then runs
`python -m pipelines.engagement --mode=backfill --since=<start>` into a Redis prefix of its own (Redis only, unless
`--all-sinks`: BigQuery too) and waits for it to exit. Prints the wall time from start to exit, events/s including
start-up, CPU seconds and peak RSS per process, and whether Redis equals SQL for every window. Not a test.
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time

from launch.scenarios import verify
from launch.stack.stack import Stack
from tests.benchmarks.bench_pipeline import ProcessAccount
from tests.conftest import private_config

WINDOW_S = 60
PREFIX = 'backfill'
INSERT = """
INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
SELECT md5('content-' || (1 + (g * 7919) % 600))::uuid,
       md5('user-' || (g * 104729) % 20000)::uuid,
       (ARRAY['play', 'pause', 'finish', 'click'])[1 + g % 4],
       to_timestamp({start} + g::float8 * {span} / {n}),
       CASE WHEN g % 4 = 3 THEN NULL ELSE (g * 31) % 900000 END,
       (ARRAY['ios', 'android', 'web'])[1 + g % 3],
       jsonb_build_object('referrer', 'bench')
FROM generate_series(0::bigint, {n} - 1) AS g
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--events', type=int, default=500_000)
    parser.add_argument('--hours', type=float, default=2.0, help='event time the rows span (default 2)')
    parser.add_argument('--runner', default='DirectRunner')
    parser.add_argument('--all-sinks', action='store_true', help='BigQuery (emulator) too, not Redis alone')
    parser.add_argument('--timeout', type=float, default=1800)
    parser.add_argument('--keep', action='store_true', help='leave the private stack running')
    parser.add_argument('pipeline_args', nargs='*', help='extra pipeline flags (after --)')
    args = parser.parse_args(argv)
    cfg = private_config()
    stack = Stack(cfg, out=sys.stderr)
    stack.up()
    try:
        stack.component('connect').stop()
        end = int(time.time()) // WINDOW_S * WINDOW_S - WINDOW_S
        span = int(args.hours * 3600)
        start = end - span
        t0 = time.monotonic()
        stack.component('postgres').psql(cfg.pg_database, '-c',
                                         INSERT.format(start=start, span=span, n=args.events))
        print(f'inserted {args.events:,} rows over {span:,} s of event time in {time.monotonic() - t0:.1f} s',
              file=sys.stderr)
        since = datetime.datetime.fromtimestamp(start, datetime.timezone.utc).isoformat()
        sinks = [] if args.all_sinks else ['--bq_enabled=false']
        cmd = [sys.executable, '-m', 'pipelines.engagement', '--mode=backfill', f'--since={since}',
               f'--runner={args.runner}', f'--redis_prefix={PREFIX}', '--api_url=', *sinks, *args.pipeline_args]
        log = cfg.state_dir / 'backfill.log'
        started = time.monotonic()
        backfill = subprocess.Popen(cmd, env={**os.environ, **cfg.env()}, stdout=subprocess.DEVNULL,
                                    stderr=open(log, 'wb'))
        cpu = ProcessAccount(stack, backfill.pid)
        while backfill.poll() is None and time.monotonic() - started < args.timeout:
            cpu.sample()
            time.sleep(1.0)
        elapsed = time.monotonic() - started
        if backfill.poll() is None:
            backfill.terminate()
            print(f'the backfill did not finish within {args.timeout:.0f} s; see {log}')
            return 1
        if backfill.returncode != 0:
            print(f'the backfill exited with {backfill.returncode}; see {log}')
            return 1
        diffs = verify.verify(cfg, WINDOW_S, PREFIX, start)
        print(f'{args.events:,} rows ({span / 3600:g} h of event time, {span // WINDOW_S * 600:,} possible (window, '
              f'content) keys) backfilled on {args.runner} in {elapsed:.1f} s including start-up: '
              f'{args.events / elapsed:,.0f} events/s; Redis '
              + ('equal to SQL' if not diffs else f'NOT equal to SQL ({len(diffs)} differences, e.g. {diffs[:3]})'))
        print(f'{cpu.report()} (load average {os.getloadavg()[0]:.1f})')
        print(cpu.rss_report())
        return 0 if not diffs else 1
    finally:
        if not args.keep:
            stack.down(purge=True)


if __name__ == '__main__':
    sys.exit(main())
