"""Dead letters: `WriteDeadLettersToKafka`, the Beam sink of every stage's failures.

Beam concepts: a composite `PTransform` around a `DoFn` that owns a Kafka producer (made at its first dead letter,
closed in `teardown`) and flushes it in `finish_bundle`, so a bundle is only acknowledged once Kafka holds all of
its dead letters (acks=all). While Kafka is unreachable the bundle waits and retries (backoff, a log line per
attempt, counter `kafka_waits`) for at most `delivery_timeout_seconds` (600) before it fails: a broker restart
does not stop the pipeline. `Metrics.counter`s per stage and reason.

A dead letter is a `schemas.DeadLetter`, produced as JSON. Its Kafka key identifies the failed record, so a
retried bundle's duplicates can be told apart from distinct failures:
the event id when known, else `<source_topic>/<source_partition>/<source_offset>`, else
`<stage>:<sha256 of the payload>`.

Size: at `setup` the writer asks the broker for the topic's `max.message.bytes` (Kafka's default, 1,048,588,
when it cannot be read), sets the producer's `max_request_size` to it, and cuts every dead letter to fit
(`DeadLetter.fitted`: a payload prefix, with the whole payload's size and sha256). A hostile record can
therefore never make the writer fail: kafka-python refuses an oversized record synchronously in `send`, which
would fail every retry of the bundle.

Copies: the writer delivers at least once. A bundle the runner retries, and the records a restarted pipeline reads
again after the last offsets it committed, write their dead letters again. Every consumer of the topic therefore
counts a failure once by `failure_identity` (stage plus source coordinates, or event id for the sinks, plus the
attempt count): the listing, the redelivery (which sends an event once per run, with its id as idempotency key).

Listing, counting and redelivering them are operator commands: `python -m launch.tools.dead_letters`.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import time
from typing import Any, Iterable, Mapping

import apache_beam as beam
from apache_beam.metrics import Metrics

from connectors import metrics
from schemas.dead_letter import DeadLetter

_METRICS_NAMESPACE = 'WriteDeadLettersToKafka'
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # broker message.max.bytes and topic max.message.bytes defaults
_RECORD_OVERHEAD_BYTES = 2048  # the record batch, the record's headers and its key, with room to spare
_LOG = logging.getLogger(__name__)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode('utf-8', errors='backslashreplace')
    return str(value)


def record_key(record: Mapping[str, Any]) -> str:
    """The Kafka key that identifies the failed record (see the module docstring)."""
    if record.get('event_id') is not None:
        return str(record['event_id'])
    if record.get('source_topic') is not None:
        return f"{record['source_topic']}/{record.get('source_partition')}/{record.get('source_offset')}"
    payload = record.get('payload')
    text = payload if isinstance(payload, str) else json.dumps(payload, default=_json_default, sort_keys=True)
    return f"{record.get('stage')}:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]}"


SINK_STAGES = frozenset({'redis', 'bigquery', 'api'})


def failure_identity(record: Mapping[str, Any], key: str | None = None) -> tuple:
    """What makes a dead letter one failure, the same for every copy a replay or a retried bundle writes: its
    stage; for a sink's failure the event id (a replayed Debezium change reaches the sink again from another
    offset: the same event failing at the same sink); otherwise the failed record's source coordinates, else its
    Kafka key (`key`, or record_key); and the attempt count, which a redelivery that fails again raises."""
    stage, attempts = record.get('stage'), record.get('attempts', 1)
    if stage in SINK_STAGES and record.get('event_id') is not None:
        return stage, 'event', str(record['event_id']), attempts
    if record.get('source_topic') is not None:
        return (stage, 'source', record['source_topic'], record.get('source_partition'),
                record.get('source_offset'), attempts)
    return stage, 'key', key if key else record_key(record), attempts


class DeadLetterDeliveryFailed(RuntimeError):
    """Kafka did not acknowledge every dead letter of a bundle; the bundle fails and the runner retries it."""


def topic_max_message_bytes(client_config: dict, topic: str) -> int:
    """The topic's `max.message.bytes` as the broker reports it; Kafka's default if it cannot be read (the topic
    does not exist yet, or the client may not describe configs)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
    admin = None
    try:
        admin = KafkaAdminClient(**{'request_timeout_ms': 10_000, 'bootstrap_timeout_ms': 10_000, **client_config})
        answer = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                        {'max.message.bytes': None})], config_filter='all')
        found = _find_config(answer, 'max.message.bytes')
        if found is not None:
            return int(found)
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the documented default
        _LOG.warning(json.dumps({'event': 'dead_letter_topic_config_unread', 'topic': topic,
                                 'error': f'{type(exc).__name__}: {str(exc)[:200]}',
                                 'assumed_max_message_bytes': KAFKA_DEFAULT_MAX_MESSAGE_BYTES}))
    finally:
        if admin is not None:
            admin.close()
    return KAFKA_DEFAULT_MAX_MESSAGE_BYTES


def _find_config(answer: Any, name: str) -> str | None:
    """The value of config `name` anywhere in kafka-python's nested describe_configs answer."""
    children: Iterable[Any]
    if isinstance(answer, Mapping):
        if name in answer:
            value = answer[name]
            return value.get('value') if isinstance(value, Mapping) else value
        children = answer.values()
    elif isinstance(answer, (list, tuple)):
        children = answer
    else:
        return None
    for child in children:
        found = _find_config(child, name)
        if found is not None:
            return found
    return None


def as_dead_letter(record: Any) -> DeadLetter:
    """`record` if it is a DeadLetter, else TypeError."""
    if isinstance(record, DeadLetter):
        return record
    raise TypeError(f'a dead letter must be a schemas.DeadLetter, not {type(record).__name__}')


class _ProduceDeadLettersFn(beam.DoFn):
    """The producer is made at the first dead letter, not in `setup`: a DoFn instance the runner sets up while
    Kafka is down (Prism does that for a new bundle) would otherwise fail the job. Until Kafka answers, the bundle
    waits, retrying with backoff and logging each attempt, for at most `delivery_timeout_seconds`; only then does it
    fail (and the runner retries it or stops). A record Kafka refused is sent again within the same bound, so a
    retry can write a dead letter twice: consumers count a failure once (failure_identity)."""

    def __init__(self, bootstrap_servers: str, topic: str, flush_timeout_seconds: float, producer_config: dict,
                 delivery_timeout_seconds: float):
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._flush_timeout = flush_timeout_seconds
        self._delivery_timeout = delivery_timeout_seconds
        self._producer_config = producer_config
        self._produced = Metrics.counter(_METRICS_NAMESPACE, 'produced')
        self._cut = Metrics.counter(_METRICS_NAMESPACE, 'cut_to_fit')
        self._waits = Metrics.counter(_METRICS_NAMESPACE, 'kafka_waits')

    def setup(self):
        self._producer = None
        self._max_letter_bytes = KAFKA_DEFAULT_MAX_MESSAGE_BYTES - _RECORD_OVERHEAD_BYTES

    def _wait(self, started: float, attempt: int, what: str, exc: BaseException) -> None:
        """Sleep before the next attempt, or raise DeadLetterDeliveryFailed once the bound is passed."""
        waited = time.monotonic() - started
        if waited > self._delivery_timeout:
            raise DeadLetterDeliveryFailed(
                f'Kafka at {self._bootstrap} did not take the dead letters for {self._topic} within '
                f'{self._delivery_timeout:.0f} s ({what}: {type(exc).__name__}: {exc}); the bundle fails. '
                'Is Kafka running?') from None
        self._waits.inc()
        _LOG.warning(json.dumps({'event': 'dead_letter_kafka_unavailable', 'topic': self._topic, 'what': what,
                                 'attempt': attempt, 'waited_s': round(waited, 1),
                                 'error': f'{type(exc).__name__}: {str(exc)[:200]}'}))
        time.sleep(min(5.0, 0.25 * 2 ** attempt))

    def _ensure_producer(self) -> None:
        if self._producer is not None:
            return
        from kafka import KafkaProducer
        from kafka.errors import KafkaError
        started, attempt = time.monotonic(), 0
        while True:
            try:
                limit = topic_max_message_bytes({'bootstrap_servers': self._bootstrap, **self._producer_config},
                                                self._topic)
                self._producer = KafkaProducer(bootstrap_servers=self._bootstrap, acks='all', linger_ms=5,
                                               max_request_size=limit, **self._producer_config)
                self._max_letter_bytes = limit - _RECORD_OVERHEAD_BYTES
                return
            except KafkaError as exc:
                attempt += 1
                self._wait(started, attempt, 'connect', exc)

    def start_bundle(self):
        self._sent = []

    def process(self, record):
        self._ensure_producer()
        key, value = self._encode(record)
        self._sent.append((key, value, self._producer.send(self._topic, key=key, value=value)))

    def _encode(self, record) -> tuple[bytes, bytes]:
        letter = as_dead_letter(record)
        value = letter.to_json().encode('utf-8')
        if len(value) > self._max_letter_bytes:
            letter = letter.fitted(self._max_letter_bytes)
            value = letter.to_json().encode('utf-8')
            self._cut.inc()
        metrics.DEAD_LETTERS.inc(stage=letter.stage, reason=letter.reason)
        return record_key(letter.model_dump()).encode('utf-8'), value


class _ProduceJsonFn(_ProduceDeadLettersFn):
    """The dead-letter writer's producer (made at the first record, waits for Kafka, acks=all) for plain JSON
    objects, keyed by one of their fields."""

    def __init__(self, bootstrap_servers: str, topic: str, key_field: str, producer_config: dict):
        super().__init__(bootstrap_servers, topic, 10.0, producer_config, 600.0)
        self._key_field = key_field
        self._produced = Metrics.counter('WriteJsonToKafka', 'produced')

    def _encode(self, record) -> tuple[bytes, bytes]:
        return str(record[self._key_field]).encode('utf-8'), json.dumps(record, default=str).encode('utf-8')


class WriteJsonToKafka(beam.PTransform):
    """Produce dicts as JSON to a Kafka topic (key: `record[key_field]`), with the dead-letter writer's delivery:
    acks=all, waits for an absent Kafka up to 600 s before the bundle fails. Returns an empty PCollection."""

    def __init__(self, bootstrap_servers: str, topic: str, key_field: str, producer_config: dict | None = None):
        super().__init__()
        if not bootstrap_servers or not topic:
            raise ValueError('WriteJsonToKafka needs bootstrap_servers and topic')
        self._fn = _ProduceJsonFn(bootstrap_servers, topic, key_field, producer_config or {})

    def expand(self, records):
        return records | 'ProduceToKafka' >> beam.ParDo(self._fn)

    def finish_bundle(self):
        from kafka.errors import KafkaError
        if not self._sent:
            return
        started, attempt = time.monotonic(), 0
        pending = self._sent
        while True:
            try:
                self._producer.flush(timeout=self._flush_timeout)
            except KafkaError as exc:
                problem: BaseException | None = exc
            else:
                problem = None
            refused = [(key, value, future) for key, value, future in pending if future.is_done and future.failed()]
            pending = [(key, value, future) for key, value, future in pending if not future.is_done] + [
                (key, value, self._producer.send(self._topic, key=key, value=value)) for key, value, _ in refused]
            if not pending:
                break
            attempt += 1
            self._wait(started, attempt, f'{len(pending)} dead letters unacknowledged',
                       problem or refused[0][2].exception)
        self._produced.inc(len(self._sent))
        self._sent = []

    def teardown(self):
        producer = getattr(self, '_producer', None)
        if producer is not None:
            producer.close(timeout=5)


class WriteDeadLettersToKafka(beam.PTransform):
    """Produce dead letters (`schemas.DeadLetter`) as JSON to a Kafka topic, acks=all, each cut to fit the topic.

    Returns an empty PCollection (nothing flows on from a sink). `producer_config` is passed on to kafka-python's
    `KafkaProducer` (e.g. security settings).
    """

    def __init__(self, bootstrap_servers: str, topic: str, flush_timeout_seconds: float = 10.0,
                 producer_config: dict | None = None, delivery_timeout_seconds: float = 600.0):
        super().__init__()
        if not bootstrap_servers or not topic:
            raise ValueError('WriteDeadLettersToKafka needs bootstrap_servers and topic')
        self._fn = _ProduceDeadLettersFn(bootstrap_servers, topic, flush_timeout_seconds, producer_config or {},
                                         delivery_timeout_seconds)

    def expand(self, dead_letters):
        return dead_letters | 'ProduceToKafka' >> beam.ParDo(self._fn)
