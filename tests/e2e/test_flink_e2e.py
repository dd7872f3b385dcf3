"""End to end on Flink: `python -m pipelines.engagement --runner=FlinkRunner --streaming` with nothing but the
stack's flags (embedded Flink in the job server `make install` assembles, our presets) against a private stack.
Redis must equal what SQL computes after a `kill -9` of the driver and a restart; the consumer group's offsets
must reach the end of the CDC topic (bundle finalization runs on Flink's checkpoints); the job server JVM must
stop with the driver, both when the driver is killed and when it is stopped."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from launch import generate, verify
from launch.stack import _proc_start_time, descendants
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline

pytestmark = pytest.mark.integration

EXACT_TIMEOUT_S = 150


@pytest.fixture(scope='module')
def flink_stack():
    with private_stack() as stack:
        yield stack


def job_servers(pipeline: Pipeline) -> list[int]:
    found = []
    for pid in descendants(pipeline.proc.pid):
        try:
            argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\0')
        except OSError:
            continue
        if any(arg.endswith(b'beam-flink-job-server.jar') for arg in argv):
            found.append(pid)
    return found


def wait_for(check, timeout: float, step: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    return check()


def gone(pids: list[int], timeout: float) -> bool:
    return wait_for(lambda: all(_proc_start_time(pid) is None for pid in pids), timeout, 0.5)


def uncommitted(cfg) -> dict:
    """Per CDC partition, how far the pipeline's committed offset is behind the end of the topic."""
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka_bootstrap, group_id='engagement-pipeline',
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(cfg.events_topic, p) for p in consumer.partitions_for_topic(cfg.events_topic)]
        ends = consumer.end_offsets(parts)
        return {tp.partition: ends[tp] - (consumer.committed(tp) or 0) for tp in parts
                if (consumer.committed(tp) or 0) < ends[tp]}
    finally:
        consumer.close()


def test_flink_run_equals_sql_after_kill9_commits_offsets_and_stops_its_job_server(flink_stack):
    cfg = flink_stack.cfg
    pipeline = Pipeline(cfg, '--runner=FlinkRunner', name='flink')
    try:
        pipeline.start()
        inserts = threading.Thread(target=generate.main, args=(
            ['--rate', '100', '--duration', '45', '--seed', '11', '--late-share', '0.03', *cfg.cli_flags()],))
        inserts.start()
        first_job_server = wait_for(lambda: job_servers(pipeline), 60)
        assert first_job_server, f'no Flink job server started; see {pipeline.log}'
        time.sleep(25)
        os.kill(pipeline.proc.pid, signal.SIGKILL)  # the driver only, as a crash would
        pipeline.proc.wait()
        assert gone(first_job_server, 15), 'the job server outlived its killed driver'

        pipeline.start()
        inserts.join()
        deadline = time.monotonic() + EXACT_TIMEOUT_S
        diffs = ['not checked']
        while diffs and time.monotonic() < deadline:
            assert pipeline.alive(), f'pipeline exited; see {pipeline.log}'
            diffs = verify.verify(cfg, 60, 'engagement')
            time.sleep(0 if not diffs else 3)
        assert diffs == [], f'{len(diffs)} differences between Redis and SQL, e.g. {diffs[:5]}; see {pipeline.log}'
        assert sum(r['events'] for r in verify.ground_truth(cfg.pg_dsn, 60, 0).values()) >= 4000

        lag = wait_for(lambda: not uncommitted(cfg), 30) or uncommitted(cfg)
        assert lag is True, f'offsets not committed up to the end of {cfg.events_topic}: behind by {lag}'

        job_server = job_servers(pipeline)
        assert job_server
        pipeline.proc.terminate()
        pipeline.proc.wait(60)
        assert gone(job_server, 15), 'the job server outlived its stopped driver'
    finally:
        pipeline.stop()
