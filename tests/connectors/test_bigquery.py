"""The BigQuery sink against the real local emulators (bqemulator + gcp-storage-emulator, started through
launch.stack's components on free ports), with Beam pipelines on Prism: duplicates land in the raw table and the
views show one row per key; a row BigQuery rejects comes out as a dead letter with BigQuery's error text while the
other rows are written; partitioning and clustering are visible; file loads work too."""
from __future__ import annotations

import datetime
import itertools
import json
import os
import shutil
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from connectors import bigquery as bq
from launch.bigquery import table_info
from launch.stack import BigQuery, Stack, Storage
from schemas import DeadLetter
from tests.conftest import private_config
from tests.connectors.test_bigquery_units import enriched, stats

pytestmark = pytest.mark.integration
_DATASETS = itertools.count(1)


@pytest.fixture(scope='module')
def emulators():
    """Only the Storage and BigQuery components of a private stack; yields its StackConfig."""
    cfg = private_config()
    started = []
    try:
        for component in (Storage(cfg), BigQuery(cfg)):
            component.start()
            started.append(component)
        yield cfg
    finally:
        for component in reversed(started):
            component.stop()
        shutil.rmtree(cfg.state_dir, ignore_errors=True)


@pytest.fixture
def dataset(emulators):
    """A fresh dataset with the tables and views (ensure_tables), so tests do not see each other's rows."""
    name = f'test_{next(_DATASETS)}'
    bq.ensure_tables(emulators.bq_project, name, emulators.bq_endpoint)
    return name


def describe(letter: DeadLetter) -> tuple:
    return (letter.stage, letter.reason, letter.event_id, letter.source_offset,
            'Cannot convert value to integer' in letter.error)


def run(build) -> None:
    with beam.Pipeline(runner='PrismRunner', options=PipelineOptions([])) as p:
        build(p)


def query(cfg, sql: str) -> list[dict]:
    client = bq.gcp_client(cfg.bq_project, cfg.bq_endpoint)
    return [dict(row) for row in client.query(sql).result()]


def info(cfg, dataset: str, table: str) -> dict:
    return table_info(bq.gcp_client(cfg.bq_project, cfg.bq_endpoint), cfg.bq_project, dataset, table)


def info_command(cfg, dataset: str, table: str) -> dict:
    out = subprocess.run([sys.executable, '-m', 'launch.bigquery', 'info', table, '--json'],
                         env={**os.environ, **cfg.env(), 'ENGAGEMENT_BQ_DATASET': dataset},
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out)


def test_streaming_inserts_duplicates_views_and_a_rejected_row(emulators, dataset):
    cfg = emulators
    events = [enriched(1), enriched(1), enriched(2, lsn=5), enriched(2, lsn=7), enriched(3)]
    bad = {**bq.to_row(enriched(4)), 'duration_ms': 'lots'}     # what BigQuery cannot convert to INT64
    panes = [stats(events=2, pane_index=0), stats(events=5, pane_index=1)]
    kwargs = dict(endpoint=cfg.bq_endpoint, storage_endpoint=cfg.gcs_endpoint)
    def build(p):
        written = (p | 'Events' >> beam.Create(events + [bad])
                   | 'WriteEvents' >> bq.WriteEventsToBigQuery(cfg.bq_project, dataset, **kwargs))
        (p | 'Panes' >> beam.Create(panes[:1])
         | 'WriteFirstPane' >> bq.WriteStatsToBigQuery(cfg.bq_project, dataset, **kwargs))
        written.dead_letters | 'ToDeadLetterTable' >> bq.WriteDeadLettersToBigQuery(cfg.bq_project, dataset, **kwargs)
        assert_that(written.dead_letters | 'Describe' >> beam.Map(describe), equal_to([
            ('bigquery', 'bigquery_rejected', 4, 44, True)]))

    run(build)
    run(lambda p: p | beam.Create(panes[1:]) | bq.WriteStatsToBigQuery(cfg.bq_project, dataset, **kwargs))

    raw = query(cfg, f'SELECT id, source_lsn FROM {dataset}.events_enriched_raw ORDER BY id, source_lsn')
    assert [(r['id'], r['source_lsn']) for r in raw] == [(1, None), (1, None), (2, 5), (2, 7), (3, None)]
    view = query(cfg, f'SELECT id, source_lsn, raw_payload FROM {dataset}.events_enriched ORDER BY id')
    assert [(r['id'], r['source_lsn']) for r in view] == [(1, None), (2, 7), (3, None)]
    assert view[0]['raw_payload'] == enriched(1).raw_payload       # JSON column round trip

    stored = query(cfg, f'SELECT stage, reason, event_id, error, payload FROM {dataset}.dead_letter')
    assert [(r['stage'], r['reason'], r['event_id']) for r in stored] == [('bigquery', 'bigquery_rejected', 4)]
    assert stored[0]['error'].startswith('events_enriched_raw: ')
    assert 'Cannot convert value to integer' in stored[0]['error']           # BigQuery's own words
    assert json.loads(stored[0]['payload'])['duration_ms'] == 'lots'

    assert query(cfg, f'SELECT COUNT(*) AS n FROM {dataset}.content_minute_stats_raw') == [{'n': 2}]
    current = query(cfg, f'SELECT events, pane_index, window_start_ts FROM {dataset}.content_minute_stats')
    assert current == [{'events': 5, 'pane_index': 1,
                        'window_start_ts': datetime.datetime(2026, 11, 24, 12, 10, tzinfo=datetime.timezone.utc)}]


def test_table_metadata_shows_partitioning_and_clustering(emulators, dataset):
    events = info_command(emulators, dataset, 'events_enriched_raw')
    assert events['partitioning'] == {'type': 'DAY', 'field': 'event_ts'}
    assert events['clustering'] == ['user_id', 'content_type'] and events['rows'] == 0
    assert {'name': 'ingest_ts', 'type': 'TIMESTAMP', 'mode': 'NULLABLE'} in events['schema']
    stats_table = info(emulators, dataset, 'content_minute_stats_raw')
    assert stats_table['partitioning'] == {'type': 'DAY', 'field': 'window_start_ts'}
    assert info(emulators, dataset, 'dead_letter')['partitioning'] == {'type': 'DAY', 'field': 'first_failed_ts'}
    assert info(emulators, dataset, 'events_enriched')['type'] == 'VIEW'


def test_file_loads_write_events_stats_and_dead_letters(emulators, dataset):
    cfg = emulators
    kwargs = dict(method='file_loads', endpoint=cfg.bq_endpoint, storage_endpoint=cfg.gcs_endpoint,
                  temp_location=f'gs://{cfg.gcs_temp_bucket}/bigquery')
    now = datetime.datetime.now(datetime.timezone.utc)
    letter = DeadLetter(payload='{', stage='parse', reason='malformed_json', error='Expecting value',
                        first_failed_ts=now, last_failed_ts=now, source_topic='t', source_partition=0, source_offset=9)

    def build(p):
        (p | 'Events' >> beam.Create([enriched(10), enriched(10), enriched(11)])
         | 'WriteEvents' >> bq.WriteEventsToBigQuery(cfg.bq_project, dataset, **kwargs))
        (p | 'Panes' >> beam.Create([stats(events=9)])
         | 'WriteStats' >> bq.WriteStatsToBigQuery(cfg.bq_project, dataset, **kwargs))
        (p | 'Letters' >> beam.Create([letter])
         | 'WriteLetters' >> bq.WriteDeadLettersToBigQuery(cfg.bq_project, dataset, **kwargs))

    run(build)

    assert query(cfg, f'SELECT COUNT(*) AS n FROM {dataset}.events_enriched_raw') == [{'n': 3}]
    assert query(cfg, f'SELECT id FROM {dataset}.events_enriched ORDER BY id') == [{'id': 10}, {'id': 11}]
    assert query(cfg, f'SELECT events FROM {dataset}.content_minute_stats') == [{'events': 9}]
    assert query(cfg, f'SELECT reason, source_offset FROM {dataset}.dead_letter') == [
        {'reason': 'malformed_json', 'source_offset': 9}]
    assert info(cfg, dataset, 'events_enriched_raw')['partitioning'] == {'type': 'DAY', 'field': 'event_ts'}


def test_stack_components_report_health_and_keep_data_over_a_kill(emulators, dataset):
    cfg = emulators
    client = bq.gcp_client(cfg.bq_project, cfg.bq_endpoint)
    assert client.insert_rows_json(f'{cfg.bq_project}.{dataset}.events_enriched_raw', [bq.to_row(
        enriched(20), bq.EVENTS_RAW.json_columns())]) == []
    stack = Stack(cfg)
    stack.kill('bigquery')
    stack.start('bigquery')

    rows = {check: (ok, detail) for check, ok, detail in BigQuery(cfg).health()}
    assert rows['process'][0] and rows[f'port {cfg.bq_port}'][0]
    assert 'events_enriched_raw=0 rows' in rows['dataset engagement'][1]          # the stack's own dataset
    assert query(cfg, f'SELECT id FROM {dataset}.events_enriched') == [{'id': 20}]
    storage_rows = {check: ok for check, ok, _ in Storage(cfg).health()}
    assert storage_rows[f'bucket {cfg.gcs_temp_bucket}']


def test_a_table_of_an_older_schema_gains_the_new_nullable_columns(emulators):
    from google.cloud import bigquery
    client = bq.gcp_client(emulators.bq_project, emulators.bq_endpoint)
    name = f'test_{next(_DATASETS)}'
    client.create_dataset(f'{emulators.bq_project}.{name}')
    older = [f for f in bq._schema(bq.DEAD_LETTERS) if f.name not in ('original_size_bytes', 'original_sha256')]
    client.create_table(bigquery.Table(f'{emulators.bq_project}.{name}.dead_letter', schema=older))

    done = bq.ensure_tables(emulators.bq_project, name, emulators.bq_endpoint)

    assert 'table dead_letter: exists; added original_size_bytes, original_sha256' in done
    columns = [f.name for f in client.get_table(f'{emulators.bq_project}.{name}.dead_letter').schema]
    assert columns[-2:] == ['original_size_bytes', 'original_sha256'] and len(columns) == len(older) + 2
    assert bq.ensure_tables(emulators.bq_project, name, emulators.bq_endpoint).count('table dead_letter: exists') == 1
