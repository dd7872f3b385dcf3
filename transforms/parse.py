"""`ParseEvents`: Kafka records into validated engagement events; everything else becomes a dead letter.

    parsed = records | ParseEvents(cdc_topics=['engagement.public.engagement_events'])
    parsed.events        # PCollection[IngestedEvent], timestamped with event_ts (EventBatch from KafkaBatch)
    parsed.dead_letters  # PCollection[DeadLetter], stage 'parse'

Records of a topic in `cdc_topics` are Debezium envelopes (JSON converter, schemas disabled), others direct JSON
events (`schemas.DirectEvent`). CDC `c`/`r` give the event, `u` a newer version of it (higher `source_lsn`),
`d` and tombstones are skipped and counted (removing a row is not engagement), `t`/`m` are dead letters
(`unsupported_op`). Rejected records carry the original bytes and a reason (docs/pipeline.md, "Dead letters");
limits (`ParseLimits`: record size, events from the future, offsets an operator skips) are checked first.
A `KafkaBatch` (the reader's `batched=True`) gives one `EventBatch` of its events; each record takes a fast path
(`transforms/fast_parse.py`, orjson and plain checks) when it certainly is a valid event, else the same
`guarded_parse` as a single record: the same events, dead letters and reasons either way. No record can fail a
bundle: any other error parsing one record becomes an `unexpected_error` dead letter naming the exception. Only
the parsing is guarded, not the hand-over of its result: an error downstream is that step's own, and fails the
bundle as it should.
"""
from __future__ import annotations

import collections
import json
import logging
from collections.abc import Collection
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from connectors import metrics
from schemas import dead_letter as reasons
from schemas.coders import carries_batches
from schemas.dead_letter import DEAD_LETTERS, DeadLetter
from schemas.debezium import DebeziumEnvelope
from schemas.events import CdcEngagementRow, DirectEvent, EngagementEvent, EventBatch, IngestedEvent
from schemas.kafka import KafkaBatch, KafkaRecord
from schemas.trusted import trusted
from schemas.types import INT64_MAX
from transforms.fast_parse import fast_fields
from transforms.runtime import tune_garbage_collector

EVENTS = 'events'

_CDC_ENVELOPE = DebeziumEnvelope[CdcEngagementRow]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_MILLISECOND = timedelta(milliseconds=1)
_MAX_ERROR_CHARS = 500
_BOM = b'\xef\xbb\xbf'
_WHITESPACE = b' \t\r\n'
_LOG = logging.getLogger(__name__)

# Kafka's default maximum message size is 1 MiB (broker message.max.bytes): records are accepted up to half of it,
# far above a real event (~400 bytes) and low enough that their dead letters stay readable.
DEFAULT_MAX_RECORD_BYTES = 512 * 1024
DEFAULT_MAX_FUTURE_SECONDS = 300


class Coordinates(NamedTuple):
    """Where a record lives in Kafka."""
    topic: str
    partition: int
    offset: int


class ParseLimits(NamedTuple):
    """What a record may be: at most `max_record_bytes` (key + value), its event at most `max_future_seconds`
    ahead of the reader's clock; records at the coordinates in `skip` are dead-lettered unread."""
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_future_seconds: float = DEFAULT_MAX_FUTURE_SECONDS
    skip: frozenset = frozenset()


def parse_skip_offsets(text: str) -> frozenset:
    """'topic:partition:offset,...' -> frozenset of Coordinates; ValueError naming the bad item. A topic may hold
    ':' itself: the last two fields are the partition and the offset."""
    found = set()
    for item in (part.strip() for part in text.split(',')):
        if not item:
            continue
        topic, _, rest = item.rpartition(':')
        topic, _, partition = topic.rpartition(':')
        if not topic or not partition.isdigit() or not rest.isdigit():
            raise ValueError(f'{item!r}: expected topic:partition:offset, e.g. engagement.raw_events:0:1234')
        found.add(Coordinates(topic, int(partition), int(rest)))
    return frozenset(found)


class Skipped(NamedTuple):
    """A record that is deliberately not an event: 'deleted' (CDC op d) or 'tombstone' (CDC null value)."""
    reason: str


def validation_reason(errors: list[ErrorDetails]) -> str:
    """One reason code for a validation failure; the most fundamental problem wins."""
    found = set()
    for error in errors:
        kind, loc = error['type'], error['loc']
        if kind == 'json_invalid' and 'recursion limit' in error['msg']:
            found.add(reasons.TOO_DEEPLY_NESTED)
        elif kind == 'json_invalid' and not loc:
            found.add(reasons.MALFORMED_JSON)
        elif kind == 'timestamp_out_of_range':
            found.add(reasons.TIMESTAMP_OUT_OF_RANGE)
        elif kind == 'missing':
            found.add(reasons.MISSING_FIELD)
        elif loc and (kind.endswith(('_type', '_parsing')) or
                      kind in ('literal_error', 'timezone_aware', 'json_invalid')):
            found.add(reasons.WRONG_TYPE)
        else:
            found.add(reasons.INVALID_EVENT)
    for reason in (reasons.TOO_DEEPLY_NESTED, reasons.MALFORMED_JSON, reasons.MISSING_FIELD, reasons.WRONG_TYPE,
                   reasons.TIMESTAMP_OUT_OF_RANGE):
        if reason in found:
            return reason
    return reasons.INVALID_EVENT


def describe_errors(errors: list[ErrorDetails]) -> str:
    parts = []
    for error in errors:
        where = '.'.join(str(p) for p in error['loc']) or 'record'
        text = f"{where}: {error['msg']}"
        if error['type'] not in ('missing', 'json_invalid') and error['loc'] and 'input' in error:
            text += f" (got {error['input']!r:.60})"
        parts.append(text)
    text = '; '.join(parts)
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS - 1] + '…'


def _as_id(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value <= INT64_MAX else None


def _loads(raw: bytes | None) -> Any:
    try:
        return json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError):
        return None


def _best_effort_id(record: KafkaRecord, cdc: bool, read_value: bool = True) -> int | None:
    """The event id of a rejected record if it can be read at all (for correlating dead letters with what was
    sent): from the value, else from the key (Debezium's {"id": N}; direct producers use the id as key).
    `read_value=False` for a value that is not to be parsed again (too large, too deep)."""
    value = _loads(record.value) if read_value else None
    if isinstance(value, dict):
        row = (value.get('after') or value.get('before')) if cdc else value
        if isinstance(row, dict) and _as_id(row.get('id')) is not None:
            return row['id']
    key = _loads(record.key) if record.key is not None and len(record.key) <= 1024 else None
    return _as_id(key.get('id') if isinstance(key, dict) else key)


def _ingest_ts_of(timestamp_ms: int) -> datetime | None:
    try:
        return _EPOCH + timedelta(milliseconds=timestamp_ms) if timestamp_ms >= 0 else None
    except OverflowError:  # not a time at all; our reader never hands one on (it caps stamps at its clock)
        return None


def _ingest_ts(record: KafkaRecord) -> datetime | None:
    return _ingest_ts_of(record.timestamp_ms)


def _reader_clock_ms(record: KafkaRecord, now: datetime) -> int:
    """The reader's clock for `record`: its Kafka timestamp, capped at `now` (the wall clock)."""
    now_ms = (now - _EPOCH) // _MILLISECOND
    return min(record.timestamp_ms, now_ms) if record.timestamp_ms >= 0 else now_ms


def _ingested(event: EngagementEvent, record: KafkaRecord, source: str, lsn: int | None) -> IngestedEvent:
    # The event's fields were validated just now; constructing without a second validation keeps the hot path
    # cheap. The added fields come from the Kafka client and are typed by KafkaRecord.
    return trusted(IngestedEvent, {**event.__dict__, 'source': source, 'source_topic': record.topic,
                                   'source_partition': record.partition, 'source_offset': record.offset,
                                   'source_lsn': lsn, 'ingest_ts': _ingest_ts(record),
                                   'watermark_ms': record.watermark_ms})


def event_timestamp(event: EngagementEvent) -> Timestamp:
    """The event's Beam timestamp (event_ts, exact to the microsecond). `Timestamp.from_utc_datetime` gives the
    same value at six times the cost (it compares time zones through pytz)."""
    return Timestamp(micros=(event.event_ts - _EPOCH) // _MICROSECOND)


def parse_record(record: KafkaRecord, cdc_topics: Collection[str], now: datetime,
                 limits: ParseLimits = ParseLimits()) -> IngestedEvent | DeadLetter | Skipped:
    """Parse one Kafka record. `now` stamps dead letters (their failure time) and caps the reader's clock."""
    cdc = record.topic in cdc_topics

    def dead(reason: str, error: str, read_value: bool = True) -> DeadLetter:
        return DeadLetter.for_record(record, stage='parse', reason=reason, error=error, now=now,
                                     event_id=_best_effort_id(record, cdc, read_value))

    if limits.skip and Coordinates(record.topic, record.partition, record.offset) in limits.skip:
        return dead(reasons.SKIPPED_BY_OPERATOR, 'skipped by the operator (--skip_offsets); not processed',
                    read_value=False)
    value = record.value
    if value is None:
        if cdc:
            return Skipped('tombstone')
        return dead(reasons.EMPTY_PAYLOAD, 'record has no value (null); expected a JSON event')
    size = len(value) + len(record.key or b'')
    if size > limits.max_record_bytes:
        return dead(reasons.PAYLOAD_TOO_LARGE, f'record of {size:,} bytes (key + value) is larger than the '
                                               f'{limits.max_record_bytes:,} bytes accepted (--max_record_bytes)',
                    read_value=False)
    if not value or (value[0] in _WHITESPACE and not value.strip(_WHITESPACE)):
        return dead(reasons.EMPTY_PAYLOAD, 'record value is empty; expected a JSON event')
    if value.startswith(_BOM):
        value = value[len(_BOM):]
    event: EngagementEvent
    lsn: int | None = None
    try:
        if cdc:
            envelope = _CDC_ENVELOPE.model_validate_json(value)
        else:
            event = DirectEvent.model_validate_json(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        reason = validation_reason(errors)
        return dead(reason, describe_errors(errors), read_value=reason != reasons.TOO_DEEPLY_NESTED)
    if cdc:
        if envelope.op == 'd':
            return Skipped('deleted')
        if envelope.op not in ('c', 'r', 'u'):
            return dead(reasons.UNSUPPORTED_OP, f'CDC operation {envelope.op!r} is not an engagement event '
                                                f'(expected c, r, u or d)')
        if envelope.after is None:
            return dead(reasons.INVALID_EVENT, f'CDC operation {envelope.op!r} without an "after" row')
        event, lsn = envelope.after, envelope.source.lsn
    clock_ms = _reader_clock_ms(record, now)
    ahead_us = (event.event_ts - _EPOCH) // _MICROSECOND - clock_ms * 1000
    if ahead_us > limits.max_future_seconds * 1_000_000:
        return dead(reasons.FUTURE_EVENT, f'event_ts {event.event_ts.isoformat()} is {ahead_us / 1e6:,.0f} s ahead '
                                          f'of the reader\'s clock ({_EPOCH + timedelta(milliseconds=clock_ms)}); '
                                          f'at most {limits.max_future_seconds:g} s are accepted '
                                          f'(--max_future_seconds)')
    return _ingested(event, record, 'cdc' if cdc else 'direct', lsn)


def guarded_parse(record: KafkaRecord, cdc_topics: Collection[str], now: datetime,
                  limits: ParseLimits = ParseLimits()) -> IngestedEvent | DeadLetter | Skipped:
    """`parse_record`, with any exception it raises turned into an `unexpected_error` dead letter."""
    try:
        return parse_record(record, cdc_topics, now, limits)
    except Exception as exc:  # noqa: BLE001 - a record's content must never fail the bundle (module docstring)
        return unexpected_error_letter(record, exc, now)


def unexpected_error_letter(record: KafkaRecord, exc: BaseException, now: datetime) -> DeadLetter:
    """The dead letter of a record whose parsing raised `exc`. Built without parsing anything again."""
    error = f'{type(exc).__name__} while parsing: {str(exc)[:300]}'
    return DeadLetter.for_record(record, stage='parse', reason=reasons.UNEXPECTED_ERROR, error=error, now=now)


class ParseEventsFn(beam.DoFn):
    """KafkaRecord -> IngestedEvent at event time (main output) or DeadLetter (tagged `dead_letters`)."""

    def __init__(self, cdc_topics: Collection[str], limits: ParseLimits = ParseLimits(), gc_threshold: int = 0):
        self._cdc_topics = frozenset(cdc_topics)
        self._limits = limits
        self._gc_threshold = gc_threshold
        self._counters: dict[str, Any] = {}
        self._logged: set[str] = set()

    def setup(self):
        tune_garbage_collector(self._gc_threshold)

    def start_bundle(self):
        # Counted per bundle: a metric update costs about a microsecond, a tenth of the parsing itself.
        self._counts = collections.Counter()

    def process(self, record: KafkaRecord | KafkaBatch):
        if isinstance(record, KafkaBatch):
            yield from self._process_batch(record)
            return
        result = guarded_parse(record, self._cdc_topics, datetime.now(timezone.utc), self._limits)
        if isinstance(result, IngestedEvent):
            self._counts['events_' + result.source] += 1
            yield TimestampedValue(result, event_timestamp(result))
        else:
            yield from self._not_an_event(result)

    def _not_an_event(self, result: DeadLetter | Skipped):
        if isinstance(result, DeadLetter):
            self._counts['dead_letter_' + result.reason] += 1
            if result.reason == reasons.UNEXPECTED_ERROR:
                self._log_unexpected(result)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, result)
        else:
            self._counts['skipped_' + result.reason] += 1

    def _process_batch(self, batch: KafkaBatch):
        """A poll's records -> one EventBatch of its events, and a dead letter per rejected record. Each record takes
        the fast path (`transforms.fast_parse`) when it certainly is a valid event, else `guarded_parse` as above."""
        now = datetime.now(timezone.utc)
        now_ms = (now - _EPOCH) // _MILLISECOND
        cdc = batch.topic in self._cdc_topics
        source = 'cdc' if cdc else 'direct'
        limits = self._limits
        skip, max_bytes, max_future_us = limits.skip, limits.max_record_bytes, limits.max_future_seconds * 1_000_000
        topic, partition, watermark_ms = batch.topic, batch.partition, batch.watermark_ms
        events = []
        last_stamp, ingest_ts = None, None   # records of a backlog share their millisecond by the dozen
        for i, (offset, key, value, stamp) in enumerate(zip(batch.offsets, batch.keys, batch.values,
                                                             batch.timestamps_ms)):
            found = None
            if value is not None and len(value) + (len(key) if key is not None else 0) <= max_bytes and not (
                    skip and Coordinates(topic, partition, offset) in skip):
                try:
                    found = fast_fields(value, cdc, min(stamp, now_ms) if stamp >= 0 else now_ms, max_future_us)
                    if found is not None:
                        fields, lsn = found
                        if stamp != last_stamp:
                            last_stamp, ingest_ts = stamp, _ingest_ts_of(stamp)
                        fields['source'], fields['source_topic'], fields['source_partition'] = source, topic, partition
                        fields['source_offset'], fields['source_lsn'], fields['ingest_ts'] = offset, lsn, ingest_ts
                        fields['watermark_ms'] = watermark_ms
                        events.append(trusted(IngestedEvent, fields))
                except Exception:  # noqa: BLE001 - the careful path below gives the record's verdict
                    found = None
            if found is None:
                result = guarded_parse(batch.record(i), self._cdc_topics, now, limits)
                if isinstance(result, IngestedEvent):
                    events.append(result)
                else:
                    yield from self._not_an_event(result)
        if events:
            self._counts['events_' + source] += len(events)
            yield EventBatch(events)

    def _log_unexpected(self, letter: DeadLetter) -> None:
        kind = letter.error.split(' ', 1)[0]
        if kind in self._logged:
            return
        self._logged.add(kind)
        _LOG.error(json.dumps({'event': 'parse_unexpected_error', 'exception': kind, 'error': letter.error,
                               'topic': letter.source_topic, 'partition': letter.source_partition,
                               'offset': letter.source_offset, 'note': 'dead-lettered; logged once per kind'}))

    def finish_bundle(self):
        for name, count in self._counts.items():
            if name.startswith('events_'):
                metrics.EVENTS_PARSED.inc(count, source=name[len('events_'):])
                continue
            if name not in self._counters:
                self._counters[name] = Metrics.counter(self.__class__, name)
            self._counters[name].inc(count)


class ParsedEvents(NamedTuple):
    events: beam.PCollection        # IngestedEvent, timestamped with event_ts
    dead_letters: beam.PCollection  # DeadLetter, stage 'parse'


class ParseEvents(beam.PTransform):
    """PCollection[KafkaRecord] -> ParsedEvents(events, dead_letters)."""

    def __init__(self, cdc_topics: Collection[str] = (), limits: ParseLimits = ParseLimits(), gc_threshold: int = 0):
        super().__init__()
        self._cdc_topics = tuple(cdc_topics)
        self._limits = limits
        self._gc_threshold = gc_threshold   # the worker process's (transforms/runtime.py); 0 leaves it alone

    def expand(self, records) -> ParsedEvents:
        parse = beam.ParDo(ParseEventsFn(self._cdc_topics, self._limits, self._gc_threshold))
        if carries_batches(records):
            parse = parse.with_output_types(EventBatch)
        outputs = records | 'ParseAndValidate' >> parse.with_outputs(DEAD_LETTERS, main=EVENTS)
        return ParsedEvents(outputs[EVENTS], outputs[DEAD_LETTERS])
