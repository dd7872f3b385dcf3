"""End to end with `--kafka_reader=xlang` on Prism: Beam's cross-language ReadFromKafka (Java KafkaIO run by the
expansion service's loopback worker) against a private stack. Redis must equal what SQL computes after a `kill -9`
of the driver and a restart (the replay plan works from the commits the xlang path writes); the group's offsets
must reach the end of the CDC topic; the expansion service JVM must stop with the driver, killed or stopped."""
from __future__ import annotations

import pytest

from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline, crash_restart_and_check

pytestmark = pytest.mark.integration


@pytest.fixture(scope='module')
def xlang_stack():
    with private_stack() as stack:
        yield stack


def test_xlang_reader_run_equals_sql_after_kill9_commits_offsets_and_stops_its_service(xlang_stack):
    crash_restart_and_check(
        Pipeline(xlang_stack.cfg, '--kafka_reader=xlang', name='xlang'), jar='beam-kafka-expansion-service.jar',
        generator_args=['--rate', '100', '--duration', '25', '--seed', '12', '--late-share', '0.03'],
        kill_after_s=15, min_events=2000, exact_timeout_s=90)
