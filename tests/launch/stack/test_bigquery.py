"""The stack's BigQuery and Storage emulator components: health rows, and data kept over a kill and restart."""
from __future__ import annotations

import pytest

from connectors.bigquery import clients, sink, tables
from launch.stack.bigquery import BigQuery, Storage
from launch.stack.stack import Stack
from tests.connectors.bigquery.support import enriched, query

pytestmark = pytest.mark.integration


def test_stack_components_report_health_and_keep_data_over_a_kill(bigquery_emulators, bigquery_dataset):
    dataset = bigquery_dataset
    cfg = bigquery_emulators
    client = clients.gcp_client(cfg.bq_project, cfg.bq_endpoint)
    assert client.insert_rows_json(f'{cfg.bq_project}.{dataset}.events_enriched_raw', [sink.to_row(
        enriched(20), tables.EVENTS_RAW.json_columns())]) == []
    stack = Stack(cfg)
    stack.kill('bigquery')
    stack.start('bigquery')

    rows = {check: (ok, detail) for check, ok, detail in BigQuery(cfg).health()}
    assert rows['process'][0] and rows[f'port {cfg.bq_port}'][0]
    assert 'events_enriched_raw=0 rows' in rows['dataset engagement'][1]          # the stack's own dataset
    assert query(cfg, f'SELECT id FROM {dataset}.events_enriched') == [{'id': 20}]
    storage_rows = {check: ok for check, ok, _ in Storage(cfg).health()}
    assert storage_rows[f'bucket {cfg.gcs_temp_bucket}']
