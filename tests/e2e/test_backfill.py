"""`--mode=backfill` on the real stack: a bounded read of Postgres through the live transforms.

1. With the live pipeline running (every sink on) and exact, a backfill over the same windows changes nothing:
   Redis (every stats hash, top set and totals hash, but the pane's receive time), the BigQuery views, all still
   equal to SQL.
2. A backfill into a Redis prefix of its own equals SQL for every window it covers, on Prism and on embedded Flink.
"""
from __future__ import annotations

import datetime
import time

import pytest
import redis

from launch.scenarios import generate, verify
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline, wait_for

pytestmark = pytest.mark.integration

WINDOW_S = 60


@pytest.fixture(scope='module')
def backfilled_stack():
    """A stack of its own holding ~2 minutes of events, written by a live pipeline that is exact at the end."""
    with private_stack() as stack:
        cfg = stack.cfg
        since = int(time.time()) // WINDOW_S * WINDOW_S
        live = Pipeline(cfg, name='live')
        live.start()
        try:
            generate.main(['--rate', '100', '--duration', '20', '--seed', '21', *cfg.cli_flags()])
            # every window holding an event has ended (the backfill stops at the window in progress)
            time.sleep(max(0.0, -(-time.time() // WINDOW_S) * WINDOW_S - time.time()) + 1)
            def exact():
                assert live.alive(), f'live pipeline exited; see {live.log}'
                return verify.verify(cfg, WINDOW_S, 'engagement', since) + verify.verify_bigquery(cfg, WINDOW_S,
                                                                                                  since) == []
            assert wait_for(exact, 180, 2), f'the live pipeline is not exact; see {live.log}'
            yield stack, live, since
        finally:
            live.stop()


def redis_snapshot(cfg, prefix: str) -> dict:
    """Every key of `prefix` with its value; a stats hash without `pane_us` (when the sink received the pane)."""
    client = redis.Redis.from_url(cfg.redis_url, decode_responses=True, **cfg.redis_credentials())
    found = {}
    for key in client.scan_iter(f'{prefix}:*'):
        kind = client.type(key)
        if kind == 'hash':
            found[key] = {k: v for k, v in client.hgetall(key).items() if k != 'pane_us'}
        elif kind == 'zset':
            found[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            found[key] = kind
    client.close()
    return found


def backfill(cfg, since: int, *flags: str, name: str) -> Pipeline:
    start = datetime.datetime.fromtimestamp(since, datetime.timezone.utc).isoformat()
    run = Pipeline(cfg, '--mode=backfill', f'--since={start}', *flags, name=name)
    run.start()
    assert run.proc.wait(600) == 0, f'the backfill failed:\n{run.log.read_text()[-3000:]}'
    return run


def test_a_backfill_over_what_the_live_pipeline_wrote_changes_nothing(backfilled_stack):
    stack, live, since = backfilled_stack
    cfg = stack.cfg
    redis_before = redis_snapshot(cfg, 'engagement')
    bq_ids_before, bq_stats_before = verify.bigquery_state(cfg, since)
    assert redis_before and bq_ids_before

    backfill(cfg, since, '--api_url=', name='backfill-same-keys')  # the live pipeline keeps running meanwhile

    assert live.alive()
    assert redis_snapshot(cfg, 'engagement') == redis_before
    bq_ids_after, bq_stats_after = verify.bigquery_state(cfg, since)
    assert sorted(bq_ids_after) == sorted(bq_ids_before)
    # the view's row of a window is now the backfill's: the same figures, its own pane index, timing, write time
    changed = {key: {f: (v, bq_stats_after[key].get(f)) for f, v in row.items()
                     if bq_stats_after[key].get(f) != v and f not in ('pane_index', 'pane_timing', 'written_ts')}
               for key, row in bq_stats_before.items()}
    changed = {key: fields for key, fields in changed.items() if fields}
    assert set(bq_stats_after) == set(bq_stats_before) and not changed, list(changed.items())[:3]
    assert verify.verify(cfg, WINDOW_S, 'engagement', since) == []
    assert verify.verify_bigquery(cfg, WINDOW_S, since) == []


@pytest.mark.parametrize('runner', ['DirectRunner', 'FlinkRunner'])
def test_a_backfill_into_a_prefix_of_its_own_equals_sql(backfilled_stack, runner):
    stack, _, since = backfilled_stack
    cfg = stack.cfg
    prefix = f'backfill-{runner.lower()}'
    run = backfill(cfg, since, f'--runner={runner}', f'--redis_prefix={prefix}', '--bq_enabled=false',
                   '--backfill_rows_per_read=500', name=f'backfill-{runner}')
    assert verify.verify(cfg, WINDOW_S, prefix, since) == [], f'see {run.log}'
    assert redis_snapshot(cfg, prefix)
    planned = [line for line in run.log.read_text().splitlines() if '"backfill_planned"' in line]
    assert planned and '"reads": ' in planned[0] and '"reads": 0' not in planned[0] and '"reads": 1,' not in planned[0]
