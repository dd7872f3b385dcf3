"""`make demo`: start the stack, the load generator and the Beam pipeline on the DirectRunner (Prism), and show
what is being watched now.

    python -m launch.scenarios.demo [--rate 300] [--bad-rate 2] [--keep-stack] [--cdc-only] [stack settings]

The live view (`launch.scenarios.dashboard`) shows, once a second, the top contents of the current window per content
type from Redis, events/s arriving on Kafka and counted into Redis, dead letters and the consumer group's lag.
`--cdc-only` skips the pipeline and prints what Debezium delivers to Kafka instead (events/s, the mix of event
types and the insert-to-Kafka delay). Ctrl-C stops the pipeline (and its Prism job server), the generators and
every stack component this command started (components that were already running are left running); so do
SIGTERM and SIGHUP (a closed terminal), also when the output pipe (`make demo | tee demo.log`) closed first. The
pipeline's log is `<state dir>/logs/pipeline.log`. The monitoring and query service (`python -m launch.monitor`)
runs beside the pipeline; the demo prints its URLs.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime

from launch.scenarios import dashboard
from launch.stack import config as stack_config
from launch.stack.component import StackError
from launch.stack.processes import stop_tree
from launch.stack.stack import Stack


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float('nan')
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def watch(cfg: stack_config.StackConfig, out=sys.stdout, seconds: float | None = None) -> int:
    """Print one line a second about change events arriving on the CDC topic; returns how many arrived."""
    from kafka import KafkaConsumer
    consumer = KafkaConsumer(cfg.events_topic, **cfg.kafka_client_config(), auto_offset_reset='latest',
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
                      f'  total {total:,}  {mix}  insert→Kafka p50 '
                      f'{statistics.median(delays) * 1000 if delays else float("nan"):4.0f} ms'
                      f' p99 {_percentile(delays, 0.99) * 1000:4.0f} ms{latest}', file=out, flush=True)
                tick, in_tick, delays = now, 0, []
    finally:
        consumer.close()
    return total


FLINK_CLUSTER = 'flink-cluster'
RUNNER_ALIASES = {'directrunner': 'DirectRunner', 'direct': 'DirectRunner', 'prism': 'DirectRunner',
                  'prismrunner': 'DirectRunner', 'flinkrunner': 'FlinkRunner', 'flink': 'FlinkRunner',
                  'flink-cluster': FLINK_CLUSTER}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.scenarios.demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rate', type=float, default=300, help='generator events per second (default 300)')
    parser.add_argument('--bad-rate', type=float, default=2,
                        help='bad JSON records per second onto the raw topic (dead-letter demo), 0 for none; '
                             'default 2')
    parser.add_argument('--runner', default='DirectRunner', type=lambda v: RUNNER_ALIASES.get(v.lower(), v),
                        choices=sorted(set(RUNNER_ALIASES.values())),
                        help='DirectRunner (Prism, default), FlinkRunner (embedded Flink) or flink-cluster (the '
                             'stack\'s Flink session cluster, started with it); also prism, flink')
    parser.add_argument('--keep-stack', action='store_true', help='leave the stack running on exit')
    parser.add_argument('--cdc-only', action='store_true',
                        help='no pipeline: watch the change events arrive on Kafka')
    stack_config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = stack_config.from_args(args)
    except stack_config.ConfigError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    cluster = args.runner == FLINK_CLUSTER
    stack = Stack(cfg, with_=('flink',) if cluster else ())
    already = {c.name for c in stack.components if c.running()}
    children: list[tuple[str, subprocess.Popen]] = []
    stop_on_signals()
    status = 0

    def start(name: str, *argv: str) -> None:
        log = open(cfg.log_file(name), 'ab')
        children.append((name, subprocess.Popen([sys.executable, '-m', *argv], env={**os.environ, **cfg.env()},
                                                 stdout=log, stderr=subprocess.STDOUT)))

    try:
        print('starting the stack ...', flush=True)
        stack.up()
        start('generator', 'launch.scenarios.generate', '--rate', str(args.rate), '--duration', '31536000')
        if args.bad_rate > 0:
            start('generator-direct', 'launch.scenarios.generate', '--direct', '--rate', str(args.bad_rate),
                  '--bad-share', '1', '--duration', '31536000')
        if args.cdc_only:
            print(f'generator running at {args.rate:,.0f} events/s into Postgres; watching Debezium change events '
                  'on Kafka. Ctrl-C stops everything this demo started.', flush=True)
            watch(cfg)
        else:
            start('pipeline', 'pipelines.engagement', '--runner=' + ('FlinkRunner' if cluster else args.runner),
                  '--streaming', f'--metrics_port={cfg.metrics_port}',
                  *(['--flink_master=[cluster]'] if cluster else []))
            start('monitor', 'launch.monitor')
            engine = {'DirectRunner': 'Prism', FLINK_CLUSTER: f'the Flink session cluster (web UI API '
                      f'http://127.0.0.1:{cfg.flink_rest_port}/overview)'}.get(
                args.runner, 'embedded Flink (first output after ~20-50 s)')
            print(f'generator at {args.rate:,.0f} events/s into Postgres, {args.bad_rate:g} bad records/s onto '
                  f'{cfg.raw_topic}; pipeline starting on {engine} (log {cfg.log_file("pipeline")}).\n'
                  f'monitoring and query API: {cfg.monitor_url}/docs (health {cfg.monitor_url}/health, metrics '
                  f'{cfg.monitor_url}/metrics; query API key: $ENGAGEMENT_QUERY_API_KEYS or the local '
                  'engagement-local-query-key). Ctrl-C stops everything this demo started.', flush=True)
            dashboard.run(cfg, 'engagement', 60, 'engagement-pipeline',
                          alive=lambda: all(p.poll() is None for _, p in children))
            failed = [name for name, p in children if p.poll() is not None]
            print(f'{", ".join(failed)} stopped unexpectedly; see {cfg.state_dir / "logs"}', file=sys.stderr)
    except KeyboardInterrupt:
        say('\nstopping ...')
    except OSError as exc:
        if exc.errno not in OUTPUT_GONE:  # a real failure (a file, a socket): said, and the demo fails
            say(f'error: {exc}', sys.stderr)
            status = 1
        else:  # the output is gone: `| tee` ended by the same Ctrl-C, or the terminal closed
            say(f'\nstopping: cannot write the output any more ({type(exc).__name__})')
    except (StackError, stack_config.ConfigError) as exc:
        say(f'error: {exc}', sys.stderr)
        return 2
    finally:
        with deferred_signals():
            for name, proc in reversed(children):
                say(f'  {name:<9} {stop_tree(proc)}')
            if not args.keep_stack:
                for comp in reversed(stack.components):
                    if comp.name not in already:
                        say(f'  {comp.name:<9} {comp.stop()}')
    return status


# what writing to a closed pipe or a closed terminal raises
OUTPUT_GONE = (errno.EPIPE, errno.EIO)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_on_signals() -> None:
    """SIGTERM (`kill`, make forwarding its own) and SIGHUP (the terminal closed) stop the demo as Ctrl-C does: a
    KeyboardInterrupt, then the cleanup. A signal ignored when the demo started stays ignored (`nohup`, or SIGINT
    of a job started in the background), as a shell's user expects."""
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, signal.default_int_handler)


@contextlib.contextmanager
def deferred_signals():
    """Hold off the stop signals while the cleanup runs (a second Ctrl-C, or the SIGHUP that follows a closed
    terminal's SIGINT, would otherwise cut it short and leave components running)."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def say(text: str, stream=None) -> None:
    """Print and flush; when the output is gone (a closed pipe or terminal) point it at /dev/null instead, so the
    cleanup that is printing goes on and the interpreter's last flush does not fail either."""
    stream = stream or sys.stdout
    try:
        print(text, file=stream, flush=True)
    except OSError:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        except (OSError, ValueError):
            pass


if __name__ == '__main__':
    sys.exit(main())
