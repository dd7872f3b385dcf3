"""End to end on the stack's Flink session cluster (`launch.stack up --with flink`: JobManager, 2 TaskManagers with
one slot each, the Beam worker pool; parallelism 2): at 2,000 events/s, `kill -9` of one TaskManager mid-stream.
Flink restarts the job from its last checkpoint once a TaskManager is back (the stack starts it again, as a
supervisor would); Redis, BigQuery (deduplicated view) and the REST API receiver must then equal SQL, and the
driver must cancel the cluster's job when it is stopped (Beam's job server cannot)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from launch.scenarios import generate, verify
from launch.scenarios.chaos_verdict import api_differences
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.flink_cluster_faults]  # `make test-flink-cluster`

RATE, DURATION_S, KILL_AFTER_S, DOWN_S = 2000, 45, 15, 10


@pytest.fixture(scope='module')
def cluster_stack():
    with private_stack(with_=('flink',)) as stack:
        yield stack


def rest(cfg, path: str):
    with urllib.request.urlopen(f'http://127.0.0.1:{cfg.flink_rest_port}{path}', timeout=10) as resp:
        return json.load(resp)


def running_job(cfg) -> dict | None:
    jobs = [j for j in rest(cfg, '/jobs/overview')['jobs'] if j['state'] == 'RUNNING']
    return jobs[0] if len(jobs) == 1 else None


def assert_every_sink_equals_sql(cfg, pipeline: Pipeline, timeout: float) -> None:
    """Wait until Redis, BigQuery (deduplicated view) and the API receiver equal SQL; the pipeline must stay up."""
    deadline = time.monotonic() + timeout
    diffs = ['not checked']
    while diffs and time.monotonic() < deadline:
        assert pipeline.alive(), f'pipeline exited; see {pipeline.log}'
        diffs = verify.verify(cfg, 60, 'engagement') + verify.verify_bigquery(cfg, 60) + api_differences(cfg)
        time.sleep(0 if not diffs else 3)
    assert diffs == [], f'{len(diffs)} differences with SQL, e.g. {diffs[:5]}; see {pipeline.log}'


def test_killing_a_taskmanager_mid_stream_restarts_from_a_checkpoint_and_every_sink_equals_sql(cluster_stack):
    cfg = cluster_stack.cfg
    pipeline = Pipeline(cfg, '--runner=FlinkRunner', '--flink_master=[cluster]', name='flink-cluster',
                        env={'ENGAGEMENT_STATE_DIR': str(cfg.state_dir),
                             'ENGAGEMENT_FLINK_REST_PORT': str(cfg.flink_rest_port),
                             'ENGAGEMENT_FLINK_WORKER_POOL_PORT': str(cfg.flink_worker_pool_port)})
    try:
        pipeline.start()
        job = wait_for(lambda: running_job(cfg), 120)
        assert job, f'no job running on the cluster; see {pipeline.log}'
        assert job['name'] == 'engagement-engagement-pipeline'
        vertices = rest(cfg, f'/jobs/{job["jid"]}')['vertices']
        assert max(v['parallelism'] for v in vertices) == 2  # TaskManagers x slots, from the cluster's config
        wait_for(lambda: rest(cfg, f'/jobs/{job["jid"]}/checkpoints')['counts']['completed'] >= 1, 60)

        inserts = threading.Thread(target=generate.main, args=(
            ['--rate', str(RATE), '--duration', str(DURATION_S), '--seed', '15', *cfg.cli_flags()],))
        inserts.start()
        time.sleep(KILL_AFTER_S)
        victim = cluster_stack.component('flink-tm1')
        killed_at = time.monotonic()
        cluster_stack.kill('flink-tm1')
        time.sleep(DOWN_S)
        cluster_stack.start('flink-tm1')
        inserts.join()
        assert victim.running()

        assert_every_sink_equals_sql(cfg, pipeline, 240)
        exact_s = time.monotonic() - killed_at
        events = sum(r['events'] for r in verify.ground_truth(cfg.pg_dsn, 60, 0).values())
        assert events >= RATE * DURATION_S * 0.9

        counts = rest(cfg, f'/jobs/{job["jid"]}/checkpoints')['counts']
        print(f'\n{events:,} events at {RATE:,}/s; every sink equal to SQL {exact_s:.0f} s after the kill; '
              f'checkpoints {counts}')
        assert counts['restored'] >= 1, 'the job did not restore a checkpoint after losing a TaskManager'

        os.kill(pipeline.proc.pid, signal.SIGTERM)
        pipeline.proc.wait(60)
        state = wait_for(lambda: rest(cfg, f'/jobs/{job["jid"]}')['state'] == 'CANCELED', 30)
        assert state, f'the cluster job is still {rest(cfg, "/jobs/" + job["jid"])["state"]} after the driver stopped'
    finally:
        pipeline.stop()


def test_stop_with_a_savepoint_and_resume_from_it_ends_exact(cluster_stack):
    """How users upgrade the pipeline: stop the job with a savepoint (launch.tools.flink_savepoint), start the new
    one from it (--savepoint_path). Events keep arriving meanwhile; every sink ends equal to SQL."""
    cfg = cluster_stack.cfg
    env = {'ENGAGEMENT_STATE_DIR': str(cfg.state_dir), 'ENGAGEMENT_FLINK_REST_PORT': str(cfg.flink_rest_port),
           'ENGAGEMENT_FLINK_WORKER_POOL_PORT': str(cfg.flink_worker_pool_port)}
    first = Pipeline(cfg, '--runner=FlinkRunner', '--flink_master=[cluster]', name='before-savepoint', env=env)
    second = None
    try:
        first.start()
        job = wait_for(lambda: running_job(cfg), 120)
        assert job, f'no job running on the cluster; see {first.log}'
        wait_for(lambda: rest(cfg, f'/jobs/{job["jid"]}/checkpoints')['counts']['completed'] >= 1, 60)
        inserts = threading.Thread(target=generate.main, args=(
            ['--rate', '500', '--duration', '40', '--seed', '16', *cfg.cli_flags()],))
        inserts.start()
        time.sleep(15)
        done = subprocess.run([sys.executable, '-m', 'launch.tools.flink_savepoint', '--rest-url',
                               f'http://127.0.0.1:{cfg.flink_rest_port}'], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=180)
        assert done.returncode == 0, done.stderr
        savepoint = done.stdout.strip()
        assert savepoint.startswith('file:'), savepoint
        assert first.proc.wait(60) == 0  # its job finished: the driver exits by itself
        assert rest(cfg, f'/jobs/{job["jid"]}')['state'] == 'FINISHED'

        second = Pipeline(cfg, '--runner=FlinkRunner', '--flink_master=[cluster]', f'--savepoint_path={savepoint}',
                          name='from-savepoint', env=env)
        second.start()
        resumed = wait_for(lambda: running_job(cfg), 120)
        assert resumed and resumed['jid'] != job['jid'], f'no resumed job; see {second.log}'
        restored = wait_for(lambda: (rest(cfg, f'/jobs/{resumed["jid"]}/checkpoints').get('latest') or {})
                            .get('restored'), 60)
        assert restored and restored['is_savepoint'] and restored['external_path'] in savepoint, restored
        inserts.join()

        assert_every_sink_equals_sql(cfg, second, 180)
    finally:
        first.stop()
        if second:
            second.stop()


def test_killing_the_jobmanager_then_resuming_from_its_latest_checkpoint_ends_exact(cluster_stack):
    """The local cluster has no high availability: `kill -9` of the JobManager loses the running job. What the
    user does: start the JobManager again (`launch.stack up --with flink`; the TaskManagers register again), then
    the pipeline with `--savepoint_path=<the job's latest retained checkpoint>` (`launch.tools.flink_savepoint
    --latest-checkpoint`): every window's state and the reader's positions come back, and every sink ends equal to
    SQL. Events keep arriving throughout."""
    cfg = cluster_stack.cfg
    env = {'ENGAGEMENT_STATE_DIR': str(cfg.state_dir), 'ENGAGEMENT_FLINK_REST_PORT': str(cfg.flink_rest_port),
           'ENGAGEMENT_FLINK_WORKER_POOL_PORT': str(cfg.flink_worker_pool_port)}
    first = Pipeline(cfg, '--runner=FlinkRunner', '--flink_master=[cluster]', name='before-jm-kill', env=env)
    second = None
    try:
        first.start()
        job = wait_for(lambda: running_job(cfg), 120)
        assert job, f'no job running on the cluster; see {first.log}'
        wait_for(lambda: rest(cfg, f'/jobs/{job["jid"]}/checkpoints')['counts']['completed'] >= 1, 60)
        inserts = threading.Thread(target=generate.main, args=(
            ['--rate', '500', '--duration', '60', '--seed', '17', *cfg.cli_flags()],))
        inserts.start()
        time.sleep(15)
        killed_at = time.monotonic()
        cluster_stack.kill('flink-jm')
        # The driver does not hang on a job that is gone: it fails (measured: status 1, ~60 s after the kill).
        exited = wait_for(lambda: not first.alive(), 120)
        assert exited, f'the driver still runs 120 s after its JobManager was killed; see {first.log}'
        last = first.log.read_text(errors='replace').strip().splitlines()[-3:]
        print(f'\ndriver exited {first.proc.returncode} {time.monotonic() - killed_at:.0f} s after the JobManager '
              f'kill; its last lines: {last}')
        first.stop()
        cluster_stack.start('flink-jm')
        slots = wait_for(lambda: rest(cfg, '/overview')['slots-available'] >= 2, 90)
        print(f'TaskManagers back {time.monotonic() - killed_at:.0f} s after the kill: {slots}')
        done = subprocess.run([sys.executable, '-m', 'launch.tools.flink_savepoint', '--latest-checkpoint',
                               '--job-id', job['jid']], capture_output=True, text=True, env={**os.environ, **env},
                              timeout=30)
        assert done.returncode == 0, done.stderr
        checkpoint = done.stdout.strip()
        assert f'/{job["jid"]}/chk-' in checkpoint, checkpoint

        second = Pipeline(cfg, '--runner=FlinkRunner', '--flink_master=[cluster]', f'--savepoint_path={checkpoint}',
                          name='after-jm-kill', env=env)
        second.start()
        resumed = wait_for(lambda: running_job(cfg), 120)
        assert resumed, f'no resumed job; see {second.log}'
        restored = wait_for(lambda: (rest(cfg, f'/jobs/{resumed["jid"]}/checkpoints').get('latest') or {})
                            .get('restored'), 60)
        assert restored and restored['external_path'] in checkpoint, restored
        inserts.join()
        assert_every_sink_equals_sql(cfg, second, 240)
        print(f'every sink equal to SQL {time.monotonic() - killed_at:.0f} s after the kill')
    finally:
        first.stop()
        if second:
            second.stop()
