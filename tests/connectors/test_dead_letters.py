"""Dead letters: their JSON and Kafka key (fast), and one integration test that produces them through a Beam
pipeline to the real Kafka of the stack, reads them back and counts them with `python -m connectors.dead_letters`."""
from __future__ import annotations

import datetime
import json
import time
import uuid

import apache_beam as beam
import pydantic
import pytest

from connectors.dead_letters import WriteDeadLettersToKafka, dead_letter, main, read_dead_letters, record_key, to_json

T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)


class DeadLetter(pydantic.BaseModel):
    """Stands in for schemas.DeadLetter (same fields)."""
    payload: str
    stage: str
    reason: str
    error: str
    attempts: int
    first_failed_ts: datetime.datetime
    last_failed_ts: datetime.datetime
    event_id: int | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None


def test_dead_letter_has_every_field_and_rejects_unknown_ones():
    record = dead_letter(payload='{}', stage='parse', reason='bad_json')
    assert record['attempts'] == 1 and record['source_offset'] is None and len(record) == 11
    with pytest.raises(TypeError, match='stage_name'):
        dead_letter(stage_name='parse')


def test_the_key_names_the_failed_record():
    assert record_key(dead_letter(event_id=42, source_topic='t', source_partition=1, source_offset=7)) == '42'
    assert record_key(dead_letter(source_topic='t', source_partition=1, source_offset=7)) == 't/1/7'
    same = record_key(dead_letter(stage='redis', payload='{"a": 1}'))
    assert same == record_key(dead_letter(stage='redis', payload='{"a": 1}', error='another attempt'))
    assert same.startswith('redis:') and same != record_key(dead_letter(stage='redis', payload='{"a": 2}'))


def test_json_of_a_model_and_of_a_dict():
    model = DeadLetter(payload='{"id": 1}', stage='parse', reason='bad_json', error='Expecting value', attempts=1,
                       first_failed_ts=T0, last_failed_ts=T0, event_id=1)
    assert json.loads(to_json(model)) == json.loads(model.model_dump_json())
    as_dict = json.loads(to_json(dead_letter(payload=b'\xff raw', stage='parse', first_failed_ts=T0)))
    assert as_dict['payload'] == '\\xff raw' and as_dict['first_failed_ts'] == '2026-11-24T12:00:00+00:00'
    with pytest.raises(TypeError, match='DeadLetter model or a dict'):
        to_json(['not', 'a', 'record'])


@pytest.mark.integration
def test_dead_letters_survive_the_trip_through_kafka_and_are_counted(stack, capsys):
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from kafka.admin import NewTopic
    bootstrap, topic = stack.cfg.kafka_bootstrap, f'test.dead_letters.{uuid.uuid4().hex[:8]}'
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    records = [
        DeadLetter(payload='{"id": 7, "event_type": "jump"}', stage='parse', reason='invalid_event_type',
                   error='event_type must be one of play, pause, finish, click', attempts=1, first_failed_ts=T0,
                   last_failed_ts=T0, event_id=7, source_topic='engagement.public.engagement_events',
                   source_partition=2, source_offset=1234),
        dead_letter(payload='not json at all', stage='parse', reason='bad_json', error='Expecting value',
                    attempts=1, first_failed_ts=T0.isoformat(), last_failed_ts=T0.isoformat(),
                    source_topic='engagement.raw_events', source_partition=0, source_offset=99),
        dead_letter(payload='{"content_id": "c1", "events": -3}', stage='redis', reason='invalid_stats',
                    error='events=-3 is not a whole number >= 0', attempts=1),
    ]

    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create(records) | WriteDeadLettersToKafka(bootstrap, topic)
    pipeline.run().wait_until_finish()

    # The pipeline has finished, so Kafka acknowledged every record: they are all there already, once each.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset='earliest')
    partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer.assign(partitions)
    assert sum(consumer.end_offsets(partitions).values()) == 3
    by_key, deadline = {}, time.monotonic() + 30
    while len(by_key) < 3 and time.monotonic() < deadline:
        for messages in consumer.poll(timeout_ms=500).values():
            by_key.update((m.key.decode(), json.loads(m.value)) for m in messages)
    consumer.close()
    expected_redis_key = record_key(records[2])
    assert set(by_key) == {'7', 'engagement.raw_events/0/99', expected_redis_key}
    assert by_key['7']['payload'] == '{"id": 7, "event_type": "jump"}'
    assert (by_key['7']['stage'], by_key['7']['reason'], by_key['7']['source_offset']) == (
        'parse', 'invalid_event_type', 1234)
    assert by_key['engagement.raw_events/0/99']['payload'] == 'not json at all'
    assert by_key[expected_redis_key]['reason'] == 'invalid_stats'
    assert len(list(read_dead_letters(bootstrap, topic))) == 3

    assert main(['--bootstrap', bootstrap, '--topic', topic]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 + 1 + 3  # one line per dead letter, the total, one count per (stage, reason)
    assert {line.split('\t')[3] for line in lines[:3]} == set(by_key)
    assert lines[3] == f'3 dead letters in {topic}'
    assert sorted(line.split() for line in lines[4:]) == [
        ['1', 'parse', 'bad_json'], ['1', 'parse', 'invalid_event_type'], ['1', 'redis', 'invalid_stats']]
