"""The golden scenario (issue #6) on every local runner: `python -m launch.scenarios.golden` as a user runs it, on the
DirectRunner (Prism), on the FlinkRunner embedded and on the stack's Flink session cluster, each on a fresh private
stack of its own. Both must
equal what SQL computes, part by part (Redis, BigQuery views, API keys, dead letters), and their digests must be
identical; a difference is printed as (part, key, this vs other)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 420


def golden(runner: str, out, *extra: str) -> tuple[int, str]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, '-m', 'launch.scenarios.golden', '--runner', runner, '--out', str(out),
                           *extra], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    print(f'--- {runner} ({time.monotonic() - started:.0f} s)\n{proc.stdout}{proc.stderr[-3000:]}')
    return proc.returncode, proc.stdout


@pytest.fixture(scope='module')
def prism_digest(tmp_path_factory):
    prism = tmp_path_factory.mktemp('golden') / 'prism.json'
    code, out = golden('DirectRunner', prism)
    assert code == 0, f'Prism run differs from SQL:\n{out}'
    return prism


def same_digests(prism, other) -> None:
    a, b = json.loads(prism.read_text()), json.loads(other.read_text())
    for part in ('redis', 'bq_events', 'bq_stats', 'api', 'dead_letters'):
        assert a[part]['sha256'] == b[part]['sha256'], part


def test_golden_scenario_gives_the_same_digest_on_prism_and_flink_and_equals_sql(prism_digest, tmp_path):
    prism, flink = prism_digest, tmp_path / 'flink.json'
    code, out = golden('FlinkRunner', flink, '--compare', str(prism))
    assert 'digest equals the other' in out and code == 0, f'Flink run differs from SQL or from Prism:\n{out}'

    same_digests(prism, flink)
    a = json.loads(prism.read_text())
    # The scenario exercised what it is meant to: late panes, too-late and bad records, the new content.
    letters = a['dead_letters']['items']
    assert letters['window/too_late']['count'] == 6
    assert {name.split('/')[1] for name in letters} >= {'malformed_json', 'missing_field', 'wrong_type',
                                                        'unknown_content', 'too_late'}
    assert a['api']['count'] == a['bq_events']['count'] == 600 + 60 + 6
    assert any(v.get('title') == 'Golden new show' for v in a['redis']['items'].values() if isinstance(v, dict))
    assert any(v.get('title') == 'Golden renamed show' for v in a['redis']['items'].values() if isinstance(v, dict))


def test_golden_scenario_on_the_flink_session_cluster_gives_the_same_digest(prism_digest, tmp_path):
    """The stack's session cluster (JobManager, 2 TaskManagers, worker pool; parallelism 2), job submitted by the
    job server over REST, SDK workers from the pool: the same digest as on Prism."""
    cluster = tmp_path / 'flink-cluster.json'
    code, out = golden('FlinkRunner', cluster, '--flink-cluster', '--compare', str(prism_digest))
    assert 'digest equals the other' in out and code == 0, f'Flink cluster run differs from SQL or Prism:\n{out}'
    same_digests(prism_digest, cluster)
