"""The Beam coder of the batch elements (`KafkaBatch`, `EventBatch`): pickle, with a size estimate that costs
nothing.

Beam's SDK samples the elements of every PCollection to estimate their byte size (the first ten of each call of
the Kafka reader, then ever fewer), by encoding them. The default coder of a type it does not know pickles the
element, and a batch holds hundreds of events: the estimate cost as much as 3% of the worker's CPU on a backlog
(py-spy). Within a fused stage (reader -> parse -> enrich -> windows) batches are never encoded; across a stage
boundary they are pickled like any other Python object.
"""
from __future__ import annotations

import pickle

import apache_beam as beam

from schemas.events import EventBatch
from schemas.kafka import KafkaBatch

_ESTIMATED_BYTES_PER_ITEM = 400   # a real event, as a record or a model (~300-500 bytes)


class BatchCoder(beam.coders.Coder):
    """Pickles a batch; estimates its size from its length without encoding it."""

    def encode(self, value) -> bytes:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes):
        return pickle.loads(encoded)

    def estimate_size(self, value) -> int:
        if type(value) is EventBatch:
            return _ESTIMATED_BYTES_PER_ITEM * len(value.events)
        if type(value) is KafkaBatch:
            return _ESTIMATED_BYTES_PER_ITEM * len(value.offsets)
        return len(self.encode(value))

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return EventBatch | KafkaBatch

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


for _batch_type in (KafkaBatch, EventBatch):
    beam.coders.registry.register_coder(_batch_type, BatchCoder)


def carries_batches(pcoll) -> bool:
    """Whether a PCollection's elements are batches (its declared element type), so that a transform declares
    EventBatch for what it hands on (and Beam picks BatchCoder for it)."""
    return pcoll.element_type in (KafkaBatch, EventBatch)
