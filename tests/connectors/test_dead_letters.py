"""Dead letters: their JSON and Kafka key (fast), and one integration test that produces them through a Beam
pipeline to the real Kafka of the stack, reads them back and counts them with `python -m launch.tools.dead_letters`."""
from __future__ import annotations

import datetime
import hashlib
import json
import time
import uuid

import apache_beam as beam
import pytest

from connectors.dead_letters import (
    WriteDeadLettersToKafka,
    _find_config,
    as_dead_letter,
    failure_identity,
    record_key,
    topic_max_message_bytes,
)
from launch.tools.dead_letters import main, read_dead_letters
from schemas import DeadLetter

T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)


def letter(**fields) -> DeadLetter:
    return DeadLetter(**{'payload': '{}', 'stage': 'parse', 'reason': 'bad_json', 'error': 'e',
                         'first_failed_ts': T0, 'last_failed_ts': T0, **fields})


def test_the_key_names_the_failed_record():
    def key(d: DeadLetter) -> str:
        return record_key(d.model_dump())
    assert key(letter(event_id=42, source_topic='t', source_partition=1, source_offset=7)) == '42'
    assert key(letter(source_topic='t', source_partition=1, source_offset=7)) == 't/1/7'
    same = key(letter(stage='redis', payload='{"a": 1}'))
    assert same == key(letter(stage='redis', payload='{"a": 1}', error='another attempt'))
    assert same.startswith('redis:') and same != key(letter(stage='redis', payload='{"a": 2}'))


def test_a_failure_is_one_identity_whatever_copy_or_offset_it_was_written_from():
    def identity(d: DeadLetter) -> tuple:
        return failure_identity(d.model_dump())
    raw = letter(event_id=42, source_topic='t', source_partition=1, source_offset=7)
    # a copy written by a replay or a retried bundle: another time, another error text
    assert identity(raw) == identity(letter(event_id=42, source_topic='t', source_partition=1, source_offset=7,
                                            error='again', last_failed_ts=T0 + datetime.timedelta(minutes=5)))
    # two records on the raw topic that name the same event id are two failures; the same event failing in a sink
    # from two offsets (Debezium delivered its change twice) is one
    assert identity(raw) != identity(letter(event_id=42, source_topic='t', source_partition=1, source_offset=8))
    api = dict(stage='api', reason='api_http_503', event_id=42, source_topic='cdc', source_partition=0)
    assert identity(letter(**api, source_offset=1)) == identity(letter(**api, source_offset=9))
    # a redelivery that failed again is a new failure; so is the same record failing in another stage
    assert identity(letter(**api, source_offset=1)) != identity(letter(**api, source_offset=1, attempts=4))
    assert identity(raw) != identity(letter(event_id=42, source_topic='t', source_partition=1, source_offset=7,
                                            stage='enrich'))
    assert identity(letter(stage='redis', payload='{"a": 1}')) == identity(letter(stage='redis', payload='{"a": 1}'))


def test_a_broker_that_is_down_makes_the_bundle_wait_not_the_setup_fail():
    """Setting up the writer needs no broker (Prism sets up new instances at any time, an outage included); its
    first dead letter waits for Kafka, retrying, and fails the bundle only after the delivery bound."""
    from connectors.dead_letters import DeadLetterDeliveryFailed, _ProduceDeadLettersFn
    from launch.stack.config import free_ports
    fn = _ProduceDeadLettersFn(f'127.0.0.1:{free_ports(1)[0]}', 'dead', 1.0,
                               {'bootstrap_timeout_ms': 300, 'request_timeout_ms': 300}, 2.0)
    started = time.monotonic()
    fn.setup()
    assert time.monotonic() - started < 0.5
    fn.start_bundle()
    with pytest.raises(DeadLetterDeliveryFailed, match='within 2 s'):
        fn.process(letter())
    assert 2.0 <= time.monotonic() - started < 20
    fn.teardown()


def test_only_dead_letters_are_written():
    assert as_dead_letter(letter()) == letter()
    with pytest.raises(TypeError, match='schemas.DeadLetter'):
        as_dead_letter({'payload': '{}', 'stage': 'parse'})


def test_the_topic_limit_is_found_in_the_admin_clients_answer():
    answer = [{'topic': {'engagement.dead_letters': {'max.message.bytes': {'value': '2097152', 'source': 1}}}}]
    assert _find_config(answer, 'max.message.bytes') == '2097152'
    assert _find_config({'other': 1}, 'max.message.bytes') is None


def test_an_unreachable_broker_means_kafkas_default_limit():
    assert topic_max_message_bytes({'bootstrap_servers': '127.0.0.1:9', 'bootstrap_timeout_ms': 1000},
                                   'engagement.dead_letters') == 1_048_588


@pytest.mark.integration
def test_dead_letters_survive_the_trip_through_kafka_and_are_counted(stack, capsys, tmp_path):
    from kafka import KafkaConsumer, TopicPartition

    from tests.connectors.kafka.test_reader import create_topic
    bootstrap = stack.cfg.kafka_bootstrap
    topic = create_topic(stack.cfg, f'test.dead_letters.{uuid.uuid4().hex[:8]}', 2)
    records = [
        DeadLetter(payload='{"id": 7, "event_type": "jump"}', stage='parse', reason='invalid_event_type',
                   error='event_type must be one of play, pause, finish, click', attempts=1, first_failed_ts=T0,
                   last_failed_ts=T0, event_id=7, source_topic='engagement.public.engagement_events',
                   source_partition=2, source_offset=1234),
        letter(payload='not json at all', error='Expecting value', source_topic='engagement.raw_events',
               source_partition=0, source_offset=99),
        letter(payload='{"content_id": "c1", "events": -3}', stage='redis', reason='invalid_stats',
               error='events=-3 is not a whole number >= 0'),
        # a hostile record's dead letter: 200 KB of control characters JSON-escape to 1.2 MB, over Kafka's limit
        letter(payload='\x01' * 200_000, reason='malformed_json', source_topic='engagement.raw_events',
               source_partition=0, source_offset=100),
    ]

    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create(records) | WriteDeadLettersToKafka(bootstrap, topic)
    pipeline.run().wait_until_finish()

    # The pipeline has finished, so Kafka acknowledged every record: they are all there already, once each.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset='earliest')
    partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer.assign(partitions)
    assert sum(consumer.end_offsets(partitions).values()) == 4
    by_key, deadline = {}, time.monotonic() + 30
    while len(by_key) < 4 and time.monotonic() < deadline:
        for messages in consumer.poll(timeout_ms=500).values():
            by_key.update((m.key.decode(), json.loads(m.value)) for m in messages)
    consumer.close()
    expected_redis_key = record_key(records[2].model_dump())
    assert set(by_key) == {'7', 'engagement.raw_events/0/99', expected_redis_key, 'engagement.raw_events/0/100'}
    assert by_key['7']['payload'] == '{"id": 7, "event_type": "jump"}'
    assert (by_key['7']['stage'], by_key['7']['reason'], by_key['7']['source_offset']) == (
        'parse', 'invalid_event_type', 1234)
    assert by_key['engagement.raw_events/0/99']['payload'] == 'not json at all'
    assert by_key[expected_redis_key]['reason'] == 'invalid_stats'
    cut = by_key['engagement.raw_events/0/100']
    assert 900_000 < len(json.dumps(cut)) <= 1_048_588 and cut['payload'] == '\x01' * len(cut['payload'])
    assert cut['original_size_bytes'] == 200_000
    assert cut['original_sha256'] == hashlib.sha256(b'\x01' * 200_000).hexdigest()
    assert len(list(read_dead_letters(bootstrap, topic))) == 4

    assert main(['--bootstrap', bootstrap, '--topic', topic]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 + 1 + 4  # one line per dead letter, the total, one count per (stage, reason)
    assert {line.split('\t')[3] for line in lines[:4]} == set(by_key)
    assert lines[4] == f'4 failures in {topic} (4 records; 0 copies written by replays or retried bundles not listed)'
    counted = [['1', 'parse', 'bad_json'], ['1', 'parse', 'invalid_event_type'], ['1', 'parse', 'malformed_json'],
               ['1', 'redis', 'invalid_stats']]
    assert sorted(line.split() for line in lines[5:]) == counted

    # A replay (a restarted pipeline reading the same records again) writes every dead letter a second time: the
    # listing still shows each failure once, and --copies every record.
    replay = beam.Pipeline()
    _ = replay | beam.Create(records) | WriteDeadLettersToKafka(bootstrap, topic)
    replay.run().wait_until_finish()
    assert len(list(read_dead_letters(bootstrap, topic))) == 8
    assert main(['--bootstrap', bootstrap, '--topic', topic]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[4] == f'4 failures in {topic} (8 records; 4 copies written by replays or retried bundles not listed)'
    assert {line.split('\t')[3] for line in lines[:4]} == set(by_key)
    assert sorted(line.split() for line in lines[5:]) == counted
    assert main(['--bootstrap', bootstrap, '--topic', topic, '--copies']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[8] == f'8 dead letters in {topic}'
    assert sorted(line.split() for line in lines[9:]) == [[str(2 * int(n)), *rest] for n, *rest in counted]

    # The console: a selection, one dead letter in full (payload and the ids that tie it to its record), an export.
    assert main(['list', '--bootstrap', bootstrap, '--topic', topic, '--stage', 'parse', '--reason', 'bad_json']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [f'1 selected failures in {topic} (8 records read)', '       1  parse  bad_json']
    where = lines[0].split('\t')[0]
    assert main(['show', where, '--bootstrap', bootstrap, '--topic', topic]) == 0
    shown = capsys.readouterr().out
    for part in ('reason: bad_json', "payload:\n    'not json at all'", 'source_topic: engagement.raw_events',
                 'source_offset: 99', 'idempotency key: parse/bad_json/kafka/engagement.raw_events/0/99'):
        assert part in shown, shown
    assert main(['show', '1:999', '--bootstrap', bootstrap, '--topic', topic]) == 1
    assert capsys.readouterr().err == f'error: no record at 1:999 of {topic}\n'
    exported = tmp_path / 'parse.jsonl'
    assert main(['export', '--bootstrap', bootstrap, '--topic', topic, '--stage', 'parse', '-o', str(exported)]) == 0
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(row['reason'] for row in rows) == ['bad_json', 'invalid_event_type', 'malformed_json']
    assert all({'partition', 'offset', 'key', 'payload', 'stage', 'error'} <= set(row) for row in rows)
    assert capsys.readouterr().err.startswith(f'3 selected failures in {topic} (8 records read); exported to')
