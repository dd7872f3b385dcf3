"""End to end with `--kafka_reader=xlang` on Prism: Beam's cross-language ReadFromKafka (Java KafkaIO run by the
expansion service's loopback worker) against a private stack. Redis must equal what SQL computes after a `kill -9`
of the driver and a restart (the replay plan works from the commits the xlang path writes); the group's offsets
must reach the end of the CDC topic; the expansion service JVM must stop with the driver, killed or stopped."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from launch import generate, verify
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline
from tests.e2e.test_flink_e2e import gone, uncommitted, wait_for

pytestmark = pytest.mark.integration

EXACT_TIMEOUT_S = 90


@pytest.fixture(scope='module')
def xlang_stack():
    with private_stack() as stack:
        yield stack


def expansion_services(pipeline: Pipeline) -> list[int]:
    from launch.stack import descendants
    found = []
    for pid in descendants(pipeline.proc.pid):
        try:
            argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\0')
        except OSError:
            continue
        if any(arg.endswith(b'beam-kafka-expansion-service.jar') for arg in argv):
            found.append(pid)
    return found


def test_xlang_reader_run_equals_sql_after_kill9_commits_offsets_and_stops_its_service(xlang_stack):
    cfg = xlang_stack.cfg
    pipeline = Pipeline(cfg, '--kafka_reader=xlang', name='xlang')
    try:
        pipeline.start()
        inserts = threading.Thread(target=generate.main, args=(
            ['--rate', '100', '--duration', '25', '--seed', '12', '--late-share', '0.03', *cfg.cli_flags()],))
        inserts.start()
        first_service = wait_for(lambda: expansion_services(pipeline), 60)
        assert first_service, f'no expansion service started; see {pipeline.log}'
        time.sleep(15)
        os.kill(pipeline.proc.pid, signal.SIGKILL)  # the driver only, as a crash would
        pipeline.proc.wait()
        assert gone(first_service, 15), 'the expansion service outlived its killed driver'

        pipeline.start()
        inserts.join()
        deadline = time.monotonic() + EXACT_TIMEOUT_S
        diffs = ['not checked']
        while diffs and time.monotonic() < deadline:
            assert pipeline.alive(), f'pipeline exited; see {pipeline.log}'
            diffs = verify.verify(cfg, 60, 'engagement')
            time.sleep(0 if not diffs else 3)
        assert diffs == [], f'{len(diffs)} differences between Redis and SQL, e.g. {diffs[:5]}; see {pipeline.log}'
        assert sum(r['events'] for r in verify.ground_truth(cfg.pg_dsn, 60, 0).values()) >= 2000

        lag = wait_for(lambda: not uncommitted(cfg), 30) or uncommitted(cfg)
        assert lag is True, f'offsets not committed up to the end of {cfg.events_topic}: behind by {lag}'

        service = expansion_services(pipeline)
        assert service
        pipeline.proc.terminate()
        pipeline.proc.wait(60)
        assert gone(service, 15), 'the expansion service outlived its stopped driver'
    finally:
        pipeline.stop()
