"""Fixtures of the end-to-end tests: one private stack for the session, the pipeline as a subprocess."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from launch.scenarios import generate, verify
from launch.stack.processes import proc_start_time, stop_tree
from pipelines.processes import descendants
from pipelines.runners import prism_cache_zip
from tests.conftest import private_stack


@pytest.fixture(scope='session')
def e2e_stack():
    """A stack of its own, so that no other test's data enters the ground truth."""
    with private_stack() as stack:
        yield stack




class Pipeline:
    """`python -m pipelines.engagement` against the private stack, started and killed by PID."""

    def __init__(self, cfg, *extra_args: str, name: str = 'pipeline', env: dict | None = None):
        self.cfg = cfg
        self.env = env or {}  # variables over the stack's credentials (e.g. a wrong password)
        self.extra_args = extra_args
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def log(self):
        return self.cfg.state_dir / f'{self.name}-{self.runs}.log'

    def start(self) -> None:
        self.runs += 1
        log = open(self.log, 'wb')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'pipelines.engagement', '--runner=DirectRunner', '--streaming',
             f'--kafka_bootstrap_servers={self.cfg.kafka_bootstrap}', f'--cdc_topic={self.cfg.events_topic}',
             f'--raw_topic={self.cfg.raw_topic}', f'--dead_letter_topic={self.cfg.dead_letter_topic}',
             f'--redis_url={self.cfg.redis_url}', f'--pg_dsn={self.cfg.pg_dsn}', '--content_refresh_seconds=10',
             f'--api_url={self.cfg.api_url}', f'--bq_endpoint={self.cfg.bq_endpoint}',
             f'--gcs_endpoint={self.cfg.gcs_endpoint}', f'--bq_project={self.cfg.bq_project}',
             f'--bq_dataset={self.cfg.bq_dataset}',
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.cfg.credentials_env(), 'ENGAGEMENT_LOG_LEVEL': 'INFO', **self.env})

    def kill9(self) -> None:
        """SIGKILL the driver, as a crash would; its Prism must stop with it (pipelines/runners.py)."""
        prism = children_running(self, Path(prism_cache_zip()).stem.encode())
        assert prism, 'no Prism process below the pipeline'
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        assert gone(prism, 15), f'Prism (pid {prism}) outlived its killed driver'

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            stop_tree(self.proc, timeout=30)




def wait_for(check, timeout: float, step: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    return check()


def gone(pids: list[int], timeout: float) -> bool:
    return wait_for(lambda: all(proc_start_time(pid) is None for pid in pids), timeout, 0.5)


def children_running(pipeline: Pipeline, program: bytes) -> list[int]:
    """PIDs below the pipeline's driver with an argument that ends with `program` (a jar, a binary's name)."""
    found = []
    for pid in descendants(pipeline.proc.pid):
        try:
            argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\0')
        except OSError:
            continue
        if any(arg.endswith(program) for arg in argv):
            found.append(pid)
    return found


def java_children(pipeline: Pipeline, jar: str) -> list[int]:
    """PIDs below the pipeline's driver whose command line runs `jar` (the Flink job server, the expansion
    service)."""
    return children_running(pipeline, jar.encode())


def uncommitted(cfg) -> dict:
    """Per CDC partition, how far the pipeline's committed offset is behind the end of the topic."""
    consumer = KafkaConsumer(**cfg.kafka_client_config(), group_id='engagement-pipeline',
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(cfg.events_topic, p) for p in consumer.partitions_for_topic(cfg.events_topic)]
        ends = consumer.end_offsets(parts)
        return {tp.partition: ends[tp] - (consumer.committed(tp) or 0) for tp in parts
                if (consumer.committed(tp) or 0) < ends[tp]}
    finally:
        consumer.close()


def crash_restart_and_check(pipeline: Pipeline, *, jar: str, generator_args: list[str], kill_after_s: float,
                            min_events: int, exact_timeout_s: float) -> None:
    """The crash scenario of a pipeline that runs a JVM of its own (`jar`): generator load, `kill -9` of the
    driver mid-stream (the JVM must go with it), a restart with the same options; then Redis equals SQL, the
    group's offsets reach the end of the CDC topic, and a normal stop takes the JVM along too."""
    cfg = pipeline.cfg
    what = jar.removesuffix('.jar')
    try:
        pipeline.start()
        inserts = threading.Thread(target=generate.main, args=([*generator_args, *cfg.cli_flags()],))
        inserts.start()
        first = wait_for(lambda: java_children(pipeline, jar), 60)
        assert first, f'no {what} started; see {pipeline.log}'
        time.sleep(kill_after_s)
        os.kill(pipeline.proc.pid, signal.SIGKILL)  # the driver only, as a crash would
        pipeline.proc.wait()
        assert gone(first, 15), f'the {what} outlived its killed driver'

        pipeline.start()
        inserts.join()
        deadline = time.monotonic() + exact_timeout_s
        diffs = ['not checked']
        while diffs and time.monotonic() < deadline:
            assert pipeline.alive(), f'pipeline exited; see {pipeline.log}'
            diffs = verify.verify(cfg, 60, 'engagement')
            time.sleep(0 if not diffs else 3)
        assert diffs == [], f'{len(diffs)} differences between Redis and SQL, e.g. {diffs[:5]}; see {pipeline.log}'
        assert sum(r['events'] for r in verify.ground_truth(cfg.pg_dsn, 60, 0).values()) >= min_events

        lag = wait_for(lambda: not uncommitted(cfg), 30) or uncommitted(cfg)
        assert lag is True, f'offsets not committed up to the end of {cfg.events_topic}: behind by {lag}'

        running = java_children(pipeline, jar)
        assert running
        pipeline.proc.terminate()
        pipeline.proc.wait(60)
        assert gone(running, 15), f'the {what} outlived its stopped driver'
    finally:
        pipeline.stop()
