"""Benchmark: insert -> Redis-visible latency of the running pipeline, under background load.

    .venv/bin/python -m tests.benchmarks.bench_latency --rate 1000 --duration 120 [--probes-per-second 5] [-- pipeline flags]

Starts a private stack and `python -m pipelines.engagement --runner=DirectRunner --streaming`, runs the load
generator at `--rate` rows/s, and meanwhile inserts probe events (one row each, its own transaction) on a content
row created for the benchmark after the generator has read the catalogue (so only probes use it). A poller reads that content's `stats` hash every 10 ms; the latency of probe n is
the time from its INSERT's commit to the first read where the window's `events` reached n. Probes of the first
`--warmup` seconds are not counted. Prints p50/p90/p99/max and the pipeline's peak RSS. Not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

import psycopg2
import redis

from launch import generate
from launch.stack import Stack, stop_tree, tree_rss_mb
from tests.conftest import private_config

PROBE_CONTENT = str(uuid.uuid5(uuid.NAMESPACE_URL, 'engagement-latency-probe'))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rate', type=float, default=1000, help='background rows/s')
    parser.add_argument('--duration', type=float, default=120, help='seconds of load')
    parser.add_argument('--probes-per-second', type=float, default=5)
    parser.add_argument('--warmup', type=float, default=30, help='seconds before probes count')
    parser.add_argument('pipeline_args', nargs='*', help='extra pipeline flags (after --)')
    args = parser.parse_args(argv)
    cfg = private_config()
    stack = Stack(cfg, out=sys.stderr)
    stack.up()
    pipeline = None
    try:
        pipeline = subprocess.Popen([sys.executable, '-m', 'pipelines.engagement', '--runner=DirectRunner',
                                     '--streaming', *args.pipeline_args], env={**os.environ, **cfg.env()}, stdout=subprocess.DEVNULL,
                                    stderr=open(cfg.state_dir / 'pipeline.log', 'wb'))
        flags = cfg.cli_flags()
        load = threading.Thread(target=generate.main, args=(
            ['--rate', str(args.rate), '--duration', str(args.duration + args.warmup), '--late-share', '0',
             *flags],), daemon=True)
        load.start()
        # The probe content is created after the generator has read the catalogue, so that only probes use it
        # (the pipeline learns it at the first probe: a miss reloads the catalogue).
        time.sleep(3)
        with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO content VALUES (%s, 'latency-probe', 'Latency probe', 'video', 600, now()) "
                        'ON CONFLICT DO NOTHING', (PROBE_CONTENT,))
        client = redis.Redis.from_url(cfg.redis_url)
        sent: dict[int, list[float]] = {}      # window -> commit times of its probes, in order
        latencies: list[float] = []
        seen: dict[int, int] = {}
        conn = psycopg2.connect(cfg.pg_dsn)
        cur = conn.cursor()
        started = time.monotonic()
        next_probe = started
        peak_rss = 0.0
        while time.monotonic() - started < args.duration + args.warmup:
            now = time.monotonic()
            if now >= next_probe:
                cur.execute("INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms) "
                            "VALUES (%s, %s, 'play', now(), 1000) RETURNING extract(epoch FROM event_ts)",
                            (PROBE_CONTENT, str(uuid.uuid4())))
                window = int(cur.fetchone()[0]) // 60 * 60
                conn.commit()
                sent.setdefault(window, []).append(time.monotonic())
                next_probe += 1 / args.probes_per_second
            for window, times in sent.items():
                count = int(client.hget(f'engagement:stats:{window}:{PROBE_CONTENT}', 'events') or 0)
                t = time.monotonic()
                for n in range(seen.get(window, 0), min(count, len(times))):
                    if times[n] - started >= args.warmup:
                        latencies.append(t - times[n])
                seen[window] = max(seen.get(window, 0), min(count, len(times)))
            if int(now - started) % 5 == 0:
                peak_rss = max(peak_rss, tree_rss_mb(pipeline.pid))
            if pipeline.poll() is not None:
                print(f'pipeline exited; see {cfg.state_dir / "pipeline.log"}', file=sys.stderr)
                return 1
            time.sleep(0.01)
        pending = sum(len(t) for t in sent.values()) - sum(seen.values())
        if not latencies:
            print(f'no probe became visible in Redis ({pending} pending)')
            return 1
        latencies.sort()
        q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]  # noqa: E731
        print(f'insert -> Redis visible at {args.rate:,.0f} rows/s background for {args.duration:.0f} s '
              f'({len(latencies)} probes, {pending} still pending at the end): p50 {q(0.5) * 1000:.0f} ms, '
              f'p90 {q(0.9) * 1000:.0f} ms, p99 {q(0.99) * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms, '
              f'mean {statistics.mean(latencies) * 1000:.0f} ms; pipeline peak RSS {peak_rss:,.0f} MB')
        return 0
    finally:
        if pipeline is not None:
            stop_tree(pipeline)
        stack.down(purge=True)


if __name__ == '__main__':
    sys.exit(main())
