"""The dead-letter console re-drives enrich failures once their cause is fixed, each event counted exactly once.

Direct events for a content the catalogue does not hold yet go to the dead letters as `unknown_content`, every one
twice (a producer that retried: the same event id at two offsets). The content is then added to Postgres and
`python -m launch.dead_letters redrive --stage enrich` sends each event once to the raw topic: the window of that
content counts each event once. A second run sends nothing (its consumer group remembers where it ended), and a run
from the beginning sends them all again, which changes no count (the windows deduplicate by event id)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import psycopg2
import pytest
from kafka import KafkaProducer

from launch.scenarios import verify
from launch.tools.dead_letters import distinct_failures, read_dead_letters
from tests.e2e.conftest import Pipeline, wait_for

pytestmark = pytest.mark.integration
EVENTS = 20


def redrive(cfg, *flags: str, stage: str = 'enrich') -> list[str]:
    done = subprocess.run([sys.executable, '-m', 'launch.dead_letters', 'redrive', '--stage', stage, *flags],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **cfg.env()})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def sent(report: list[str], what: str = 'sent to') -> int:
    return int(next(line for line in report if what in line).split()[0])


def test_redriven_enrich_failures_count_once_after_the_content_is_added(e2e_stack):
    cfg = e2e_stack.cfg
    content_id = str(uuid.uuid4())
    base_id = 8_000_000_000_000_000_000 + int(time.time() * 1000) % 10**12 * 1000
    now = datetime.now(timezone.utc)
    events = [{'id': base_id + i, 'content_id': content_id, 'user_id': str(uuid.uuid4()), 'event_type': 'play',
               'event_ts': now.isoformat(), 'duration_ms': 1000, 'device': 'web', 'raw_payload': {}}
              for i in range(EVENTS)]
    pipeline = Pipeline(cfg, '--api_url=', '--bq_enabled=false', name='redrive')
    pipeline.start()
    try:
        producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks='all')
        for _ in range(2):
            for event in events:
                producer.send(cfg.raw_topic, key=str(event['id']).encode(), value=json.dumps(event).encode())
        producer.flush()
        producer.close()

        def unknown():
            assert pipeline.alive(), f'pipeline exited; see {pipeline.log}'
            return sum(1 for *_, record in distinct_failures(read_dead_letters(cfg.kafka_bootstrap,
                                                                               cfg.dead_letter_topic))
                       if record.get('reason') == 'unknown_content' and record.get('event_id', 0) >= base_id)
        assert wait_for(lambda: unknown() == 2 * EVENTS, 180, 2), f'{unknown()} dead letters; see {pipeline.log}'

        with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO content VALUES (%s, %s, 'Added after the fact', 'video', 600, now())",
                        (content_id, f'added-{content_id[:8]}'))
        time.sleep(11)  # the pipeline's catalogue refresh (--content_refresh_seconds=10): the fix is live
        # only this content's failures (other tests' unknown contents share the topic), in a group of its own
        select = ('--content-id', content_id, '--group', f'redrive-test-{content_id[:8]}')
        first = redrive(cfg, *select)
        assert sent(first) == EVENTS, first

        window = int(now.timestamp()) // 60 * 60
        def counted() -> int | None:
            stats = verify.redis_state(cfg.redis_url, 'engagement', window, cfg.redis_credentials())[0]
            return int(stats.get((window, content_id), {}).get('events', 0))
        assert wait_for(lambda: counted() == EVENTS, 120, 1), f'{counted()} counted; see {pipeline.log}'

        assert sent(redrive(cfg, *select)) == 0  # the group remembers where the last run ended
        assert sent(redrive(cfg, *select, '--from-beginning')) == EVENTS
        time.sleep(8)  # the re-sent events pass the windows again ...
        assert counted() == EVENTS  # ... and count once
    finally:
        pipeline.stop()


def test_a_row_bigquery_refused_is_redriven_to_its_table_once(e2e_stack):
    """A `bigquery` dead letter (as the sink writes one for a row BigQuery rejected) is inserted again into the table
    its error names once the cause is fixed; a second re-drive from the beginning leaves one row of the event in
    the deduplicated view."""
    from connectors.bigquery.clients import gcp_client
    from connectors.bigquery.sink import rejected_to_dead_letter, to_row
    from connectors.bigquery.tables import EVENTS_RAW
    from schemas.events import EnrichedEvent
    cfg = e2e_stack.cfg
    event_id = 9_000_000_000_000_000_000 + int(time.time() * 1000) % 10**12
    event = EnrichedEvent(id=event_id, content_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()), event_type='play',
                          event_ts=datetime.now(timezone.utc), duration_ms=1000, device='web', raw_payload={'a': 1},
                          source='direct', content_title='T', content_type='video', length_seconds=100,
                          engagement_seconds=1.0, engagement_percentage=1.0)
    row = to_row(event, EVENTS_RAW.json_columns())
    letter = rejected_to_dead_letter(f'{cfg.bq_project}.{cfg.bq_dataset}.events_enriched_raw', row,
                                     [{'message': 'a field the table did not have yet', 'reason': 'invalid'}])
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks='all')
    producer.send(cfg.dead_letter_topic, key=str(event_id).encode(), value=letter.to_json().encode())
    producer.flush()
    producer.close()

    def in_view() -> int:
        client = gcp_client(cfg.bq_project, cfg.bq_endpoint)
        return list(client.query(f'SELECT COUNT(*) AS n FROM `{cfg.bq_project}.{cfg.bq_dataset}.events_enriched` '
                                 f'WHERE id = {event_id}').result())[0]['n']
    assert in_view() == 0
    report = redrive(cfg, '--group', 'redrive-bq-test', stage='bigquery')
    assert sent(report, 'sent to BigQuery') >= 1, report  # (other tests' BigQuery dead letters may share the topic)
    assert in_view() == 1
    redrive(cfg, '--group', 'redrive-bq-test', '--from-beginning', stage='bigquery')
    assert in_view() == 1
