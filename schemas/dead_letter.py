"""A record the pipeline could not process or deliver, with everything needed to understand and replay it.

Payload encoding: `payload` (and `key`) hold the original bytes as text when they are valid UTF-8 (the normal
case: JSON), so dead letters stay readable and searchable; otherwise both are base64 and `payload_encoding` says
so. Decoding with errors='replace' was rejected because it destroys the bytes one would need to replay the
record. After the parse stage the original Kafka bytes are no longer carried along; the payload is then the
event as the pipeline held it (JSON), and source topic/partition/offset point at the original record.
"""
from __future__ import annotations

import base64
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from schemas.events import IngestedEvent
from schemas.kafka import KafkaRecord
from schemas.types import BigInt, UtcDatetime

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
