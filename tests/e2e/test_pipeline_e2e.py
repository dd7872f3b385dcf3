"""End to end on the real stack, DirectRunner (Prism), streaming: Redis must equal what SQL computes from
Postgres, exactly, after a `kill -9` of the pipeline and a SIGKILL of Kafka Connect mid-run; every bad record
sent to the raw topic must be in the dead-letter topic with its reason; the REST API receiver must hold every
valid event exactly once by idempotency key, and BigQuery one row per event id and stats equal to SQL.

Runs `python -m pipelines.engagement` as a user would (a subprocess, flags for the private stack)."""
from __future__ import annotations

import collections
import json
import threading
import time
import urllib.request

import psycopg2
import pytest

from launch.scenarios import generate, verify
from launch.tools.dead_letters import distinct_failures
from launch.tools.dead_letters import read_dead_letters as read_records
from tests.e2e.conftest import Pipeline

pytestmark = pytest.mark.integration

CAUGHT_UP_TIMEOUT_S = 600
BIGQUERY_CATCH_UP_S = 300


def read_topic(cfg, topic: str) -> list[dict]:
    """Every JSON record on `topic`, from the beginning to the end offsets of now."""
    return [record for *_, record in read_records(cfg.kafka_client_config(), topic)]


def read_dead_letters(cfg) -> list[dict]:
    return read_topic(cfg, cfg.dead_letter_topic)


def api_keys(cfg) -> dict[str, int]:
    """Idempotency keys the local API receiver stored, with how often each was received."""
    with urllib.request.urlopen(f'{cfg.api_url}/v1/events/keys', timeout=30) as answer:
        return json.loads(answer.read())['keys']


def wait_exact(cfg, pipeline: Pipeline, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    diffs = ['not checked']
    while time.monotonic() < deadline:
        assert pipeline.alive(), f'pipeline exited; see {pipeline.log}'
        diffs = verify.verify(cfg, 60, 'engagement')
        if not diffs:
            return []
        time.sleep(3)
    return diffs


def test_redis_equals_sql_after_pipeline_and_connect_crashes(e2e_stack):
    cfg = e2e_stack.cfg
    pipeline = Pipeline(cfg)
    summary_file = cfg.state_dir / 'direct.json'
    try:
        pipeline.start()
        inserts = threading.Thread(target=generate.main, args=(
            ['--rate', '110', '--duration', '190', '--seed', '21', '--late-share', '0.03', *cfg.cli_flags()],))
        bad = threading.Thread(target=generate.main, args=(
            ['--direct', '--rate', '4', '--count', '400', '--bad-share', '1', '--seed', '5',
             '--summary', str(summary_file), *cfg.cli_flags()],))
        inserts.start()
        bad.start()
        time.sleep(70)
        pipeline.kill9()
        time.sleep(2)
        pipeline.start()
        time.sleep(40)
        e2e_stack.kill('connect')
        time.sleep(1)
        e2e_stack.start('connect')
        inserts.join()
        bad.join()

        diffs = wait_exact(cfg, pipeline, CAUGHT_UP_TIMEOUT_S)
        truth = verify.ground_truth(cfg.pg_dsn, 60, 0)
        assert sum(r['events'] for r in truth.values()) >= 20_000
        assert diffs == [], f'{len(diffs)} differences between Redis and SQL, e.g. {diffs[:5]}'

        sent = json.loads(summary_file.read_text())
        assert sent['counts']['valid'] == 0 and sent['total'] == 400
        deadline = time.monotonic() + 60
        while True:
            # each failure once, as the operator's listing counts them (the kill -9 made the restarted pipeline
            # read some bad records again and write their dead letters a second time)
            letters = [record for *_, record in distinct_failures(read_records(cfg.kafka_bootstrap,
                                                                               cfg.dead_letter_topic))
                       if record.get('source_topic') == cfg.raw_topic]
            by_offset = {(d['source_partition'], d['source_offset']): d for d in letters}
            if len(by_offset) >= sent['total'] or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert len(by_offset) == sent['total'], 'every bad record is in the dead letters exactly by offset'
        assert len(letters) == len(by_offset), 'the listing counts each failure once'
        got = collections.defaultdict(set)
        for d in by_offset.values():
            assert d['stage'] in ('parse', 'enrich') and d['payload'] and d['error']
            got[d['reason']].add(d['event_id'])
        for kind, ids in sent['bad_ids'].items():
            assert got[kind] == set(ids), f'dead letters with reason {kind} differ from what was sent'

        # The REST API holds every valid event exactly once by idempotency key (replays answered as duplicates).
        with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
            cur.execute('SELECT id FROM engagement_events')
            ids = {str(row[0]) for row in cur.fetchall()}
        received = api_keys(cfg)
        assert set(received) == ids, (f'API keys differ from Postgres ids: {len(ids - set(received))} missing, '
                                      f'{len(set(received) - ids)} unexpected')
        assert not [d for d in read_dead_letters(cfg) if d['stage'] == 'api'], 'no API dead letters expected'

        # BigQuery (the emulator, ~1k rows/s: it may still be catching up): one events_enriched row per event id,
        # content_minute_stats equal to SQL.
        deadline = time.monotonic() + BIGQUERY_CATCH_UP_S
        while (bq_diffs := verify.verify_bigquery(cfg, 60)) and time.monotonic() < deadline:
            time.sleep(5)
        assert bq_diffs == [], f'{len(bq_diffs)} differences between BigQuery and SQL, e.g. {bq_diffs[:5]}'
    finally:
        pipeline.stop()
