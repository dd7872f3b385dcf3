"""The hostile-record corpus through the parser: each record gets exactly the outcome the corpus names for it,
as a dead letter with its reason and coordinates, and no exception escapes. (End to end on the real stack:
tests/e2e/test_hostile_input.py.)"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from launch.scenarios import corpus
from schemas import DeadLetter, IngestedEvent, KafkaRecord
from tests.schemas import samples
from transforms.parse import Skipped, parse_record

NOW = datetime(2026, 11, 24, 12, 30, tzinfo=timezone.utc)
RECORDS = corpus.corpus(NOW, samples.CONTENT_AFTER['id'], samples.DIRECT_EVENT['user_id'])
TOPICS = {corpus.RAW: samples.RAW_TOPIC, corpus.CDC: samples.EVENTS_TOPIC}


def as_kafka(record: corpus.Hostile, offset: int) -> KafkaRecord:
    return KafkaRecord(TOPICS[record.target], 3, offset, record.key, record.value, int(NOW.timestamp() * 1000))


def test_the_corpus_covers_every_class_the_pipeline_names():
    assert len(RECORDS) >= 45 and len({r.kind for r in RECORDS}) == len(RECORDS)
    assert {r.expected for r in RECORDS} >= {
        'malformed_json', 'empty_payload', 'missing_field', 'wrong_type', 'invalid_event', 'unsupported_op',
        'timestamp_out_of_range', 'too_deeply_nested', 'payload_too_large', 'future_event', 'unknown_content',
        corpus.SKIPPED}
    assert {r.target for r in RECORDS} == {corpus.RAW, corpus.CDC}


@pytest.mark.parametrize('record', RECORDS, ids=[r.kind for r in RECORDS])
def test_each_hostile_record_gets_its_outcome(record):
    result = parse_record(as_kafka(record, 77), [samples.EVENTS_TOPIC], NOW)

    if record.expected == corpus.SKIPPED:
        assert isinstance(result, Skipped)
    elif record.stage == 'enrich':  # a valid event of a content that does not exist: parsing accepts it
        assert isinstance(result, IngestedEvent) and result.content_id != samples.CONTENT_AFTER['id']
    else:
        assert isinstance(result, DeadLetter), result
        assert (result.stage, result.reason) == ('parse', record.expected), result.error
        assert (result.source_topic, result.source_partition, result.source_offset) == (
            TOPICS[record.target], 3, 77)
        assert result.error and len(result.error) <= 1000
        json.loads(result.fitted(1_000_000).to_json())  # its dead letter can always be written


def test_each_record_of_the_corpus_is_wrong_in_one_way_only():
    """The same record made valid again parses (a check of the corpus itself, so a reason cannot come from a
    second, accidental defect): a valid event and a valid envelope built by the corpus' own helpers."""
    valid_raw = next(r for r in RECORDS if r.kind == 'missing_id')
    fixed = json.loads(valid_raw.value)
    fixed['id'] = 5
    record = KafkaRecord(samples.RAW_TOPIC, 0, 1, b'5', json.dumps(fixed).encode(), int(NOW.timestamp() * 1000))
    assert isinstance(parse_record(record, [samples.EVENTS_TOPIC], NOW), IngestedEvent)
    envelope = json.loads(next(r for r in RECORDS if r.kind == 'cdc_op_truncate').value)
    envelope['op'] = 'c'
    record = KafkaRecord(samples.EVENTS_TOPIC, 0, 1, b'{"id":5}', json.dumps(envelope).encode(),
                         int(NOW.timestamp() * 1000))
    assert isinstance(parse_record(record, [samples.EVENTS_TOPIC], NOW), IngestedEvent)
