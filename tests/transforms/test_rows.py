"""Backfill rows into events: the same validation as the live path, a dead letter with its reason otherwise."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.dead_letter import DeadLetter
from schemas.events import IngestedEvent
from transforms.rows import ParseRows, parse_row

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
ROW = {'id': 41, 'content_id': '6512bd43-d9ca-a6e0-2d8f-9b4c8b5c2a11',
       'user_id': 'c4ca4238-a0b9-2382-0dcc-509a6f75849b', 'event_type': 'play',
       'event_ts': datetime(2026, 12, 1, 8, 30, 5, 123456, tzinfo=timezone.utc),
       'duration_ms': 60_000, 'device': 'web', 'raw_payload': {'referrer': 'push'}}


def test_a_valid_row_is_a_backfill_event_without_kafka_coordinates():
    event = parse_row(dict(ROW), NOW)
    assert isinstance(event, IngestedEvent)
    assert (event.id, event.event_ts, event.raw_payload, event.source) == (41, ROW['event_ts'], {'referrer': 'push'},
                                                                          'backfill')
    assert event.source_topic is None and event.watermark_ms is None and event.ingest_ts is None


@pytest.mark.parametrize('change, reason, named', [
    ({'content_id': None}, 'wrong_type', 'content_id'),
    ({'event_type': 'skip'}, 'wrong_type', 'event_type'),
    ({'duration_ms': -5}, 'invalid_event', 'duration_ms'),
])
def test_a_row_the_event_model_refuses_is_a_parse_dead_letter_with_the_row(change, reason, named):
    letter = parse_row({**ROW, **change}, NOW)
    assert isinstance(letter, DeadLetter)
    assert (letter.stage, letter.reason, letter.event_id) == ('parse', reason, 41)
    assert named in letter.error
    assert json.loads(letter.payload)['id'] == 41 and letter.first_failed_ts == NOW


def test_in_a_pipeline_events_are_at_event_time_and_dead_letters_apart():
    with test_pipeline.TestPipeline(runner='FnApiRunner') as p:
        parsed = p | beam.Create([dict(ROW), {**ROW, 'id': 42, 'event_type': None}]) | ParseRows()
        stamps = parsed.events | beam.Map(lambda e, t=beam.DoFn.TimestampParam: (e.id, t.micros))
        assert_that(stamps, equal_to([(41, int(ROW['event_ts'].timestamp() * 1_000_000))]), label='events')
        assert_that(parsed.dead_letters | beam.Map(lambda d: (d.event_id, d.reason)),
                    equal_to([(42, 'wrong_type')]), label='dead letters')
