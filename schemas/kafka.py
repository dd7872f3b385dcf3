"""The one record type the Kafka readers hand to the transforms, whichever client produced it."""
from __future__ import annotations

from typing import NamedTuple


class KafkaRecord(NamedTuple):
    """A consumed Kafka record. `key`/`value` are the raw bytes (None for a null key or a tombstone);
    `timestamp_ms` is the record timestamp (ms since the epoch); `watermark_ms` the reader's output watermark when
    it emitted the record (ms since the epoch, None while unknown)."""
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    watermark_ms: int | None = None
