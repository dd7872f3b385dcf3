"""A record the pipeline could not process or deliver, with everything needed to understand and replay it.

Payload encoding: `payload` (and `key`) hold the original bytes as text when they are valid UTF-8 (the normal
case: JSON), so dead letters stay readable and searchable; otherwise both are base64 and `payload_encoding` says
so. Decoding with errors='replace' was rejected because it destroys the bytes one would need to replay the
record. After the parse stage the original Kafka bytes are no longer carried along; the payload is then the
event as the pipeline held it (JSON), and source topic/partition/offset point at the original record.

Size: a dead letter must fit the dead-letter topic (Kafka refuses a record above its `max.message.bytes`, ~1 MB
by default). `fitted(max_bytes)` cuts an oversized payload (and key) to a prefix, keeping the original's size in
bytes and its sha256 (`original_size_bytes`, `original_sha256`, set only when cut), so the record can still be
identified and fetched from its source coordinates.
"""
from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from schemas.events import IngestedEvent
from schemas.kafka import KafkaRecord
from schemas.types import BigInt, UtcDatetime

DEAD_LETTERS = 'dead_letters'  # the tag of every DoFn's dead-letter output, and every composite's field name

Stage = Literal['parse', 'enrich', 'window', 'redis', 'bigquery', 'api']
PayloadEncoding = Literal['utf-8', 'base64']

# Reason codes used by the transforms; sinks add their own (short snake_case machine codes).
MALFORMED_JSON = 'malformed_json'      # not JSON at all (truncated, binary)
EMPTY_PAYLOAD = 'empty_payload'        # a record without a value where an event was expected
MISSING_FIELD = 'missing_field'        # a required field is absent
WRONG_TYPE = 'wrong_type'              # a field has the wrong type or an unparseable value
INVALID_EVENT = 'invalid_event'        # well-typed but not an event (out of range, not an object, no `after`)
UNSUPPORTED_OP = 'unsupported_op'      # a CDC operation that is not engagement (truncate, message)
UNKNOWN_CONTENT = 'unknown_content'    # content id not in the catalogue, even after reloading it
CONTENT_UNAVAILABLE = 'content_unavailable'  # the catalogue could not be reloaded to look the content up
TOO_LATE = 'too_late'                  # event time beyond the window's allowed lateness
TIMESTAMP_OUT_OF_RANGE = 'timestamp_out_of_range'  # event_ts without a UTC instant, or before 1970
TOO_DEEPLY_NESTED = 'too_deeply_nested'  # JSON nested deeper than pydantic-core's parser takes (200 levels)
PAYLOAD_TOO_LARGE = 'payload_too_large'  # record (or event) larger than the configured maximum
FUTURE_EVENT = 'future_event'          # event_ts too far ahead of the reader's clock (--max_future_seconds)
SKIPPED_BY_OPERATOR = 'skipped_by_operator'  # named by --skip_offsets: not processed at all
UNEXPECTED_ERROR = 'unexpected_error'  # processing the record raised an error no rule above names

MAX_DEAD_LETTER_BYTES = 1_000_000  # below Kafka's default max.message.bytes and BigQuery's row limit
_FIT_KEY_CHARS = 1024  # an oversized dead letter keeps at most this much of its key


def _encode(key: bytes | None, value: bytes | None) -> tuple[str | None, str | None, PayloadEncoding]:
    try:
        return (None if key is None else key.decode('utf-8'),
                None if value is None else value.decode('utf-8'), 'utf-8')
    except UnicodeDecodeError:
        b64 = lambda b: None if b is None else base64.b64encode(b).decode('ascii')  # noqa: E731
        return b64(key), b64(value), 'base64'


class DeadLetter(BaseModel):
    """One failed record."""
    model_config = ConfigDict(frozen=True, extra='forbid')

    payload: StrictStr | None = Field(description='The original record value (see payload_encoding), or the '
                                                  'event as JSON after the parse stage.')
    key: StrictStr | None = Field(None, description='The original Kafka key, same encoding as payload.')
    payload_encoding: PayloadEncoding = Field('utf-8', description="'utf-8' (text as is) or 'base64'.")
    stage: Stage = Field(description='Where it failed: parse, enrich, window, redis, bigquery, api.')
    reason: StrictStr = Field(pattern=r'^[a-z][a-z0-9_]{0,63}$', description='Short machine code, e.g. '
                                                                           'malformed_json, too_late.')
    error: StrictStr = Field(description='What went wrong, for a human.')
    attempts: StrictInt = Field(1, ge=1, description='How many times delivery or processing was attempted.')
    first_failed_ts: UtcDatetime = Field(description='First failure (UTC, wall clock).')
    last_failed_ts: UtcDatetime = Field(description='Last failure (UTC, wall clock).')
    event_id: BigInt | None = Field(None, description='Event id, when known.')
    source_topic: StrictStr | None = Field(None, description='Kafka topic of the original record.')
    source_partition: StrictInt | None = Field(None, description='Kafka partition of the original record.')
    source_offset: BigInt | None = Field(None, description='Kafka offset of the original record.')
    original_size_bytes: BigInt | None = Field(None, description='Set when payload was cut to fit: the size of '
                                                                 'the whole payload in bytes.')
    original_sha256: StrictStr | None = Field(None, description='Set when payload was cut to fit: the sha256 '
                                                                '(hex) of the whole payload\'s bytes.')

    @classmethod
    def for_record(cls, record: KafkaRecord, *, stage: Stage, reason: str, error: str, now: datetime,
                   event_id: int | None = None) -> DeadLetter:
        """A dead letter for a Kafka record that failed before it became an event."""
        key, payload, encoding = _encode(record.key, record.value)
        return cls(payload=payload, key=key, payload_encoding=encoding, stage=stage, reason=reason, error=error,
                   first_failed_ts=now, last_failed_ts=now, event_id=event_id, source_topic=record.topic,
                   source_partition=record.partition, source_offset=record.offset)

    @classmethod
    def for_event(cls, event: IngestedEvent, *, stage: Stage, reason: str, error: str, now: datetime,
                  attempts: int = 1) -> DeadLetter:
        """A dead letter for a parsed event (payload: the event as JSON)."""
        return cls(payload=event.model_dump_json(), stage=stage, reason=reason, error=error, attempts=attempts,
                   first_failed_ts=now, last_failed_ts=now, event_id=event.id, source_topic=event.source_topic,
                   source_partition=event.source_partition, source_offset=event.source_offset)

    def idempotency_key(self) -> str:
        """Stable across replays, for a dead-letter sink that must not store a failure twice: the stage plus
        the event id when known, else the record's Kafka coordinates."""
        if self.event_id is not None:
            return f'{self.stage}/{self.reason}/event/{self.event_id}'
        return f'{self.stage}/{self.reason}/kafka/{self.source_topic}/{self.source_partition}/{self.source_offset}'

    def to_json(self) -> str:
        """Compact JSON (timestamps ISO-8601 UTC); `.encode()` it for Kafka."""
        return self.model_dump_json()

    def payload_bytes(self) -> bytes | None:
        """The payload as the bytes it stands for (base64 decoded, or the text as UTF-8)."""
        if self.payload is None:
            return None
        if self.payload_encoding == 'base64':
            return base64.b64decode(self.payload)
        return self.payload.encode('utf-8')

    def fitted(self, max_bytes: int) -> DeadLetter:
        """This dead letter if its JSON is at most `max_bytes` bytes; else a copy whose payload is the longest
        prefix that fits (key cut to 1,024 characters, error to 1,000), with the whole payload's size and sha256."""
        if len(self.to_json().encode('utf-8')) <= max_bytes:
            return self
        whole = self.payload_bytes() or b''
        cut = self.model_copy(update={
            'key': None if self.key is None else self.key[:_FIT_KEY_CHARS],
            'error': self.error[:1000], 'original_size_bytes': self.original_size_bytes or len(whole),
            'original_sha256': self.original_sha256 or hashlib.sha256(whole).hexdigest()})

        def with_prefix(n: int) -> DeadLetter:
            if self.payload_encoding == 'base64':
                payload = base64.b64encode(whole[:n]).decode('ascii')
            else:
                payload = (self.payload or '')[:n]
            return cut.model_copy(update={'payload': payload})

        def size(letter: DeadLetter) -> int:
            return len(letter.to_json().encode('utf-8'))

        low, high = 0, len(whole) if self.payload_encoding == 'base64' else len(self.payload or '')
        if size(with_prefix(0)) > max_bytes:
            raise ValueError(f'a dead letter cannot fit in {max_bytes} bytes even without its payload')
        while low < high:  # the longest prefix whose JSON fits; sizes grow with the prefix
            middle = (low + high + 1) // 2
            if size(with_prefix(middle)) <= max_bytes:
                low = middle
            else:
                high = middle - 1
        return with_prefix(low)
