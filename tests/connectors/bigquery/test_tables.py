"""The warehouse: tables follow the models, partitioning and clustering, views pick one row per key; against the
emulator, a table of an older schema gains the new nullable columns."""
from __future__ import annotations

import pytest

from connectors.bigquery import clients, tables
from schemas import ContentWindowStats, ContentWindowStatsRow, DeadLetter, EnrichedEvent, bigquery_fields
from tests.conftest import new_dataset_name


def columns(spec):
    return {f['name']: f for f in spec.fields()}


def test_tables_are_the_models_columns():
    assert tables.EVENTS_RAW.fields() == bigquery_fields(EnrichedEvent)
    assert tables.STATS_RAW.fields() == bigquery_fields(ContentWindowStatsRow)
    assert tables.DEAD_LETTERS.fields() == bigquery_fields(DeadLetter)
    events = columns(tables.EVENTS_RAW)
    for name in ('ingest_ts', 'source_topic', 'source_partition', 'source_offset', 'source_lsn', 'content_type'):
        assert name in events
    assert 'watermark_ms' not in events                                    # run-time state, not a column
    assert bigquery_fields(ContentWindowStats) == [c for c in tables.STATS_RAW.fields()
                                                   if c['name'] not in ('written_ts', 'window_start_ts')]
    assert {'written_ts', 'window_start_ts'} <= set(columns(tables.STATS_RAW))


@pytest.mark.parametrize('spec, partition, clustering', [
    (tables.EVENTS_RAW, 'event_ts', ('user_id', 'content_type')),
    (tables.STATS_RAW, 'window_start_ts', ('content_type', 'content_id')),
    (tables.DEAD_LETTERS, 'first_failed_ts', ('stage', 'reason')),
])
def test_partitioning_and_clustering_columns_exist_with_the_right_types(spec, partition, clustering):
    cols = columns(spec)
    assert spec.partition_field == partition and cols[partition]['type'] == 'TIMESTAMP'
    assert spec.clustering == clustering and all(cols[c]['type'] == 'STRING' for c in clustering)


def test_views_pick_the_newest_version_per_key():
    events = tables.EVENTS_VIEW.sql('p', 'd')
    assert 'FROM `p.d.events_enriched_raw`' in events
    assert 'PARTITION BY id ORDER BY source_lsn DESC NULLS LAST, ingest_ts DESC NULLS LAST' in events
    assert events.endswith('WHERE _version = 1') and 'EXCEPT (_version)' in events
    stats = tables.STATS_VIEW.sql('p', 'd')
    assert 'PARTITION BY content_id, window_start ORDER BY events DESC, written_ts DESC' in stats


@pytest.mark.integration
def test_a_table_of_an_older_schema_gains_the_new_nullable_columns(bigquery_emulators):
    cfg = bigquery_emulators
    from google.cloud import bigquery
    client = clients.gcp_client(cfg.bq_project, cfg.bq_endpoint)
    name = new_dataset_name()
    client.create_dataset(f'{cfg.bq_project}.{name}')
    older = [f for f in tables._schema(tables.DEAD_LETTERS) if f.name not in ('original_size_bytes', 'original_sha256')]
    client.create_table(bigquery.Table(f'{cfg.bq_project}.{name}.dead_letter', schema=older))

    done = tables.ensure_tables(cfg.bq_project, name, cfg.bq_endpoint)

    assert 'table dead_letter: exists; added original_size_bytes, original_sha256' in done
    columns = [f.name for f in client.get_table(f'{cfg.bq_project}.{name}.dead_letter').schema]
    assert columns[-2:] == ['original_size_bytes', 'original_sha256'] and len(columns) == len(older) + 2
    assert tables.ensure_tables(cfg.bq_project, name, cfg.bq_endpoint).count('table dead_letter: exists') == 1
