"""Benchmark: catch-up throughput of the whole pipeline (Kafka -> parse -> enrich -> windows -> Redis) on Prism.

    .venv/bin/python -m tests.benchmarks.bench_pipeline --events 200000 [--rate 5000] [--keep] [--runner FlinkRunner]
        [--flink-cluster [--taskmanagers 2] [--slots 1]] [--profile FILE] [-- --parallelism=N ...]

Starts a private stack (free ports, fresh state), inserts `--events` rows with the generator at `--rate` rows/s
(so the backlog spans events/rate seconds of event time), waits until Debezium has them all on Kafka, then starts
`python -m pipelines.engagement --runner=DirectRunner --streaming` and polls Redis until every stats hash, top
ZSET and totals hash equals SQL (`launch.scenarios.verify`; SQL's answer is computed once before the start, and Redis is
compared key by key once its totals hashes match, checked once a second). Prints the time to exact results,
events/s with and without the pipeline's start-up, the peak RSS of the pipeline's processes (on Flink also that
of the job server JVM, which is one of them), CPU seconds and peak RSS per process, and how many stats panes Redis
took. Then, for each event sink that is on (the REST API unless `-- --api_url=`, BigQuery unless
`-- --bq_enabled=false`), when it held every event (receiver's accepted count; distinct ids in the raw table).
On Flink, the job's checkpoint counts (completed, failed, restored), restarts and last checkpoint size, from the
embedded Flink's REST API (tests/benchmarks/flink_rest.py). Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from launch.scenarios import generate, verify
from launch.stack.processes import rss_mb, tree_rss_mb
from launch.stack.stack import Stack
from pipelines.processes import descendants
from tests.benchmarks import flink_rest
from tests.conftest import private_config


def cdc_end_offset(stack: Stack) -> int:
    return stack.component('kafka').end_offsets()[stack.cfg.events_topic]


def java_children(pid: int) -> list[int]:
    """The JVMs below the pipeline process: Flink's job server."""
    found = []
    for child in descendants(pid):
        try:
            if os.path.basename(open(f'/proc/{child}/cmdline', 'rb').read().split(b'\0')[0]) == b'java':
                found.append(child)
        except OSError:
            pass
    return found


_TICKS = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        stat = open(f'/proc/{pid}/stat').read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(')') + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its living children (the Flink worker pool's SDK workers, Postgres' backends)."""
    return sum(cpu_seconds(p) for p in [pid, *descendants(pid)])


def process_name(pid: int) -> str:
    try:
        argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\0')
    except OSError:
        return '?'
    name = os.path.basename(argv[0]).decode()
    return f'{name} -m {argv[2].decode()}' if len(argv) > 2 and argv[1] == b'-m' else name


class ProcessAccount:
    """CPU seconds (from when it is created) and peak RSS (of each `sample()`) per process of the pipeline tree and
    per service of the stack (a service's RSS includes its children: Postgres' backends)."""

    def __init__(self, stack: Stack, pipeline_pid: int):
        self.stack, self.pipeline_pid = stack, pipeline_pid
        self.start = {name: tree_cpu_seconds(pid) for name, pid in self._services().items()}
        self.seen: dict[int, tuple[str, float]] = {}
        self.peak_rss: dict[str, float] = {}

    def _services(self) -> dict[str, int]:
        found = {}
        for component in self.stack.components:
            pid = component.proc.pid() if getattr(component, 'proc', None) else None
            if pid:
                found[component.name] = pid
        return found

    def _peak(self, name: str, rss_mb: float) -> None:
        self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), rss_mb)

    def sample(self) -> None:
        for pid in [self.pipeline_pid, *descendants(self.pipeline_pid)]:
            used = cpu_seconds(pid)
            if used:
                name = self.seen.get(pid, (process_name(pid), 0))[0]
                self.seen[pid] = (name, used)
                self._peak(name, rss_mb(pid))
        for name, pid in self._services().items():
            self._peak(name, tree_rss_mb(pid))

    def report(self) -> str:
        parts = [f'{name} {used:.1f}' for name, used in sorted(self.seen.values(), key=lambda item: -item[1])]
        services = self._services()
        parts += [f'{name} {tree_cpu_seconds(pid) - self.start.get(name, 0):.1f}' for name, pid in services.items()]
        return 'CPU-s: ' + ', '.join(parts)

    def current_rss(self) -> dict[str, float]:
        """RSS now (MB) per process name of the pipeline tree and per service of the stack (with its children)."""
        now: dict[str, float] = {}
        for pid in [self.pipeline_pid, *descendants(self.pipeline_pid)]:
            name = self.seen.get(pid, (process_name(pid), 0))[0]
            now[name] = now.get(name, 0.0) + rss_mb(pid)
        for name, pid in self._services().items():
            now[name] = tree_rss_mb(pid)
        return now

    def rss_report(self) -> str:
        return 'peak RSS MB: ' + ', '.join(f'{name} {mb:,.0f}' for name, mb in self.peak_rss.items())


def api_accepted(cfg) -> int:
    import json
    import urllib.request
    with urllib.request.urlopen(f'{cfg.api_url}/v1/stats', timeout=10) as answer:
        return json.loads(answer.read())['accepted_events']


def bigquery_events(cfg) -> int:
    from connectors.bigquery.clients import gcp_client
    client = gcp_client(cfg.bq_project, cfg.bq_endpoint)
    try:
        table = f'`{cfg.bq_project}.{cfg.bq_dataset}.events_enriched_raw`'
        return list(client.query(f'SELECT COUNT(DISTINCT id) AS n FROM {table}').result())[0]['n']
    finally:
        client.close()


def wait_for_sinks(cfg, pipeline_args, events: int, started: float, timeout: float) -> dict[str, float]:
    """Seconds after the pipeline's start at which each event sink that is on held every event."""
    sinks = {}
    if '--api_url=' not in pipeline_args:
        sinks['REST API'] = api_accepted
    if '--bq_enabled=false' not in pipeline_args:
        sinks['BigQuery'] = bigquery_events
    done = {}
    while sinks and time.monotonic() - started < timeout:
        for name, count in list(sinks.items()):
            if count(cfg) >= events:
                done[name] = time.monotonic() - started
                del sinks[name]
        time.sleep(1.0)
    done.update({name: float('nan') for name in sinks})
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--events', type=int, default=200_000)
    parser.add_argument('--rate', type=float, default=5000)
    parser.add_argument('--timeout', type=float, default=900)
    parser.add_argument('--keep', action='store_true', help='leave the private stack running')
    parser.add_argument('--runner', default='DirectRunner', help='DirectRunner (Prism) or FlinkRunner (embedded)')
    parser.add_argument('--flink-cluster', action='store_true',
                        help='FlinkRunner on the stack\'s session cluster (--with flink) instead of embedded')
    parser.add_argument('--taskmanagers', type=int, default=2, help='with --flink-cluster (default 2)')
    parser.add_argument('--slots', type=int, default=1, help='with --flink-cluster: slots per TaskManager (default 1)')
    parser.add_argument('--profile', metavar='FILE',
                        help='record the pipeline processes with py-spy (100 Hz, subprocesses, the thread holding the '
                             'GIL only) until Redis is exact, into FILE (collapsed stacks); py-spy from $PY_SPY or '
                             'PATH')
    parser.add_argument('pipeline_args', nargs='*', help='extra pipeline flags (after --)')
    args = parser.parse_args(argv)
    if args.flink_cluster:
        args.runner = 'FlinkRunner'
        args.pipeline_args = ['--flink_master=[cluster]', *args.pipeline_args]
        cfg = private_config(flink_taskmanagers=args.taskmanagers, flink_slots=args.slots)
    else:
        cfg = private_config()
    stack = Stack(cfg, out=sys.stderr, with_=('flink',) if args.flink_cluster else ())
    stack.up()
    try:
        flags = cfg.cli_flags()
        generate.main(['--rate', str(args.rate), '--count', str(args.events), '--seed', '1', *flags])
        deadline = time.monotonic() + 300
        while cdc_end_offset(stack) < args.events and time.monotonic() < deadline:
            time.sleep(0.5)
        print(f'backlog on Kafka: {cdc_end_offset(stack):,} change events', file=sys.stderr)
        # The backlog is complete before the pipeline starts, so SQL's answer is computed once, here; while the
        # pipeline runs, the bench reads only the `totals` hashes (one round trip a second) and compares key by
        # key once they match. (Recomputing the GROUP BY and reading every key each second took a good part of
        # one of the two cores from the pipeline it measures.)
        truth = verify.ground_truth(cfg.pg_dsn, 60, 0)
        want_totals = verify.expected_totals(truth)
        env = {**os.environ, **cfg.env()}
        started = time.monotonic()
        pipeline = subprocess.Popen([sys.executable, '-m', 'pipelines.engagement', f'--runner={args.runner}',
                                     '--streaming', *args.pipeline_args], env=env,
                                    stdout=subprocess.DEVNULL, stderr=open(cfg.state_dir / 'pipeline.log', 'wb'))
        cpu = ProcessAccount(stack, pipeline.pid)
        profiler = None
        if args.profile:
            profiler = subprocess.Popen([os.environ.get('PY_SPY', 'py-spy'), 'record', '--subprocesses', '-r', '100',
                                         '--gil', '-f', 'raw', '-o', args.profile, '-p', str(pipeline.pid)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first_output = None
        peak_rss = peak_jvm_rss = 0.0
        diffs = ['not checked']
        import redis
        client = redis.Redis.from_url(cfg.redis_url)
        while time.monotonic() - started < args.timeout:
            time.sleep(1.0)
            peak_rss = max(peak_rss, tree_rss_mb(pipeline.pid))
            cpu.sample()
            peak_jvm_rss = max(peak_jvm_rss, sum(tree_rss_mb(pid) for pid in java_children(pipeline.pid)))
            if first_output is None and client.dbsize():
                first_output = time.monotonic() - started
            if pipeline.poll() is not None:
                print(f'pipeline exited with {pipeline.returncode}; see {cfg.state_dir / "pipeline.log"}',
                      file=sys.stderr)
                return 1
            if first_output is not None and verify.redis_totals(client, 'engagement', want_totals) == want_totals:
                diffs = verify.compare(truth, *verify.redis_state(cfg.redis_url, 'engagement', 0))
                if not diffs:
                    break
        elapsed = time.monotonic() - started
        cpu.sample()
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)   # py-spy writes its file on SIGINT
            profiler.wait(60)
        cpu_report = cpu.report()
        scripts = client.info('commandstats').get('cmdstat_evalsha', {}).get('calls', 0)
        sinks = {} if diffs else wait_for_sinks(cfg, args.pipeline_args, args.events, started, args.timeout)
        flink = ([flink_rest.describe_url(f'http://127.0.0.1:{cfg.flink_rest_port}')] if args.flink_cluster else
                 [flink_rest.describe(pid) for pid in java_children(pipeline.pid)])
        pipeline.terminate()
        pipeline.wait(30)
        if diffs:
            print(f'NOT exact after {elapsed:.0f} s: {len(diffs)} differences, e.g. {diffs[:3]}')
            return 1
        print(f'{args.events:,} events (backlog over {args.events / args.rate:.0f} s of event time): Redis exact '
              f'{elapsed:.1f} s after the pipeline started (first output at {first_output:.1f} s); '
              f'{args.events / elapsed:,.0f} events/s including start-up, '
              f'{args.events / max(elapsed - first_output, 1e-9):,.0f} events/s after first output; '
              f'peak RSS of the pipeline processes {peak_rss:,.0f} MB'
              + (f' (job server JVM {peak_jvm_rss:,.0f} MB)' if peak_jvm_rss else ''))
        print(f'{cpu_report} (until Redis was exact; load average {os.getloadavg()[0]:.1f}); '
              f'{scripts:,} stats panes written to Redis ({len(truth):,} (window, content) keys)')
        print(cpu.rss_report())
        for name, seconds in sinks.items():
            print(f'{name}: every event after {seconds:.1f} s ({args.events / seconds:,.0f} events/s incl. start-up)')
        for line in flink:
            print(line)
        return 0
    finally:
        if not args.keep:
            stack.down(purge=True)


if __name__ == '__main__':
    sys.exit(main())
