"""End to end on Flink: `python -m pipelines.engagement --runner=FlinkRunner --streaming` with nothing but the
stack's flags (embedded Flink in the job server `make install` assembles, our presets) against a private stack.
Redis must equal what SQL computes after a `kill -9` of the driver and a restart; the consumer group's offsets
must reach the end of the CDC topic (bundle finalization runs on Flink's checkpoints); the job server JVM must
stop with the driver, both when the driver is killed and when it is stopped."""
from __future__ import annotations

import pytest

from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline, crash_restart_and_check

pytestmark = pytest.mark.integration


@pytest.fixture(scope='module')
def flink_stack():
    with private_stack() as stack:
        yield stack


def test_flink_run_equals_sql_after_kill9_commits_offsets_and_stops_its_job_server(flink_stack):
    crash_restart_and_check(
        Pipeline(flink_stack.cfg, '--runner=FlinkRunner', name='flink'), jar='beam-flink-job-server.jar',
        generator_args=['--rate', '100', '--duration', '45', '--seed', '11', '--late-share', '0.03'],
        kill_after_s=25, min_events=4000, exact_timeout_s=150)
