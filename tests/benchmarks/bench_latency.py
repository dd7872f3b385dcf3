"""Benchmark: insert -> visible latency of the running pipeline, per sink, under background load.

    .venv/bin/python -m tests.benchmarks.bench_latency --rate 1000 --duration 120 [--sink redis|api|bigquery] \
        [--probes-per-second 5] [-- pipeline flags]

Starts a private stack and `python -m pipelines.engagement --runner=DirectRunner --streaming` (every sink on unless
pipeline flags say otherwise), runs the load generator at `--rate` rows/s, and meanwhile inserts probe events (one
row each, its own transaction) on a content row created for the benchmark after the generator has read the
catalogue (so only probes use it). The latency of a probe is the time from its INSERT's commit to the first poll
that sees it in the chosen sink (`--sink`, default redis):

  redis     the probe content's `stats` hash of the probe's window, read every 10 ms: probe n of a window is
            visible at the first read where the window's `events` reached n;
  api       the local API receiver holds the probe's event id as idempotency key: `GET /v1/events/keys?key=...`
            for the probes not seen yet, every 20 ms;
  bigquery  the probe's row is queryable in the emulator's `events_enriched_raw` (a query for the ids not seen
            yet, every 250 ms: a query costs the emulator tens of ms, so the figures are that much coarser).

Probes of the first `--warmup` seconds are not counted. Prints p50/p90/p99/max (also per `--segment` seconds), the
pipeline's peak RSS and the CPU seconds of each process (pipeline, Prism, the stack's services) over the run.
With `--rss-every N` it prints the RSS of every process every N seconds and, at the end, the slope of each
process's RSS and of the per-segment p99 (least squares): the soak run is

    .venv/bin/python -m tests.benchmarks.bench_latency --rate 1000 --duration 1800 --segment 300 --rss-every 60

Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from typing import NamedTuple

import psycopg2
import redis

from launch.scenarios import generate
from launch.stack.processes import stop_tree, tree_rss_mb
from launch.stack.stack import Stack
from tests.benchmarks.bench_pipeline import ProcessAccount
from tests.conftest import private_config

PROBE_CONTENT = str(uuid.uuid5(uuid.NAMESPACE_URL, 'engagement-latency-probe'))
POLL_SECONDS = {'redis': 0.01, 'api': 0.02, 'bigquery': 0.25}
WHERE = {'redis': 'Redis', 'api': 'the REST API receiver', 'bigquery': 'BigQuery events_enriched_raw'}


class Probe(NamedTuple):
    committed: float    # time.monotonic() right after the INSERT's commit
    window: int         # start of its 60 s window (epoch seconds), for the Redis hash


class RedisWatch:
    """Probes of a window are counted in order: probe n is visible once the window's `events` reached n."""

    def __init__(self, cfg):
        self._client = redis.Redis.from_url(cfg.redis_url)

    def visible(self, probes: dict[int, Probe], pending: set[int]) -> set[int]:
        out = set()
        for window in {probes[i].window for i in pending}:
            count = int(self._client.hget(f'engagement:stats:{window}:{PROBE_CONTENT}', 'events') or 0)
            in_window = [i for i, p in probes.items() if p.window == window]  # commit order
            out.update(i for i in in_window[:count] if i in pending)
        return out


class ApiWatch:
    def __init__(self, cfg):
        self._url = f'{cfg.api_url}/v1/events/keys'

    def visible(self, probes: dict[int, Probe], pending: set[int]) -> set[int]:
        query = urllib.parse.urlencode([('key', str(i)) for i in sorted(pending)])
        with urllib.request.urlopen(f'{self._url}?{query}', timeout=10) as answer:
            return {int(key) for key in json.loads(answer.read())['keys']}


class BigQueryWatch:
    def __init__(self, cfg):
        from connectors.bigquery.clients import gcp_client
        self._client = gcp_client(cfg.bq_project, cfg.bq_endpoint)
        self._table = f'`{cfg.bq_project}.{cfg.bq_dataset}.events_enriched_raw`'

    def visible(self, probes: dict[int, Probe], pending: set[int]) -> set[int]:
        ids = ','.join(str(i) for i in sorted(pending))
        rows = self._client.query(f'SELECT DISTINCT id FROM {self._table} WHERE id IN ({ids})').result()
        return {row['id'] for row in rows}


WATCHES = {'redis': RedisWatch, 'api': ApiWatch, 'bigquery': BigQueryWatch}


def redis_rates(first: tuple[float, dict], last: tuple[float, dict]) -> str:
    """Redis commands per second between two `INFO commandstats` readings: EVALSHA (the stats sink runs one script
    per pane), and every command but the probes' own reads (HGET, HMGET, HGETALL of this bench)."""
    seconds = max(last[0] - first[0], 1e-9)

    def calls(stats: dict, keep) -> int:
        return sum(entry.get('calls', 0) for name, entry in stats.items() if keep(name))
    pipeline_commands = lambda name: name not in ('cmdstat_hget', 'cmdstat_hmget', 'cmdstat_hgetall')  # noqa: E731
    evalsha = lambda name: name == 'cmdstat_evalsha'  # noqa: E731
    return (f'Redis after warm-up: {(calls(last[1], evalsha) - calls(first[1], evalsha)) / seconds:,.1f} EVALSHA/s '
            f'(stats panes), {(calls(last[1], pipeline_commands) - calls(first[1], pipeline_commands)) / seconds:,.1f} '
            'commands/s in all but the probes\' reads')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rate', type=float, default=1000, help='background rows/s')
    parser.add_argument('--duration', type=float, default=120, help='seconds of load')
    parser.add_argument('--sink', choices=sorted(WATCHES), default='redis',
                        help='where a probe must be visible (default redis)')
    parser.add_argument('--probes-per-second', type=float, default=5)
    parser.add_argument('--warmup', type=float, default=30, help='seconds before probes count')
    parser.add_argument('--segment', type=float, default=120,
                        help='also print the figures per this many seconds of a longer run (default 120)')
    parser.add_argument('--monitor', action='store_true',
                        help='also run the monitoring service (python -m launch.monitor) and scrape its /metrics '
                             '(the pipeline\'s metrics included) every --scrape-seconds, as Prometheus would')
    parser.add_argument('--scrape-seconds', type=float, default=1.0)
    parser.add_argument('--rss-every', type=float, default=0,
                        help='print the RSS of every process this often (seconds) and the slopes at the end')
    parser.add_argument('pipeline_args', nargs='*', help='extra pipeline flags (after --)')
    args = parser.parse_args(argv)
    cfg = private_config()
    stack = Stack(cfg, out=sys.stderr)
    stack.up()
    pipeline = monitor = None
    scrapes: list[float] = []
    try:
        metrics_flag = f'--metrics_port={cfg.metrics_port if args.monitor else 0}'
        pipeline = subprocess.Popen([sys.executable, '-m', 'pipelines.engagement', '--runner=DirectRunner',
                                     '--streaming', metrics_flag, *args.pipeline_args], env={**os.environ, **cfg.env()},
                                    stdout=subprocess.DEVNULL, stderr=open(cfg.state_dir / 'pipeline.log', 'wb'))
        if args.monitor:
            monitor = subprocess.Popen([sys.executable, '-m', 'launch.monitor', *cfg.cli_flags()],
                                       env={**os.environ, **cfg.env()}, stdout=subprocess.DEVNULL,
                                       stderr=open(cfg.state_dir / 'monitor.log', 'wb'))
            threading.Thread(target=scrape, args=(f'{cfg.monitor_url}/metrics', args.scrape_seconds, scrapes),
                             daemon=True).start()
        cpu = ProcessAccount(stack, pipeline.pid)
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
        watch = WATCHES[args.sink](cfg)
        probes: dict[int, Probe] = {}   # event id -> probe, in commit order
        pending: set[int] = set()
        latencies: list[float] = []
        segments: dict[int, list[float]] = {}      # segment index -> latencies of the probes committed in it
        conn = psycopg2.connect(cfg.pg_dsn)
        cur = conn.cursor()
        started = time.monotonic()
        next_probe = next_poll = next_sample = next_rss = started
        peak_rss = 0.0
        redis_client = redis.Redis.from_url(cfg.redis_url)
        redis_counted: tuple[float, dict] | None = None   # (time, commandstats) when the warm-up ended
        rss_series: dict[str, list[tuple[float, float]]] = {}   # process -> (minutes since start, MB)
        while time.monotonic() - started < args.duration + args.warmup:
            now = time.monotonic()
            if now >= next_probe:
                cur.execute("INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms) "
                            "VALUES (%s, %s, 'play', now(), 1000) RETURNING id, extract(epoch FROM event_ts)",
                            (PROBE_CONTENT, str(uuid.uuid4())))
                event_id, event_ts = cur.fetchone()
                conn.commit()
                probes[event_id] = Probe(time.monotonic(), int(event_ts) // 60 * 60)
                pending.add(event_id)
                next_probe += 1 / args.probes_per_second
            if redis_counted is None and now - started >= args.warmup:
                redis_counted = (now, redis_client.info('commandstats'))
            if pending and now >= next_poll:
                seen = watch.visible(probes, pending)
                t = time.monotonic()
                for event_id in seen & pending:
                    if probes[event_id].committed - started >= args.warmup:
                        latencies.append(t - probes[event_id].committed)
                        segment = int((probes[event_id].committed - started - args.warmup) // args.segment)
                        segments.setdefault(segment, []).append(t - probes[event_id].committed)
                pending -= seen
                next_poll = now + POLL_SECONDS[args.sink]
            if args.rss_every and now >= next_rss:
                rss = cpu.current_rss()
                minutes = (now - started) / 60
                for name, mb in rss.items():
                    rss_series.setdefault(name, []).append((minutes, mb))
                print(f'  RSS MB at {minutes:5.1f} min: ' + ', '.join(f'{n} {mb:,.0f}' for n, mb in rss.items()),
                      flush=True)
                next_rss = now + args.rss_every
            if now >= next_sample:
                peak_rss = max(peak_rss, tree_rss_mb(pipeline.pid))
                cpu.sample()
                next_sample = now + 5
            if pipeline.poll() is not None:
                print(f'pipeline exited; see {cfg.state_dir / "pipeline.log"}', file=sys.stderr)
                return 1
            time.sleep(0.005)
        cpu.sample()
        print(cpu.report() + ' (the generator runs in this process, not counted)')
        if redis_counted is not None:
            print(redis_rates(redis_counted, (time.monotonic(), redis_client.info('commandstats'))))
        if monitor is not None:
            print(f'monitoring service: {cpu_seconds(monitor.pid):.1f} CPU-s; /metrics scraped {len(scrapes)} times '
                  f'every {args.scrape_seconds:g} s, median {statistics.median(scrapes or [0]) * 1000:.0f} ms a scrape')
        print(cpu.rss_report())
        if not latencies:
            print(f'no probe became visible in {WHERE[args.sink]} ({len(pending)} pending)')
            return 1
        if len(segments) > 1:
            for segment, values in sorted(segments.items()):
                print(f'  {segment * args.segment:5.0f}-{(segment + 1) * args.segment:5.0f} s: '
                      f'{_quantiles(sorted(values))}')
            p99s = [(segment, _quantile(sorted(values), 0.99) * 1000) for segment, values in sorted(segments.items())]
            print(f'p99 slope: {slope(p99s):+.1f} ms per {args.segment:.0f} s segment '
                  f'(from {p99s[0][1]:.0f} to {p99s[-1][1]:.0f} ms)')
        warm = args.warmup / 60
        for name, series in sorted(rss_series.items()):
            after = [(m, mb) for m, mb in series if m >= warm]
            if len(after) > 2:
                print(f'RSS slope {name}: {slope(after) * 10:+.1f} MB per 10 min after warm-up '
                      f'({after[0][1]:,.0f} -> {after[-1][1]:,.0f} MB)')
        latencies.sort()
        q = lambda p: _quantile(latencies, p)  # noqa: E731
        print(f'insert -> visible in {WHERE[args.sink]} (polled every {POLL_SECONDS[args.sink] * 1000:.0f} ms) at '
              f'{args.rate:,.0f} rows/s background for {args.duration:.0f} s ({len(latencies)} probes, '
              f'{len(pending)} still pending at the end): p50 {q(0.5) * 1000:.0f} ms, p90 {q(0.9) * 1000:.0f} ms, '
              f'p99 {q(0.99) * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms, mean '
              f'{statistics.mean(latencies) * 1000:.0f} ms; pipeline peak RSS {peak_rss:,.0f} MB')
        return 0
    finally:
        for proc in (monitor, pipeline):
            if proc is not None:
                stop_tree(proc)
        stack.down(purge=True)


def scrape(url: str, every: float, durations: list[float]) -> None:
    """GET `url` every `every` seconds, as Prometheus would; records how long each scrape took."""
    import urllib.request
    while True:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
            durations.append(time.monotonic() - started)
        except OSError:
            pass   # not up yet
        time.sleep(max(0.0, every - (time.monotonic() - started)))


def cpu_seconds(pid: int) -> float:
    fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def _quantile(values: list[float], p: float) -> float:
    """The p-quantile of sorted `values` (seconds)."""
    return values[min(len(values) - 1, int(p * len(values)))]


def _quantiles(values: list[float]) -> str:
    q = lambda p: _quantile(values, p) * 1000  # noqa: E731
    return f'{len(values)} probes, p50 {q(0.5):.0f} ms, p90 {q(0.9):.0f} ms, p99 {q(0.99):.0f} ms'


if __name__ == '__main__':
    sys.exit(main())
