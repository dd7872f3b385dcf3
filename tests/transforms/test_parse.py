"""ParseEvents: real Debezium and direct records become events at event time; bad input becomes dead letters
with the reason an operator would look for."""
import json
import random
from datetime import datetime, timezone

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from launch.scenarios import generate
from schemas import DeadLetter, IngestedEvent, KafkaRecord
from tests.schemas import samples
from transforms.parse import ParseEvents, Skipped, parse_record

NOW = datetime(2026, 11, 24, 12, 30, tzinfo=timezone.utc)
CDC_TOPICS = (samples.EVENTS_TOPIC,)


def cdc(value, offset=7, key=samples.CDC_EVENT_KEY):
    return KafkaRecord(samples.EVENTS_TOPIC, 0, offset, key, value, 1795522213410)


def direct(value, key=None, offset=3, timestamp_ms=1795522214600):
    if isinstance(value, dict):
        value = json.dumps(value).encode()
    return KafkaRecord(samples.RAW_TOPIC, 1, offset, key, value, timestamp_ms)


def parse(record):
    return parse_record(record, CDC_TOPICS, NOW)


def test_debezium_insert_becomes_an_event_with_its_source():
    event = parse(cdc(samples.CDC_EVENT_VALUE))

    assert isinstance(event, IngestedEvent)
    assert (event.id, event.event_type, event.duration_ms) == (1, 'play', 660295)
    assert event.raw_payload['session_id'] == 's-b84d86402e10'
    assert (event.source, event.source_topic, event.source_partition, event.source_offset) == (
        'cdc', samples.EVENTS_TOPIC, 0, 7)
    assert event.source_lsn == 26621312
    assert event.ingest_ts == datetime(2026, 11, 24, 12, 10, 13, 410000, tzinfo=timezone.utc)


def test_the_readers_watermark_stamp_is_carried_onto_the_event():
    stamped = cdc(samples.CDC_EVENT_VALUE)._replace(watermark_ms=1795522211000)

    assert parse(stamped).watermark_ms == 1795522211000
    assert parse(cdc(samples.CDC_EVENT_VALUE)).watermark_ms is None


def test_snapshot_read_and_update_are_events_an_update_being_a_newer_version():
    snapshot = parse(cdc(samples.cdc_value(op='r')))
    update = parse(cdc(samples.cdc_value(op='u', event_type='finish', duration_ms=700_000).replace(
        b'"lsn": 26621312', b'"lsn": 26700000')))

    assert snapshot.event_type == 'play'
    assert (update.id, update.event_type, update.duration_ms) == (1, 'finish', 700_000)
    assert update.source_lsn > snapshot.source_lsn


def test_deletes_and_tombstones_are_skipped_not_dead_lettered():
    assert parse(cdc(samples.cdc_value(op='d', no_after=True))) == Skipped('deleted')
    assert parse(cdc(None)) == Skipped('tombstone')


@pytest.mark.parametrize('value, reason', [
    (samples.cdc_value(op='t', no_after=True), 'unsupported_op'),
    (samples.cdc_value(op='c', no_after=True), 'invalid_event'),
    (samples.cdc_value(duration_ms='twelve seconds'), 'wrong_type'),
    (samples.cdc_value(raw_payload='{"referrer": '), 'wrong_type'),
    (samples.CDC_EVENT_VALUE[:120], 'malformed_json'),
    (json.dumps({'schema': {}, 'payload': {}}).encode(), 'missing_field'),   # converter with schemas enabled
])
def test_bad_cdc_records_are_dead_letters_with_a_reason(value, reason):
    dead = parse(cdc(value))

    assert isinstance(dead, DeadLetter)
    assert (dead.stage, dead.reason) == ('parse', reason)
    assert dead.payload == value.decode() and dead.source_offset == 7
    assert dead.event_id == 1                                  # from the row, or else from the key {"id":1}


def test_direct_event_keeps_its_large_id_and_payload_object():
    event = parse(direct(samples.DIRECT_EVENT, key=b'1795522214408970001'))

    assert (event.source, event.id) == ('direct', 1795522214408970001)
    assert event.raw_payload == samples.DIRECT_EVENT['raw_payload']
    assert event.source_lsn is None


def test_each_kind_of_bad_input_the_generator_sends_gets_its_reason():
    """The load generator's own corruptions (launch/scenarios/generate.py make_bad), many random draws of each."""
    factory = generate.EventFactory([samples.CONTENT_AFTER['id']], users=10, late_share=0, late_max_s=1, seed=7)
    rng = random.Random(11)
    seen = {}
    for n in range(200):
        event = factory.make(NOW, event_id=1795522214408970000 + n)
        kind = generate.BAD_KINDS[n % len(generate.BAD_KINDS)]
        result = parse(direct(generate.make_bad(kind, event, rng), key=str(event.id).encode(), offset=n,
                              timestamp_ms=int(NOW.timestamp() * 1000)))
        seen.setdefault(kind, set()).add(result.reason if isinstance(result, DeadLetter) else 'event')
        if isinstance(result, DeadLetter):
            assert result.event_id == event.id, result   # correlates with the generator's summary of bad ids

    assert seen == {'malformed_json': {'malformed_json'}, 'missing_field': {'missing_field'},
                    'wrong_type': {'wrong_type'},
                    'unknown_content': {'event'}}           # a valid event: only enrichment can tell


def test_wrong_type_names_the_field_and_the_bad_value():
    dead = parse(direct({**samples.DIRECT_EVENT, 'duration_ms': 'twelve seconds'}))

    assert dead.reason == 'wrong_type'
    assert 'duration_ms' in dead.error and 'twelve seconds' in dead.error


def test_several_problems_report_the_most_fundamental_one():
    record = {**samples.DIRECT_EVENT, 'duration_ms': 'twelve seconds'}
    del record['user_id']

    assert parse(direct(record)).reason == 'missing_field'


@pytest.mark.parametrize('value, reason', [
    (b'\xff\xfe\x00garbage', 'malformed_json'),
    (b'[1, 2]', 'invalid_event'),
    (None, 'empty_payload'),
])
def test_direct_records_that_are_not_events(value, reason):
    dead = parse(direct(value, key=b'42'))

    assert dead.reason == reason
    assert dead.event_id == 42                                  # the producer's key


def test_pipeline_outputs_events_at_event_time_and_dead_letters_apart():
    records = [cdc(samples.CDC_EVENT_VALUE), direct(samples.DIRECT_EVENT, offset=1),
               direct(b'{"id": 5, "content_', offset=2), cdc(None, offset=8)]

    with test_pipeline.TestPipeline(runner='FnApiRunner') as p:
        parsed = p | beam.Create(records) | ParseEvents(cdc_topics=CDC_TOPICS)
        timed = parsed.events | beam.Map(lambda e, ts=beam.DoFn.TimestampParam: (e.id, e.source, ts))
        reasons = parsed.dead_letters | beam.Map(lambda d: (d.reason, d.source_offset))

        assert_that(timed, equal_to([
            (1, 'cdc', Timestamp.from_utc_datetime(datetime(2026, 11, 24, 12, 10, 12, 509201, tzinfo=timezone.utc))),
            (1795522214408970001, 'direct', Timestamp(micros=1795522214536825)),
        ]), label='EventsAtEventTime')
        assert_that(reasons, equal_to([('malformed_json', 2)]), label='DeadLetters')


def test_a_record_named_by_the_operator_is_dead_lettered_unread():
    from transforms.parse import Coordinates, ParseLimits
    skip = ParseLimits(skip=frozenset({Coordinates(samples.RAW_TOPIC, 1, 3)}))

    dead = parse_record(direct(samples.DIRECT_EVENT, offset=3), CDC_TOPICS, NOW, skip)
    kept = parse_record(direct(samples.DIRECT_EVENT, offset=4), CDC_TOPICS, NOW, skip)

    assert (dead.reason, dead.source_offset, dead.event_id) == ('skipped_by_operator', 3, None)
    assert isinstance(kept, IngestedEvent)


@pytest.mark.parametrize('text, expected', [
    ('engagement.raw_events:0:12', {('engagement.raw_events', 0, 12)}),
    (' a:1:2 , b.c:0:0,', {('a', 1, 2), ('b.c', 0, 0)}),
    ('odd:topic:3:4', {('odd:topic', 3, 4)}),
    ('', set()),
])
def test_skip_offsets_are_topic_partition_offset(text, expected):
    from transforms.parse import parse_skip_offsets
    assert parse_skip_offsets(text) == expected


@pytest.mark.parametrize('text', ['topic:1', 'topic:x:2', ':1:2', 'topic:1:-2'])
def test_bad_skip_offsets_are_refused_naming_the_item(text):
    from transforms.parse import parse_skip_offsets
    with pytest.raises(ValueError, match='topic:partition:offset'):
        parse_skip_offsets(text)


def test_the_size_limit_counts_key_and_value_and_is_checked_before_parsing():
    from transforms.parse import ParseLimits
    value = json.dumps(samples.DIRECT_EVENT).encode()
    limit = ParseLimits(max_record_bytes=len(value) + 10)

    assert isinstance(parse_record(direct(value, key=b'k' * 10), CDC_TOPICS, NOW, limit), IngestedEvent)
    dead = parse_record(direct(value, key=b'k' * 11), CDC_TOPICS, NOW, limit)
    assert dead.reason == 'payload_too_large' and f'{len(value) + 11:,} bytes' in dead.error


def test_future_events_are_judged_by_the_record_timestamp_capped_at_the_wall_clock():
    from transforms.parse import ParseLimits
    event_ts = datetime(2026, 11, 24, 12, 10, 14, tzinfo=timezone.utc)
    value = {**samples.DIRECT_EVENT, 'event_ts': event_ts.isoformat()}
    at = lambda seconds: int(event_ts.timestamp() * 1000) + seconds * 1000  # noqa: E731
    limits = ParseLimits(max_future_seconds=300)

    # 300 s ahead of the record's timestamp is accepted, 301 s is not: whatever the wall clock says later
    assert isinstance(parse_record(direct(value, timestamp_ms=at(-300)), CDC_TOPICS, NOW, limits), IngestedEvent)
    dead = parse_record(direct(value, timestamp_ms=at(-301)), CDC_TOPICS, NOW, limits)
    assert dead.reason == 'future_event' and '301 s ahead' in dead.error
    # a record stamped in the future by its producer does not vouch for its event: the wall clock caps it
    wall = event_ts.replace(minute=0)
    assert parse_record(direct(value, timestamp_ms=at(3600)), CDC_TOPICS, wall, limits).reason == 'future_event'
    # no record timestamp: the wall clock
    assert isinstance(parse_record(direct(value, timestamp_ms=-1), CDC_TOPICS, NOW, limits), IngestedEvent)


def test_an_empty_value_is_an_empty_payload_and_a_byte_order_mark_is_ignored():
    assert parse(direct(b'')).reason == 'empty_payload'
    assert parse(direct(b'  \r\n')).reason == 'empty_payload'
    with_bom = parse(direct(b'\xef\xbb\xbf' + json.dumps(samples.DIRECT_EVENT).encode()))
    assert isinstance(with_bom, IngestedEvent) and with_bom.id == samples.DIRECT_EVENT['id']


def test_nesting_up_to_the_parsers_limit_is_accepted_and_deeper_is_too_deeply_nested():
    def nested(levels):
        return json.dumps({**samples.DIRECT_EVENT, 'raw_payload': {}}).replace(
            '"raw_payload": {}', '"raw_payload": ' + '{"a":' * levels + '1' + '}' * levels).encode()
    assert isinstance(parse(direct(nested(199))), IngestedEvent)   # the event's object + 199 = 200 levels
    dead = parse(direct(nested(200), key=b'77'))
    assert (dead.reason, dead.event_id) == ('too_deeply_nested', 77)  # the id from the key: the value is not re-read


def test_an_exception_while_parsing_becomes_an_unexpected_error_dead_letter(monkeypatch, caplog):
    from transforms import parse as parse_module

    def broken(*args, **kwargs):
        raise RecursionError('maximum recursion depth exceeded')
    monkeypatch.setattr(parse_module, 'parse_record', broken)
    fn = parse_module.ParseEventsFn(CDC_TOPICS)
    fn.start_bundle()
    outputs = [out for offset in (5, 6) for out in fn.process(direct(samples.DIRECT_EVENT, offset=offset))]

    letters = [out.value for out in outputs]
    assert [(d.reason, d.source_offset) for d in letters] == [('unexpected_error', 5), ('unexpected_error', 6)]
    assert letters[0].error.startswith('RecursionError while parsing')
    logged = [r for r in caplog.records if 'parse_unexpected_error' in r.getMessage()]
    assert len(logged) == 1 and '"offset": 5' in logged[0].getMessage()  # once per kind, with coordinates
    assert fn._counts['dead_letter_unexpected_error'] == 2
