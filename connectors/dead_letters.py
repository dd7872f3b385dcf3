"""Dead letters: `WriteDeadLettersToKafka`, and a small command that lists and counts them.

Beam concepts: a composite `PTransform` around a `DoFn` that owns a Kafka producer (`setup`/`teardown`) and
flushes it in `finish_bundle`, so a bundle is only acknowledged once Kafka holds all of its dead letters (acks=all);
a failed delivery fails the bundle, and the runner retries it. `Metrics.counter`s per stage and reason.

A dead letter is a `schemas.DeadLetter` (anything with `model_dump_json()`) or a dict with the same fields:
payload, stage, reason, error, attempts, first_failed_ts, last_failed_ts, event_id, source_topic,
source_partition, source_offset. It is produced as JSON. Its Kafka key identifies the failed record, so a
retried bundle's duplicates can be told apart from distinct failures: the event id when known, else
`<source_topic>/<source_partition>/<source_offset>`, else `<stage>:<sha256 of the payload>`.

List and count what is in the topic (the defaults match the local stack; `--follow` keeps reading, Ctrl-C stops)::

    python -m connectors.dead_letters --bootstrap 127.0.0.1:19092 --topic engagement.dead_letters [--follow]

Redeliver the REST API sink's dead letters once the API is healthy again (`connectors/redeliver.py`)::

    python -m connectors.dead_letters redeliver --stage api [--reason R] [--since 2h] [--dry-run]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import json
import os
import sys
from typing import Any, Mapping

import apache_beam as beam
from apache_beam.metrics import Metrics

DEAD_LETTER_FIELDS = ('payload', 'stage', 'reason', 'error', 'attempts', 'first_failed_ts', 'last_failed_ts',
                      'event_id', 'source_topic', 'source_partition', 'source_offset')
_OPTIONAL_FIELDS = ('key', 'payload_encoding')  # the DeadLetter model's original Kafka key and its encoding
_METRICS_NAMESPACE = 'WriteDeadLettersToKafka'


def dead_letter(**fields) -> dict:
    """A dead-letter record as a dict: every field of DEAD_LETTER_FIELDS present (None when not given, attempts 1),
    shaped so that `schemas.DeadLetter.model_validate` accepts it."""
    unknown = set(fields) - set(DEAD_LETTER_FIELDS) - set(_OPTIONAL_FIELDS)
    if unknown:
        raise TypeError(f'unknown dead-letter fields: {sorted(unknown)}')
    record = {name: fields.get(name) for name in DEAD_LETTER_FIELDS}
    record['attempts'] = fields.get('attempts', 1)
    record.update((name, fields[name]) for name in _OPTIONAL_FIELDS if name in fields)
    return record


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode('utf-8', errors='backslashreplace')
    return str(value)


def to_json(record: Any) -> str:
    """The record as one JSON document: the model's own JSON, or the dict's."""
    if hasattr(record, 'model_dump_json'):
        return record.model_dump_json()
    if isinstance(record, Mapping):
        return json.dumps(dict(record), default=_json_default, separators=(',', ':'))
    raise TypeError(f'a dead letter must be a DeadLetter model or a dict, not {type(record).__name__}')


def record_key(record: Mapping[str, Any]) -> str:
    """The Kafka key that identifies the failed record (see the module docstring)."""
    if record.get('event_id') is not None:
        return str(record['event_id'])
    if record.get('source_topic') is not None:
        return f"{record['source_topic']}/{record.get('source_partition')}/{record.get('source_offset')}"
    payload = record.get('payload')
    text = payload if isinstance(payload, str) else json.dumps(payload, default=_json_default, sort_keys=True)
    return f"{record.get('stage')}:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]}"


class DeadLetterDeliveryFailed(RuntimeError):
    """Kafka did not acknowledge every dead letter of a bundle; the bundle fails and the runner retries it."""


class _ProduceDeadLettersFn(beam.DoFn):
    def __init__(self, bootstrap_servers: str, topic: str, flush_timeout_seconds: float, producer_config: dict):
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._flush_timeout = flush_timeout_seconds
        self._producer_config = producer_config
        self._produced = Metrics.counter(_METRICS_NAMESPACE, 'produced')

    def setup(self):
        from kafka import KafkaProducer
        self._producer = KafkaProducer(bootstrap_servers=self._bootstrap, acks='all', linger_ms=5,
                                       **self._producer_config)
        self._per_reason: dict[tuple, Any] = {}

    def start_bundle(self):
        self._sent = []

    def process(self, record):
        value = to_json(record)
        fields = json.loads(value)
        key = record_key(fields)
        stage, reason = fields.get('stage'), fields.get('reason')
        self._sent.append((key, self._producer.send(self._topic, key=key.encode('utf-8'),
                                                    value=value.encode('utf-8'))))
        counter = self._per_reason.get((stage, reason))
        if counter is None:
            counter = self._per_reason[(stage, reason)] = Metrics.counter(_METRICS_NAMESPACE, f'{stage}.{reason}')
        counter.inc()

    def finish_bundle(self):
        from kafka.errors import KafkaError
        try:
            self._producer.flush(timeout=self._flush_timeout)
        except KafkaError as exc:
            raise DeadLetterDeliveryFailed(
                f'Kafka at {self._bootstrap} did not take {len(self._sent)} dead letters for {self._topic} within '
                f'{self._flush_timeout} s ({exc}); the bundle fails and will be retried. Is Kafka running?') from None
        for key, future in self._sent:
            if future.failed():
                raise DeadLetterDeliveryFailed(
                    f'Kafka refused the dead letter {key!r} for {self._topic} at {self._bootstrap}: '
                    f'{future.exception}; the bundle fails and will be retried.')
        self._produced.inc(len(self._sent))
        self._sent = []

    def teardown(self):
        producer = getattr(self, '_producer', None)
        if producer is not None:
            producer.close(timeout=5)


class WriteDeadLettersToKafka(beam.PTransform):
    """Produce dead-letter records (DeadLetter models or dicts) as JSON to a Kafka topic, acks=all.

    Returns an empty PCollection (nothing flows on from a sink). `producer_config` is passed on to kafka-python's
    `KafkaProducer` (e.g. security settings).
    """

    def __init__(self, bootstrap_servers: str, topic: str, flush_timeout_seconds: float = 60.0,
                 producer_config: dict | None = None):
        super().__init__()
        if not bootstrap_servers or not topic:
            raise ValueError('WriteDeadLettersToKafka needs bootstrap_servers and topic')
        self._fn = _ProduceDeadLettersFn(bootstrap_servers, topic, flush_timeout_seconds, producer_config or {})

    def expand(self, dead_letters):
        return dead_letters | 'ProduceToKafka' >> beam.ParDo(self._fn)


def read_dead_letters(bootstrap: str, topic: str, follow: bool = False, poll_ms: int = 500):
    """Yield (partition, offset, key, record dict) from the start of `topic`; stop at its end unless `follow`."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             allow_auto_create_topics=False, bootstrap_timeout_ms=10_000)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        while follow or any(consumer.position(tp) < end[tp] for tp in assigned):
            for tp, messages in consumer.poll(timeout_ms=poll_ms).items():
                for message in messages:
                    try:
                        record = json.loads(message.value)
                    except ValueError:
                        record = None
                    if not isinstance(record, dict):
                        record = {'stage': '?', 'reason': 'not a dead letter', 'payload': message.value}
                    key = message.key.decode('utf-8', errors='replace') if message.key is not None else ''
                    yield tp.partition, message.offset, key, record
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['redeliver']:
        from connectors.redeliver import main as redeliver
        return redeliver(argv[1:])
    parser = argparse.ArgumentParser(prog='python -m connectors.dead_letters',
                                     description='List the dead letters in a Kafka topic and count them by stage '
                                                 'and reason.',
                                     epilog='`python -m connectors.dead_letters redeliver --help`: redeliver the '
                                            'dead letters of the REST API sink.')
    parser.add_argument('--bootstrap', default=os.environ.get('ENGAGEMENT_KAFKA_BOOTSTRAP', '127.0.0.1:19092'),
                        help='Kafka bootstrap servers. Env ENGAGEMENT_KAFKA_BOOTSTRAP; default 127.0.0.1:19092.')
    parser.add_argument('--topic', default=os.environ.get('ENGAGEMENT_DEAD_LETTER_TOPIC', 'engagement.dead_letters'),
                        help='Dead-letter topic. Env ENGAGEMENT_DEAD_LETTER_TOPIC; default engagement.dead_letters.')
    parser.add_argument('--follow', action='store_true', help='Keep printing new dead letters until Ctrl-C.')
    args = parser.parse_args(argv)

    from kafka.errors import KafkaError
    counts: collections.Counter = collections.Counter()
    try:
        for partition, offset, key, record in read_dead_letters(args.bootstrap, args.topic, args.follow):
            stage, reason = record.get('stage'), record.get('reason')
            counts[(stage, reason)] += 1
            error = str(record.get('error') or '').replace('\n', ' ')[:120]
            print(f'{partition}:{offset}\t{stage}\t{reason}\t{key}\t{error}', flush=True)
    except KafkaError as exc:
        print(f'cannot read {args.topic} from Kafka at {args.bootstrap}: {exc}; is the stack up (make up)?',
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    print(f'{sum(counts.values())} dead letters in {args.topic}')
    for (stage, reason), n in sorted(counts.items(), key=lambda item: (-item[1], str(item[0]))):
        print(f'{n:>8}  {stage}  {reason}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
