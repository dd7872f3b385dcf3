"""Fixtures of the end-to-end tests: one private stack for the session, the pipeline as a subprocess."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from launch.stack import descendants, stop_tree
from tests.conftest import private_stack


@pytest.fixture(scope='session')
def e2e_stack():
    """A stack of its own, so that no other test's data enters the ground truth."""
    with private_stack() as stack:
        yield stack




class Pipeline:
    """`python -m pipelines.engagement` against the private stack, started and killed by PID."""

    def __init__(self, cfg, *extra_args: str, name: str = 'pipeline'):
        self.cfg = cfg
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
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, 'ENGAGEMENT_LOG_LEVEL': 'INFO'})

    def kill9(self) -> None:
        """SIGKILL the driver and its Prism job server, as a crash would."""
        tree = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in tree:
            os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            stop_tree(self.proc, timeout=30)


