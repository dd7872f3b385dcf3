"""The models accept the real wire formats and reject values that only look right."""
import json
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from schemas import CdcEngagementRow, Content, ContentWindowStats, DebeziumEnvelope, DirectEvent
from tests.schemas import samples


def test_debezium_event_envelope_parses_jsonb_twice_and_timestamps_as_utc():
    envelope = DebeziumEnvelope[CdcEngagementRow].model_validate_json(samples.CDC_EVENT_VALUE)

    row = envelope.after
    assert envelope.op == 'c' and envelope.source.lsn == 26621312 and envelope.source.table == 'engagement_events'
    assert row.id == 1 and row.duration_ms == 660295 and row.device == 'web'
    assert row.raw_payload == {'referrer': 'push', 'session_id': 's-b84d86402e10', 'app_version': '6.0.0-beta'}
    assert row.event_ts == datetime(2026, 11, 24, 12, 10, 12, 509201, tzinfo=timezone.utc)


def test_debezium_content_envelope_gives_a_content():
    envelope = DebeziumEnvelope[Content].model_validate_json(samples.content_envelope())

    assert envelope.after.title == 'A Short History Of Privacy #12'
    assert envelope.after.length_seconds == 1464
    assert envelope.after.publish_ts == datetime(2026, 1, 4, 12, tzinfo=timezone.utc)


def test_direct_event_normalises_offsets_to_utc_and_uuids_to_lower_case():
    event = DirectEvent.model_validate({**samples.DIRECT_EVENT, 'event_ts': '2026-11-24T14:10:14.536825+02:00',
                                        'user_id': samples.DIRECT_EVENT['user_id'].upper()})

    assert event.event_ts == datetime(2026, 11, 24, 12, 10, 14, 536825, tzinfo=timezone.utc)
    assert event.event_ts.utcoffset().total_seconds() == 0
    assert event.user_id == 'b9e9f0e5-0d4a-5be2-ba97-637d2f1f1fd7'


def test_direct_event_ignores_unknown_fields():
    event = DirectEvent.model_validate_json(json.dumps({**samples.DIRECT_EVENT, 'experiment': 'b'}))

    assert event.id == samples.DIRECT_EVENT['id']
    assert 'experiment' not in event.model_dump()


@pytest.mark.parametrize('text, utc', [
    ('2026-11-24T12:10:14.536825+00:00', datetime(2026, 11, 24, 12, 10, 14, 536825, tzinfo=timezone.utc)),
    ('2026-11-24T12:10:14Z', datetime(2026, 11, 24, 12, 10, 14, tzinfo=timezone.utc)),
    ('2026-11-24t12:10:14z', datetime(2026, 11, 24, 12, 10, 14, tzinfo=timezone.utc)),
    ('2026-11-24 13:10:14+0100', datetime(2026, 11, 24, 12, 10, 14, tzinfo=timezone.utc)),
    ('2026-11-24T12:10-00:30', datetime(2026, 11, 24, 12, 40, tzinfo=timezone.utc)),
    ('2026-11-24T12:10:14.123456789Z', datetime(2026, 11, 24, 12, 10, 14, 123456, tzinfo=timezone.utc)),
    ('1970-01-01T00:00:00Z', datetime(1970, 1, 1, tzinfo=timezone.utc)),
    ('9999-12-31T23:59:59.999999+00:00', datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)),
])
def test_event_ts_accepts_rfc3339_with_a_zone(text, utc):
    assert DirectEvent.model_validate({**samples.DIRECT_EVENT, 'event_ts': text}).event_ts == utc


@pytest.mark.parametrize('field, value, error_type', [
    ('duration_ms', 'twelve seconds', 'int_type'),
    ('duration_ms', '12', 'int_type'),                  # a numeric string is still not a number
    ('duration_ms', 12.5, 'int_type'),
    ('duration_ms', -1, 'greater_than_equal'),
    ('event_ts', 'yesterday', 'datetime_parsing'),
    ('event_ts', '1795522212', 'datetime_parsing'),       # nor a string of digits (seconds, ms, float forms)
    ('event_ts', '1795522212000', 'datetime_parsing'),
    ('event_ts', '1795522212.5', 'datetime_parsing'),
    ('event_ts', '2026-11-24', 'datetime_parsing'),        # a date alone is no instant
    ('event_ts', '2026-11-24T12:10:14+01', 'datetime_parsing'),
    ('event_ts', '9999-12-31T23:00:00-14:00', 'timestamp_out_of_range'),  # no UTC instant (year 10000)
    ('event_ts', '0001-01-01T01:00:00+14:00', 'timestamp_out_of_range'),  # no UTC instant (year 0)
    ('event_ts', '1969-12-31T23:59:59Z', 'timestamp_out_of_range'),       # before the epoch
    ('event_ts', 1795522212, 'datetime_type'),          # pydantic would read a number as Unix seconds
    ('event_ts', '2026-11-24T12:10:14', 'timezone_aware'),
    ('event_type', 42, 'literal_error'),
    ('event_type', 'share', 'literal_error'),
    ('user_id', 'not-a-uuid', 'uuid_parsing'),
    ('content_id', 7, 'string_type'),
    ('id', True, 'int_type'),
    ('id', '1795522214408970001', 'int_type'),
])
def test_direct_event_rejects_values_that_only_look_right(field, value, error_type):
    with pytest.raises(ValidationError) as raised:
        DirectEvent.model_validate_json(json.dumps({**samples.DIRECT_EVENT, field: value}))

    assert [(e['loc'], e['type']) for e in raised.value.errors()] == [((field,), error_type)]


@pytest.mark.parametrize('field', ['id', 'content_id', 'user_id', 'event_type', 'event_ts'])
def test_direct_event_requires_identity_and_time_fields(field):
    record = dict(samples.DIRECT_EVENT)
    del record[field]

    with pytest.raises(ValidationError) as raised:
        DirectEvent.model_validate_json(json.dumps(record))

    assert [(e['loc'], e['type']) for e in raised.value.errors()] == [((field,), 'missing')]


def test_direct_event_optional_fields_may_be_absent():
    required = {k: samples.DIRECT_EVENT[k] for k in ('id', 'content_id', 'user_id', 'event_type', 'event_ts')}

    event = DirectEvent.model_validate_json(json.dumps(required))

    assert (event.duration_ms, event.device, event.raw_payload) == (None, None, None)


def test_window_stats_engagement_seconds_is_exact_and_survives_a_round_trip():
    stats = ContentWindowStats(window_start=1795522200, window_end=1795522260, content_id=samples.CONTENT_AFTER['id'],
                               content_type='podcast', title='t', events=3, play=2, pause=0, finish=0, click=1,
                               engagement_ms=1_234_567)

    row = json.loads(stats.model_dump_json())

    assert row['engagement_seconds'] == 1234.567
    assert ContentWindowStats.model_validate(row) == stats


def test_trusted_construction_builds_the_same_event_as_validation():
    from schemas import IngestedEvent
    from schemas.trusted import trusted
    row = DirectEvent.model_validate(samples.DIRECT_EVENT)
    extra = dict(source='direct', source_topic='t', source_partition=0, source_offset=5, source_lsn=None,
                 ingest_ts=datetime(2026, 11, 24, 12, 10, 15, tzinfo=timezone.utc), watermark_ms=1795522213000)

    fast = trusted(IngestedEvent, {**row.__dict__, **extra})

    assert fast == IngestedEvent(**row.__dict__, **extra)
    assert fast.model_dump_json() == IngestedEvent(**row.__dict__, **extra).model_dump_json()


def test_the_reader_watermark_is_run_time_state_not_part_of_the_event():
    from schemas import EnrichedEvent, IngestedEvent, bigquery_fields
    event = IngestedEvent(**DirectEvent.model_validate(samples.DIRECT_EVENT).__dict__, source='direct',
                          watermark_ms=1795522213000)

    assert event.watermark_ms == 1795522213000
    assert 'watermark_ms' not in event.model_dump() and 'watermark_ms' not in json.loads(event.model_dump_json())
    assert 'watermark_ms' not in {f['name'] for f in bigquery_fields(EnrichedEvent)}
