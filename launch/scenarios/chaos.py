"""The fault scenario: the pipeline under steady load while every component fails in turn, then every sink compared
with SQL. One run, on a private stack (or the configured one with --use-stack):

    python -m launch.scenarios.chaos [--rate 5000] [--bad-rate 50] [--scale 1] [--faults broker,postgres,...]
                                     [-- pipeline flags, e.g. --api_url= --bq_enabled=false]

Traffic all along (launch/scenarios/chaos_traffic.py): valid events into Postgres at --rate, bad records onto the
raw topic at --bad-rate and a round of the hostile corpus on both topics every --corpus-every seconds. Faults, one
after another, each followed by the time the pipeline took to recover (lag back under --recovered-lag seconds):

    broker     kill -9 of the Kafka broker, restarted 20 s later
    postgres   Postgres stopped for 60 s, spanning catalogue refreshes (enrichment goes on from the last catalogue;
               events of an unknown content are dead-lettered as content_unavailable, nothing else changes)
    redis      Redis stopped for 30 s
    bigquery   the BigQuery emulator stopped for 30 s
    api        the REST API answering 50% 5xx and 10% timeouts for 60 s
    connect    kill -9 of Kafka Connect (Debezium), restarted at once
    pipeline   kill -9 of the pipeline, restarted at once

--scale multiplies every outage (the test suite runs --scale 0.5). At the end: the traffic stops, the pipeline
catches up, the API sink's dead letters are redelivered (the operator's command), and Redis, BigQuery (deduplicated
views) and the API receiver must equal SQL; every bad record must be dead-lettered exactly once with its reason
(each failure once: launch.tools.dead_letters), nothing of it counted, and the pipeline never restarted but by the
scenario. Exit 0 when all holds. Docs: docs/operations.md#fault-scenario.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

from launch.monitor.exposition import pipeline_metrics
from launch.scenarios import chaos_traffic
from launch.scenarios.chaos_verdict import PREFIX, WINDOW_S, say, verdict
from launch.stack import config as stack_config
from launch.stack.stack import Stack

FAULTS = ('broker', 'postgres', 'redis', 'bigquery', 'api', 'connect', 'pipeline')
GROUP = 'chaos-pipeline'
API_FAULTS = {'error_rate': 0.5, 'status': 503, 'timeout_rate': 0.1, 'timeout_seconds': 5}


def scrape(port: int) -> dict[str, dict[frozenset, float]] | None:
    """The pipeline's Prometheus metrics (launch.monitor.exposition.pipeline_metrics); None when it does not
    answer."""
    return pipeline_metrics(f'http://127.0.0.1:{port}/metrics')


def _sum(metrics: dict[str, dict[frozenset, float]], name: str, **labels: str) -> float:
    return sum(value for sample, value in metrics.get(name, {}).items() if set(labels.items()) <= sample)


class Pipeline:
    """`python -m pipelines.engagement` as a child, its Prometheus endpoint on a free port."""

    def __init__(self, cfg, runner: str, refresh_s: int, log_dir: Path, extra: list[str]):
        self.cfg, self.runner, self.refresh_s, self.log_dir, self.extra = cfg, runner, refresh_s, log_dir, extra
        self.metrics_port = stack_config.free_ports(1)[0]
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.unexpected_exits: list[int] = []

    def start(self) -> None:
        self.starts += 1
        cfg = self.cfg
        self.log = self.log_dir / f'chaos-pipeline-{self.starts}.log'
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'pipelines.engagement', f'--runner={self.runner}', '--streaming',
             f'--redis_prefix={PREFIX}', f'--consumer_group={GROUP}', f'--window_seconds={WINDOW_S}',
             f'--content_refresh_seconds={self.refresh_s}', f'--metrics_port={self.metrics_port}', *self.extra],
            stdout=open(self.log, 'wb'), stderr=subprocess.STDOUT,
            env={**os.environ, **cfg.env(), 'ENGAGEMENT_LOG_LEVEL': 'INFO'})

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.unexpected_exits.append(self.proc.returncode)
            raise RuntimeError(f'the pipeline exited by itself (code {self.proc.returncode}); see {self.log}')

    def kill9(self) -> None:
        """SIGKILL the driver as a crash would; its Prism or Flink job server follows it by pdeathsig (whatever of
        its tree is still there after 15 s is killed too)."""
        from launch.stack.processes import proc_start_time
        from pipelines.processes import descendants
        assert self.proc is not None
        tree = descendants(self.proc.pid)
        self.proc.kill()
        self.proc.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(proc_start_time(pid) is not None for pid in tree):
            time.sleep(0.2)
        for pid in tree:
            if proc_start_time(pid) is not None:
                os.kill(pid, 9)

    def stop(self) -> str:
        from launch.stack.processes import stop_tree
        return stop_tree(self.proc, timeout=30) if self.proc is not None else 'not started'


@dataclasses.dataclass
class Fault:
    name: str
    what: str
    outage_s: float
    inject: Callable[[], None]
    heal: Callable[[], None]


@dataclasses.dataclass
class Recovery:
    fault: str
    out_s: float             # from the fault to the component's restart (or the faults' clearing) done
    restart_s: float         # of which the restart (or clearing) itself
    recovered_s: float | None  # then until the reader's lag was under the threshold; None: not in time


def api_faults(cfg, body: dict) -> None:
    request = urllib.request.Request(f'{cfg.api_url}/admin/faults', data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=10):
        pass


def faults(stack: Stack, pipeline: Pipeline, scale: float) -> dict[str, Fault]:
    cfg = stack.cfg

    def outage(name: str) -> tuple[Callable, Callable]:
        return (lambda: say(f'  {name}: {stack.component(name).stop()}')), (lambda: stack.start(name))

    def kill(name: str) -> Callable:
        return lambda: say(f'  {name}: SIGKILL pid {stack.kill(name)}')
    return {f.name: f for f in (
        Fault('broker', 'kill -9 of the Kafka broker, restarted after', 20 * scale, kill('kafka'),
              lambda: stack.start('kafka')),
        Fault('postgres', 'Postgres stopped for', 60 * scale, *outage('postgres')),
        Fault('redis', 'Redis stopped for', 30 * scale, *outage('redis')),
        Fault('bigquery', 'the BigQuery emulator stopped for', 30 * scale, *outage('bigquery')),
        Fault('api', 'the REST API at 50% 5xx + 10% timeouts for', 60 * scale,
              lambda: api_faults(cfg, API_FAULTS), lambda: api_faults(cfg, {})),
        Fault('connect', 'kill -9 of Kafka Connect, restarted after', 1, kill('connect'),
              lambda: stack.start('connect')),
        Fault('pipeline', 'kill -9 of the pipeline, restarted after', 1, pipeline.kill9, pipeline.start),
    )}


def lag_seconds(metrics: dict[str, dict[frozenset, float]] | None, rate: float, cdc_topic: str) -> float:
    """How far behind the pipeline's reader is, in seconds of traffic: records between it and the end of every
    partition at its last fetch, over the load's rate."""
    if metrics is None:
        return float('inf')
    return _sum(metrics, 'engagement_kafka_partition_lag_records', topic=cdc_topic) / rate


def wait_recovered(pipeline: Pipeline, healed_wall: float, rate: float, threshold_s: float,
                   timeout: float) -> float | None:
    """Seconds from the heal until the reader fetched from the CDC topic after it, its lag is under
    `threshold_s` and events are counted again; None if not within `timeout`."""
    cdc = pipeline.cfg.events_topic
    start = time.monotonic()
    counted_at_heal = None
    while time.monotonic() - start < timeout:
        pipeline.check()
        metrics = scrape(pipeline.metrics_port)
        if metrics is not None:
            counted = _sum(metrics, 'engagement_events_counted_total')
            if counted_at_heal is None:
                counted_at_heal = counted
            fetched = max((value for sample, value in
                           metrics.get('engagement_kafka_last_fetch_timestamp_seconds', {}).items()
                           if ('topic', cdc) in sample), default=0)
            if fetched >= healed_wall and lag_seconds(metrics, rate, cdc) < threshold_s and counted > counted_at_heal:
                return time.monotonic() - start
        time.sleep(0.5)
    return None


def run(cfg, args) -> int:
    stack = Stack(cfg)
    refresh_s = max(5, min(30, int(60 * args.scale / 3)))   # the Postgres outage spans refreshes
    pipeline = Pipeline(cfg, args.runner, refresh_s, cfg.state_dir / 'logs', args.pipeline_flags)
    table = faults(stack, pipeline, args.scale)
    loads: list = []
    recoveries: list[Recovery] = []
    outcome = 1
    try:
        say(f'stack up ({cfg.state_dir})')
        stack.up()
        pipeline.start()
        postgres_load = chaos_traffic.PostgresLoad(cfg, args.rate, args.seed, say)
        hostile = chaos_traffic.HostileLoad(cfg, args.bad_rate, args.corpus_every, args.seed + 1, say)
        loads = [postgres_load, hostile]
        for load in loads:
            load.start()
        say(f'load: {args.rate:,.0f} events/s into Postgres, {args.bad_rate:,.0f} bad records/s and a hostile '
            f'corpus round every {args.corpus_every:.0f} s onto the topics; pipeline on {args.runner} '
            f'(catalogue refresh {refresh_s} s, log {pipeline.log})')
        started = time.time()
        warm = wait_recovered(pipeline, started, args.rate, args.recovered_lag, args.start_timeout)
        if warm is None:
            raise RuntimeError(f'the pipeline did not keep up with the load within {args.start_timeout:.0f} s')
        say(f'pipeline keeping up after {warm:.1f} s')
        time.sleep(args.gap)
        for name in args.faults:
            fault = table[name]
            say(f'{name}: {fault.what} {fault.outage_s:.0f} s')
            began = time.monotonic()
            fault.inject()
            time.sleep(fault.outage_s)
            healing = time.monotonic()
            fault.heal()
            healed, back = time.time(), time.monotonic()
            took = wait_recovered(pipeline, healed, args.rate, args.recovered_lag, args.recovery_timeout)
            recoveries.append(Recovery(name, back - began, back - healing, took))
            say(f'{name}: back after {back - began:.1f} s (restart or clearing {back - healing:.1f} s); ' +
                (f'lag under {args.recovered_lag:g} s {took:.1f} s later' if took is not None
                 else f'NOT recovered within {args.recovery_timeout:.0f} s'))
            time.sleep(args.gap)
        for load in loads:
            load.stop()
        for load in loads:
            load.join(300)
            if load.error is not None:
                raise RuntimeError(f'{load.name} failed: {type(load.error).__name__}: {load.error}')
        sent = hostile.summary()
        say(f'load stopped: {postgres_load.inserted:,} events inserted (Postgres refused inserts for '
            f'{postgres_load.outage_s:.0f} s), {sent["acknowledged"]:,} hostile records acknowledged by Kafka '
            f'({sent["corpus_rounds"]} corpus rounds, {sent["skipped_expected"]} to be skipped)')
        outcome = verdict(cfg, args, pipeline, hostile, recoveries, sent)
        return outcome
    finally:
        for load in loads:
            load.stop()
        say(f'pipeline {pipeline.stop()}')
        if not args.keep_stack:
            stack.down(purge=outcome == 0 and not args.use_stack)
            if outcome != 0:
                say(f'the logs and data are kept in {cfg.state_dir}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.scenarios.chaos', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rate', type=float, default=5000, help='valid events per second into Postgres (5000)')
    parser.add_argument('--bad-rate', type=float, default=50, help='bad records per second onto the raw topic (50)')
    parser.add_argument('--corpus-every', type=float, default=15,
                        help='seconds between two rounds of the hostile corpus on both topics (15)')
    parser.add_argument('--faults', default=','.join(FAULTS),
                        help=f'comma-separated, in this order: {",".join(FAULTS)} (default all)')
    parser.add_argument('--scale', type=float, default=1.0, help='multiply every outage by this (default 1)')
    parser.add_argument('--gap', type=float, default=10, help='seconds of normal running between faults (10)')
    parser.add_argument('--recovered-lag', type=float, default=1.0,
                        help='recovered: the reader\'s lag under this many seconds of traffic (1)')
    parser.add_argument('--recovery-timeout', type=float, default=300, help='per fault, seconds (300)')
    parser.add_argument('--start-timeout', type=float, default=180, help='seconds for the pipeline to keep up (180)')
    parser.add_argument('--timeout', type=float, default=600, help='seconds for the sinks to equal SQL (600)')
    parser.add_argument('--runner', default='DirectRunner', choices=('DirectRunner', 'FlinkRunner'))
    parser.add_argument('--seed', type=int, default=7)
    parser.add_argument('--use-stack', action='store_true',
                        help='run against the configured stack (settings below) instead of a private one')
    parser.add_argument('--keep-stack', action='store_true', help='leave the stack running at the end')
    stack_config.add_arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index('--') if '--' in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.pipeline_flags = argv[split + 1:]
    args.api_enabled = '--api_url=' not in args.pipeline_flags
    args.bq_enabled = not any(flag.lower() in ('--bq_enabled=false', '--bq_enabled=0', '--bq_enabled=no')
                              for flag in args.pipeline_flags)
    args.faults = [f.strip() for f in args.faults.split(',') if f.strip()]
    unknown = sorted(set(args.faults) - set(FAULTS))
    if unknown:
        parser.error(f'unknown faults {unknown}; known: {", ".join(FAULTS)}')
    for fault, enabled in (('api', args.api_enabled), ('bigquery', args.bq_enabled)):
        if fault in args.faults and not enabled:
            args.faults.remove(fault)
            say(f'no {fault} fault: the pipeline runs without that sink ({" ".join(args.pipeline_flags)})')
    if not (args.rate > 0 and args.bad_rate >= 0 and args.scale > 0):
        parser.error('--rate and --scale must be positive, --bad-rate not negative')
    try:
        cfg = stack_config.from_args(args) if args.use_stack else stack_config.private_config('engagement-chaos-')
    except stack_config.ConfigError as exc:
        parser.error(str(exc))
    from launch.scenarios.demo import stop_on_signals
    stop_on_signals()   # SIGTERM, SIGHUP: the cleanup runs as on Ctrl-C
    try:
        return run(cfg, args)
    except RuntimeError as exc:
        say(f'error: {exc}')
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
