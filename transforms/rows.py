"""`ParseRows`: rows of `engagement_events` (a backfill's bounded read, `connectors.postgres.ReadEventRows`) into
the same validated events `ParseEvents` makes of Kafka records, with `source` 'backfill'.

    parsed = rows | ParseRows()
    parsed.events        # PCollection[IngestedEvent], timestamped with event_ts
    parsed.dead_letters  # PCollection[DeadLetter], stage 'parse', the row as JSON for payload

A row the event model refuses (the table's constraints are looser than the model: a NULL content_id, a negative
duration) is a dead letter with the reason `ParseEvents` would give the same event on the raw topic.
"""
from __future__ import annotations

import collections
import json
from datetime import datetime, timezone
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue
from pydantic import ValidationError

from connectors import metrics
from schemas import dead_letter as reasons
from schemas.dead_letter import DEAD_LETTERS, DeadLetter
from schemas.events import IngestedEvent
from transforms.parse import EVENTS, ParsedEvents, describe_errors, event_timestamp, validation_reason

_NO_SOURCE = {'source': 'backfill', 'source_topic': None, 'source_partition': None, 'source_offset': None,
              'source_lsn': None, 'ingest_ts': None, 'watermark_ms': None}


def parse_row(row: dict[str, Any], now: datetime) -> IngestedEvent | DeadLetter:
    """One row (column -> value) as an event, or its dead letter."""
    try:
        return IngestedEvent.model_validate({**row, **_NO_SOURCE})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        reason = validation_reason(errors)
        error = describe_errors(errors)
    except Exception as exc:  # noqa: BLE001 - a row's content must never fail the bundle
        reason, error = reasons.UNEXPECTED_ERROR, f'{type(exc).__name__} while parsing: {str(exc)[:300]}'
    row_id = row.get('id')
    return DeadLetter(payload=json.dumps(row, default=str), stage='parse', reason=reason, error=error,
                      first_failed_ts=now, last_failed_ts=now,
                      event_id=row_id if type(row_id) is int and row_id >= 0 else None)


class ParseRowsFn(beam.DoFn):
    def start_bundle(self):
        self._counts = collections.Counter()

    def process(self, row: dict[str, Any]):
        result = parse_row(row, datetime.now(timezone.utc))
        if isinstance(result, IngestedEvent):
            self._counts['events'] += 1
            yield TimestampedValue(result, event_timestamp(result))
        else:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, result)

    def finish_bundle(self):
        if self._counts['events']:
            metrics.EVENTS_PARSED.inc(self._counts['events'], source='backfill')


class ParseRows(beam.PTransform):
    """PCollection[dict] (engagement_events rows) -> ParsedEvents(events, dead_letters)."""

    def expand(self, rows) -> ParsedEvents:
        outputs = rows | 'ValidateRows' >> beam.ParDo(ParseRowsFn()).with_outputs(DEAD_LETTERS, main=EVENTS)
        return ParsedEvents(outputs[EVENTS], outputs[DEAD_LETTERS])
