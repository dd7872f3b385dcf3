"""BigQuery sink without a server: tables follow the models, views pick one row per key, insertIds, rejected rows
as dead letters, options. The emulator runs in test_bigquery.py."""
import datetime
import json
import pickle

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from connectors import bigquery as bq
from pipelines.options import EngagementOptions, InvalidOption
from schemas import ContentWindowStats, ContentWindowStatsRow, DeadLetter, EnrichedEvent, bigquery_fields
from tests.schemas.samples import DIRECT_EVENT

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)


def enriched(event_id=1, lsn=None, **changes):
    return EnrichedEvent(**{**DIRECT_EVENT, 'id': event_id}, source='cdc', source_topic='engagement.public.events',
                         source_partition=2, source_offset=40 + event_id, source_lsn=lsn,
                         ingest_ts='2026-11-24T12:10:15+00:00', content_title='Privacy #12', content_type='podcast',
                         length_seconds=1464, engagement_seconds=369.895, engagement_percentage=25.27, **changes)


def stats(events=3, pane_index=0):
    return ContentWindowStats(window_start=1795522200, window_end=1795522260,
                              content_id='a51d444e-e690-fb8c-ac33-cf8ddd89c590', content_type='podcast', title='t',
                              events=events, play=events, pause=0, finish=0, click=0, engagement_ms=1500,
                              pane_index=pane_index)


def columns(spec):
    return {f['name']: f for f in spec.fields()}


def test_tables_are_the_models_columns():
    assert bq.EVENTS_RAW.fields() == bigquery_fields(EnrichedEvent)
    assert bq.STATS_RAW.fields() == bigquery_fields(ContentWindowStatsRow)
    assert bq.DEAD_LETTERS.fields() == bigquery_fields(DeadLetter)
    events = columns(bq.EVENTS_RAW)
    for name in ('ingest_ts', 'source_topic', 'source_partition', 'source_offset', 'source_lsn', 'content_type'):
        assert name in events
    assert 'watermark_ms' not in events                                    # run-time state, not a column
    assert bigquery_fields(ContentWindowStats) == [c for c in bq.STATS_RAW.fields()
                                                   if c['name'] not in ('written_ts', 'window_start_ts')]
    assert {'written_ts', 'window_start_ts'} <= set(columns(bq.STATS_RAW))


@pytest.mark.parametrize('spec, partition, clustering', [
    (bq.EVENTS_RAW, 'event_ts', ('user_id', 'content_type')),
    (bq.STATS_RAW, 'window_start_ts', ('content_type', 'content_id')),
    (bq.DEAD_LETTERS, 'first_failed_ts', ('stage', 'reason')),
])
def test_partitioning_and_clustering_columns_exist_with_the_right_types(spec, partition, clustering):
    cols = columns(spec)
    assert spec.partition_field == partition and cols[partition]['type'] == 'TIMESTAMP'
    assert spec.clustering == clustering and all(cols[c]['type'] == 'STRING' for c in clustering)


def test_views_pick_the_newest_version_per_key():
    events = bq.EVENTS_VIEW.sql('p', 'd')
    assert 'FROM `p.d.events_enriched_raw`' in events
    assert 'PARTITION BY id ORDER BY source_lsn DESC NULLS LAST, ingest_ts DESC NULLS LAST' in events
    assert events.endswith('WHERE _version = 1') and 'EXCEPT (_version)' in events
    assert 'PARTITION BY content_id, window_start ORDER BY written_ts DESC' in bq.STATS_VIEW.sql('p', 'd')


def test_rows_hold_json_columns_as_text_and_timestamps_as_iso():
    row = bq.to_row(enriched(), bq.EVENTS_RAW.json_columns())
    assert json.loads(row['raw_payload']) == DIRECT_EVENT['raw_payload']
    assert row['event_ts'] == '2026-11-24T12:10:14.536825Z'
    assert bq.to_row({'raw_payload': '{"a":1}'}, ('raw_payload',)) == {'raw_payload': '{"a":1}'}


def test_insert_ids():
    assert bq.event_insert_id(bq.to_row(enriched(7))) == '7'
    assert bq.event_insert_id(bq.to_row(enriched(7, lsn=99))) == '7@99'  # a later CDC version is a new row
    first, again = (bq._stamp_written(stats()) for _ in range(2))
    assert bq.stats_insert_id(first) == bq.stats_insert_id(again)       # the same pane written twice
    assert bq.stats_insert_id(first).startswith('1795522200/a51d444e-e690-fb8c-ac33-cf8ddd89c590/0/')
    assert bq.stats_insert_id(first) != bq.stats_insert_id(bq._stamp_written(stats(events=4)))
    letter = DeadLetter(payload='x', stage='parse', reason='malformed_json', error='e', first_failed_ts=NOW,
                        last_failed_ts=NOW, source_topic='t', source_partition=0, source_offset=5)
    assert bq.dead_letter_insert_id(bq.to_row(letter)) == letter.idempotency_key()


def test_a_rejected_row_becomes_a_dead_letter_with_bigquerys_text():
    row = {**bq.to_row(enriched(12)), 'duration_ms': 'lots'}
    errors = [{'reason': 'invalid', 'location': 'duration_ms', 'debugInfo': '',
               'message': 'Cannot convert value to integer (bad value): lots'}]
    letter = bq.rejected_to_dead_letter('p:d.events_enriched_raw', row, errors, now=NOW)
    assert (letter.stage, letter.reason, letter.event_id) == ('bigquery', 'bigquery_rejected', 12)
    assert letter.error == ('events_enriched_raw: duration_ms: Cannot convert value to integer (bad value): lots '
                            '(invalid)')
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ('engagement.public.events', 2, 52)
    assert json.loads(letter.payload)['duration_ms'] == 'lots'
    junk = bq.rejected_to_dead_letter('t', {'id': 'x', 'source_offset': -1}, 'too big')
    assert junk.event_id is None and junk.source_offset is None and junk.error == 't: too big'


def test_storage_write_api_is_refused_against_an_emulator():
    with pytest.raises(ValueError, match='Storage Write API cannot run locally'):
        bq.WriteEventsToBigQuery('p', 'd', method='storage_write_api', endpoint='http://127.0.0.1:1')
    bq.WriteEventsToBigQuery('p', 'd', method='storage_write_api')  # real BigQuery: allowed (Dataflow)


def test_emulator_client_pickles_as_its_addresses():
    client = bq.EmulatorClient('http://127.0.0.1:1/', 'p', 'http://127.0.0.1:2')
    copy = pickle.loads(pickle.dumps(client))
    assert (copy.endpoint, copy.project, copy.storage_endpoint) == ('http://127.0.0.1:1', 'p', 'http://127.0.0.1:2')
    assert copy._v2 is None and copy.test_clock() > 0


def options(*argv):
    return PipelineOptions(list(argv)).view_as(EngagementOptions)


@pytest.mark.parametrize('argv, message', [
    (['--bq_write_method=storage_write_api'], 'the Storage Write API cannot run locally'),
    (['--bq_write_method=merge'], 'expected one of streaming_inserts, file_loads, storage_write_api'),
    (['--bq_enabled=maybe'], "--bq_enabled='maybe': expected true or false"),
    (['--bq_dataset=my-data'], "--bq_dataset='my-data': expected a dataset name"),
    (['--bq_endpoint=localhost:9050'], "--bq_endpoint='localhost:9050': expected an http:// or https:// URL"),
    (['--bq_write_method=file_loads', '--bq_temp_location=/tmp/x'], "--bq_temp_location='/tmp/x': expected a gs://"),
])
def test_bigquery_options_are_validated(argv, message):
    with pytest.raises(InvalidOption, match=message.replace('(', r'\(').replace(')', r'\)')):
        options(*argv).validate()


def test_bigquery_options_defaults_and_switch():
    o = options('--bq_write_method=file_loads').validate()
    assert o.bigquery_enabled and o.bq_temp_location == 'gs://engagement-temp/bigquery'
    assert bq.write_kwargs(o)['temp_location'] == 'gs://engagement-temp/bigquery'
    assert options('--bq_endpoint=', '--bq_write_method=storage_write_api').validate().bq_endpoint == ''
    assert options('--bq_enabled=false', '--bq_write_method=nonsense').validate().bigquery_enabled is False


def test_only_panes_of_ended_windows_go_to_bigquery_when_asked():
    import time as _time

    from connectors.bigquery import _window_has_ended
    now = int(_time.time())
    assert _window_has_ended({'window_end': now - 1})
    assert not _window_has_ended({'window_end': now + 60})


def test_streaming_inserts_size_rows_by_their_json_and_reject_oversized_ones():
    from connectors.bigquery import _JsonSizedBigQueryWriteFn
    fn = _JsonSizedBigQueryWriteFn(batch_size=10, max_insert_payload_size=100)
    size, error = fn._check_row_size(({'id': 1, 'title': 'x'}, '1'))
    assert (size, error) == (len('{"id": 1, "title": "x"}') + 1, None)
    size, error = fn._check_row_size(({'id': 1, 'title': 'x' * 200}, '1'))
    assert size > 100 and 'exceeds the maximum insert payload size' in error
