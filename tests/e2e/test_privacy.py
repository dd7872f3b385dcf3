"""Privacy on the real stack: with `--pseudonymize_user_ids`, BigQuery and the REST API receiver hold the keyed
pseudonym of every user id, never the id; `launch.tools.erase_user` then deletes one user's rows from BigQuery
and reports the rest; the key appears in no log or output."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import psycopg2
import pytest
import redis

from connectors.bigquery.clients import gcp_client
from launch.scenarios import generate
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline, wait_for
from transforms.privacy import KEY_ENV, pseudonym

pytestmark = pytest.mark.integration
KEY = 'a-test-pseudonymisation-key-0123456789'


def bigquery_users(cfg) -> dict[int, list[str]]:
    client = gcp_client(cfg.bq_project, cfg.bq_endpoint)
    rows = client.query(f'SELECT id, user_id FROM `{cfg.bq_project}.{cfg.bq_dataset}.events_enriched_raw`').result()
    found: dict[int, list[str]] = {}
    for row in rows:
        found.setdefault(row['id'], []).append(row['user_id'])
    return found


def test_only_pseudonyms_leave_the_pipeline_and_one_user_can_be_erased():
    with private_stack() as stack:
        cfg = stack.cfg
        pipeline = Pipeline(cfg, '--pseudonymize_user_ids', '--user_recent_contents=3', name='private',
                            env={KEY_ENV: KEY})
        client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
        pipeline.start()
        try:
            generate.main(['--rate', '100', '--duration', '4', '--seed', '31', *cfg.cli_flags()])
            with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
                cur.execute('SELECT id, user_id::text FROM engagement_events')
                truth = dict(cur.fetchall())
            assert len(truth) >= 300
            assert wait_for(lambda: set(bigquery_users(cfg)) >= set(truth), 180, 2), f'see {pipeline.log}'
            stored = bigquery_users(cfg)
            assert all(users == [pseudonym(truth[i], KEY.encode())] * len(users) for i, users in stored.items())
            api = sqlite3.connect(cfg.component_dir('api') / 'receiver.sqlite')
            assert wait_for(lambda: api.execute('SELECT count(*) FROM events').fetchone()[0] >= len(truth), 120, 2)
            sent = {json.loads(body)['id']: json.loads(body)['user_id']
                    for (body,) in api.execute('SELECT event FROM events')}
            assert sent == {i: pseudonym(u, KEY.encode()) for i, u in truth.items()}
            api.close()
            users = {key.split(':')[2] for key in client.scan_iter('engagement:user:*')}
            assert users == {pseudonym(u, KEY.encode()) for u in truth.values()}  # the per-user keys: pseudonyms
        finally:
            pipeline.stop()

        victim = truth[min(truth)]
        theirs = sum(len(users) for i, users in stored.items() if truth[i] == victim)
        done = subprocess.run([sys.executable, '-m', 'launch.tools.erase_user', '--user-id', victim],
                              capture_output=True, text=True, timeout=180,
                              env={**os.environ, **cfg.env(), KEY_ENV: KEY})
        assert done.returncode == 0, done.stderr
        assert f'events_enriched_raw: {theirs} rows deleted' in done.stdout, done.stdout
        assert f'pseudonym {pseudonym(victim, KEY.encode())}' in done.stdout
        assert 'Redis engagement:user:*: 3 per-user keys deleted' in done.stdout, done.stdout
        assert not list(client.scan_iter(f'engagement:user:{pseudonym(victim, KEY.encode())}:*'))
        assert len({key.split(':')[2] for key in client.scan_iter('engagement:user:*')}) == len(users) - 1
        left = bigquery_users(cfg)
        assert not any(truth[i] == victim for i in left)
        assert set(left) == {i for i in stored if truth[i] != victim}
        for text in (done.stdout, done.stderr, pipeline.log.read_text()):
            assert KEY not in text
