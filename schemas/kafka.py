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


class KafkaBatch(NamedTuple):
    """The records of one partition from one poll, as columns: one element instead of one per record. The reader
    hands these on with `batched=True`; `record(i)` is the i-th as a KafkaRecord. `watermark_ms` as in
    KafkaRecord (the same for every record of the poll)."""
    topic: str
    partition: int
    offsets: list
    keys: list
    values: list
    timestamps_ms: list
    watermark_ms: int | None = None

    def record(self, i: int) -> KafkaRecord:
        return KafkaRecord(self.topic, self.partition, self.offsets[i], self.keys[i], self.values[i],
                           self.timestamps_ms[i], self.watermark_ms)

    def records(self) -> list[KafkaRecord]:
        return [self.record(i) for i in range(len(self.offsets))]
