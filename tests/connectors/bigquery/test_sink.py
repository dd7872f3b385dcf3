"""The BigQuery sink: rows, insertIds, rejected rows as dead letters, row sizing; then against the real local
emulators (bqemulator + gcp-storage-emulator) with Beam pipelines on Prism: duplicates land in the raw table and the
views show one row per key, a rejected row comes out as a dead letter with BigQuery's error text while the other
rows are written, file loads work too."""
from __future__ import annotations

import datetime
import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from connectors.bigquery import sink, tables
from schemas import DeadLetter
from tests.connectors.bigquery.support import enriched, query, run, stats
from tests.schemas.samples import DIRECT_EVENT

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)


def test_rows_hold_json_columns_as_text_and_timestamps_as_iso():
    row = sink.to_row(enriched(), tables.EVENTS_RAW.json_columns())
    assert json.loads(row['raw_payload']) == DIRECT_EVENT['raw_payload']
    assert row['event_ts'] == '2026-11-24T12:10:14.536825Z'
    assert sink.to_row({'raw_payload': '{"a":1}'}, ('raw_payload',)) == {'raw_payload': '{"a":1}'}


def test_insert_ids():
    assert sink.event_insert_id(sink.to_row(enriched(7))) == '7'
    assert sink.event_insert_id(sink.to_row(enriched(7, lsn=99))) == '7@99'  # a later CDC version is a new row
    first, again = (sink._stamp_written(stats()) for _ in range(2))
    assert sink.stats_insert_id(first) == sink.stats_insert_id(again)       # the same pane written twice
    assert sink.stats_insert_id(first).startswith('1795522200/a51d444e-e690-fb8c-ac33-cf8ddd89c590/0/')
    assert sink.stats_insert_id(first) != sink.stats_insert_id(sink._stamp_written(stats(events=4)))
    letter = DeadLetter(payload='x', stage='parse', reason='malformed_json', error='e', first_failed_ts=NOW,
                        last_failed_ts=NOW, source_topic='t', source_partition=0, source_offset=5)
    assert sink.dead_letter_insert_id(sink.to_row(letter)) == letter.idempotency_key()


def test_a_rejected_row_becomes_a_dead_letter_with_bigquerys_text():
    row = {**sink.to_row(enriched(12)), 'duration_ms': 'lots'}
    errors = [{'reason': 'invalid', 'location': 'duration_ms', 'debugInfo': '',
               'message': 'Cannot convert value to integer (bad value): lots'}]
    letter = sink.rejected_to_dead_letter('p:d.events_enriched_raw', row, errors, now=NOW)
    assert (letter.stage, letter.reason, letter.event_id) == ('bigquery', 'bigquery_rejected', 12)
    assert letter.error == ('events_enriched_raw: duration_ms: Cannot convert value to integer (bad value): lots '
                            '(invalid)')
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ('engagement.public.events', 2, 52)
    assert json.loads(letter.payload)['duration_ms'] == 'lots'
    junk = sink.rejected_to_dead_letter('t', {'id': 'x', 'source_offset': -1}, 'too big')
    assert junk.event_id is None and junk.source_offset is None and junk.error == 't: too big'


def test_storage_write_api_is_refused_against_an_emulator():
    with pytest.raises(ValueError, match='Storage Write API cannot run locally'):
        sink.WriteEventsToBigQuery('p', 'd', method='storage_write_api', endpoint='http://127.0.0.1:1')
    sink.WriteEventsToBigQuery('p', 'd', method='storage_write_api')  # real BigQuery: allowed (Dataflow)


def test_only_panes_of_ended_windows_go_to_bigquery_when_asked():
    import time as _time

    from connectors.bigquery.sink import _window_has_ended
    now = int(_time.time())
    assert _window_has_ended({'window_end': now - 1})
    assert not _window_has_ended({'window_end': now + 60})


def test_streaming_inserts_size_rows_by_their_json_and_reject_oversized_ones():
    from connectors.bigquery.sink import _JsonSizedBigQueryWriteFn
    fn = _JsonSizedBigQueryWriteFn(batch_size=10, max_insert_payload_size=100)
    size, error = fn._check_row_size(({'id': 1, 'title': 'x'}, '1'))
    assert (size, error) == (len('{"id": 1, "title": "x"}') + 1, None)
    size, error = fn._check_row_size(({'id': 1, 'title': 'x' * 200}, '1'))
    assert size > 100 and 'exceeds the maximum insert payload size' in error


def describe(letter: DeadLetter) -> tuple:
    return (letter.stage, letter.reason, letter.event_id, letter.source_offset,
            'Cannot convert value to integer' in letter.error)


@pytest.mark.integration
def test_streaming_inserts_duplicates_views_and_a_rejected_row(bigquery_emulators, bigquery_dataset):
    dataset = bigquery_dataset
    cfg = bigquery_emulators
    events = [enriched(1), enriched(1), enriched(2, lsn=5), enriched(2, lsn=7), enriched(3)]
    bad = {**sink.to_row(enriched(4)), 'duration_ms': 'lots'}     # what BigQuery cannot convert to INT64
    panes = [stats(events=2, pane_index=0), stats(events=5, pane_index=1)]
    kwargs = dict(endpoint=cfg.bq_endpoint, storage_endpoint=cfg.gcs_endpoint)
    def build(p):
        written = (p | 'Events' >> beam.Create(events + [bad])
                   | 'WriteEvents' >> sink.WriteEventsToBigQuery(cfg.bq_project, dataset, **kwargs))
        (p | 'Panes' >> beam.Create(panes[:1])
         | 'WriteFirstPane' >> sink.WriteStatsToBigQuery(cfg.bq_project, dataset, **kwargs))
        written.dead_letters | 'ToDeadLetterTable' >> sink.WriteDeadLettersToBigQuery(cfg.bq_project, dataset, **kwargs)
        assert_that(written.dead_letters | 'Describe' >> beam.Map(describe), equal_to([
            ('bigquery', 'bigquery_rejected', 4, 44, True)]))

    run(build)
    run(lambda p: p | beam.Create(panes[1:]) | sink.WriteStatsToBigQuery(cfg.bq_project, dataset, **kwargs))

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


@pytest.mark.integration
def test_file_loads_write_events_stats_and_dead_letters(bigquery_emulators, bigquery_dataset):
    dataset = bigquery_dataset
    cfg = bigquery_emulators
    kwargs = dict(method='file_loads', endpoint=cfg.bq_endpoint, storage_endpoint=cfg.gcs_endpoint,
                  temp_location=f'gs://{cfg.gcs_temp_bucket}/bigquery')
    now = datetime.datetime.now(datetime.timezone.utc)
    letter = DeadLetter(payload='{', stage='parse', reason='malformed_json', error='Expecting value',
                        first_failed_ts=now, last_failed_ts=now, source_topic='t', source_partition=0, source_offset=9)

    def build(p):
        (p | 'Events' >> beam.Create([enriched(10), enriched(10), enriched(11)])
         | 'WriteEvents' >> sink.WriteEventsToBigQuery(cfg.bq_project, dataset, **kwargs))
        (p | 'Panes' >> beam.Create([stats(events=9)])
         | 'WriteStats' >> sink.WriteStatsToBigQuery(cfg.bq_project, dataset, **kwargs))
        (p | 'Letters' >> beam.Create([letter])
         | 'WriteLetters' >> sink.WriteDeadLettersToBigQuery(cfg.bq_project, dataset, **kwargs))

    run(build)

    assert query(cfg, f'SELECT COUNT(*) AS n FROM {dataset}.events_enriched_raw') == [{'n': 3}]
    assert query(cfg, f'SELECT id FROM {dataset}.events_enriched ORDER BY id') == [{'id': 10}, {'id': 11}]
    assert query(cfg, f'SELECT events FROM {dataset}.content_minute_stats') == [{'events': 9}]
    assert query(cfg, f'SELECT reason, source_offset FROM {dataset}.dead_letter') == [
        {'reason': 'malformed_json', 'source_offset': 9}]
