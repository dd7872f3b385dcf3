"""From batches of events back to one element per event, for the steps that need them one by one.

    events = batches | 'OneElementPerEvent' >> beam.ParDo(ExplodeEventBatches())

With `--event_batches` the reader hands on a poll's records as one element and parsing, enrichment, the too-late
routing and the windows' pre-aggregation keep them together (`schemas.events.EventBatch`); the event sinks
(BigQuery, the REST API, the per-user Redis lists, pseudonymisation) take one event per element, at its event
time, exactly as they do without batches.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue

from schemas.events import EventBatch
from transforms.parse import event_timestamp


class ExplodeEventBatches(beam.DoFn):
    """EventBatch -> its events, each timestamped with its event_ts; any other element passes as it is."""

    def process(self, element):
        if type(element) is not EventBatch:
            yield element
            return
        for event in element.events:
            yield TimestampedValue(event, event_timestamp(event))
