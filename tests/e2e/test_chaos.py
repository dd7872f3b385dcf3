"""The fault scenario (launch/scenarios/chaos.py) at a reduced rate and with shorter outages: every fault of every
component in one run under mixed valid and hostile traffic, then Redis, BigQuery and the REST API equal to SQL and
every bad record dead-lettered once with its reason. The full run (5,000 events/s, full outages) is a documented
command: docs/operations.md#fault-scenario."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from launch.scenarios.chaos import FAULTS

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_every_fault_under_hostile_load_ends_exact_against_sql():
    done = subprocess.run(
        [sys.executable, '-m', 'launch.scenarios.chaos', '--rate', '300', '--bad-rate', '10', '--scale', '0.25',
         '--gap', '5', '--corpus-every', '20'], capture_output=True, text=True, timeout=2400)
    print(done.stdout[-20_000:], done.stderr[-5000:])
    assert done.returncode == 0, 'the fault scenario did not end exact; its report is above'
    report = done.stdout
    for fault in FAULTS:   # each fault ran, and the pipeline recovered from it
        assert re.search(rf'^ +{fault} +out +[\d.]+ s .* recovered in +[\d.]+ s$', report, re.M), fault
    for part in ('redis', 'bigquery', 'api', 'dead_letters', 'traffic', 'pipeline'):
        assert re.search(rf'^ +{part} +exact$', report, re.M), part
    # the hostile traffic reached the pipeline: bad records of every kind, and the corpus on both topics
    letters = re.search(r'dead letters \(each failure once\): (.*)$', report, re.M).group(1)
    for reason in ('parse/malformed_json', 'parse/too_deeply_nested', 'parse/payload_too_large',
                   'parse/unsupported_op', 'enrich/unknown_content', 'api/'):
        assert reason in letters, reason
