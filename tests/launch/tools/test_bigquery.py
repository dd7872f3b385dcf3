"""`python -m launch.tools.bigquery info`: partitioning, clustering, schema and kind of the tables and views, read
from the local BigQuery emulator."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from connectors.bigquery import clients
from launch.tools.bigquery import table_info

pytestmark = pytest.mark.integration


def info(cfg, dataset: str, table: str) -> dict:
    return table_info(clients.gcp_client(cfg.bq_project, cfg.bq_endpoint), cfg.bq_project, dataset, table)


def info_command(cfg, dataset: str, table: str) -> dict:
    out = subprocess.run([sys.executable, '-m', 'launch.tools.bigquery', 'info', table, '--json'],
                         env={**os.environ, **cfg.env(), 'ENGAGEMENT_BQ_DATASET': dataset},
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out)


def test_table_metadata_shows_partitioning_and_clustering(bigquery_emulators, bigquery_dataset):
    dataset = bigquery_dataset
    events = info_command(bigquery_emulators, dataset, 'events_enriched_raw')
    assert events['partitioning'] == {'type': 'DAY', 'field': 'event_ts'}
    assert events['clustering'] == ['user_id', 'content_type'] and events['rows'] == 0
    assert {'name': 'ingest_ts', 'type': 'TIMESTAMP', 'mode': 'NULLABLE'} in events['schema']
    stats_table = info(bigquery_emulators, dataset, 'content_minute_stats_raw')
    assert stats_table['partitioning'] == {'type': 'DAY', 'field': 'window_start_ts'}
    letters = info(bigquery_emulators, dataset, 'dead_letter')
    assert letters['partitioning'] == {'type': 'DAY', 'field': 'first_failed_ts'}
    assert info(bigquery_emulators, dataset, 'events_enriched')['type'] == 'VIEW'
