"""Restart and replay (pipelines/replay.py): the replay point, and which replayed events are skipped."""
from __future__ import annotations

import json

import pytest
from apache_beam.utils.timestamp import Timestamp

from pipelines.replay import ReplayPlan, SkipProcessedEvents, replay_start_ms
from tests.transforms.builders import ingested


def test_replay_point_is_window_aligned_and_covers_lateness_and_margin():
    positions = {('t', 0): (100, 1_800_000_125_000), ('t', 1): (50, 1_800_000_010_000), ('t', 2): (7, None)}
    start = replay_start_ms(positions, window_seconds=60, allowed_lateness_seconds=600, margin_seconds=60)
    # slowest committed watermark 1_800_000_010 s - 660 s = 1_799_999_350 s, aligned down to a minute
    assert start == 1_799_999_340_000
    assert start % 60_000 == 0
    assert replay_start_ms({('t', 0): (5, None)}, 60, 600, 60) is None
    assert replay_start_ms({}, 60, 600, 60) is None


def test_a_restart_skips_only_events_handled_before_it():
    """Final window + before the committed offset: handled (skipped). Final window at/after the committed offset:
    never processed (goes on, to the event sinks and as too_late). Open window: recounted whatever the offset."""
    fn = SkipProcessedEvents(ReplayPlan(from_ms=120_000, committed={('engagement.raw_events', 0): 100}), 60)

    def passes(ts, offset):
        event = ingested(id=offset, ts=ts, offset=offset)
        return list(fn.process(event, timestamp=Timestamp(ts))) == [event]

    assert not passes(ts=100, offset=99)
    assert passes(ts=100, offset=100)
    assert passes(ts=130, offset=5)


def test_a_restart_rereads_every_event_the_parser_accepts_for_a_recounted_window():
    """An event may be stamped up to --max_future_seconds ahead of its record's Kafka timestamp (a producer's clock
    ahead of the broker's): the readers must start early enough by record timestamp to see every event of a
    window from the replay point on, or the recount of that window comes out short."""
    from datetime import datetime, timezone

    from pipelines.replay import reader_start_ms
    from schemas import IngestedEvent, KafkaRecord
    from tests.schemas import samples
    from transforms.parse import ParseLimits, parse_record

    replay_from_ms = 1_795_522_200_000            # a window start
    limits = ParseLimits(max_future_seconds=300)
    start = reader_start_ms(replay_from_ms, limits.max_future_seconds)
    event_ts = datetime.fromtimestamp(replay_from_ms / 1000, timezone.utc)   # first instant of the window
    value = json.dumps({**samples.DIRECT_EVENT, 'event_ts': event_ts.isoformat()}).encode()
    now = datetime.fromtimestamp(replay_from_ms / 1000 + 3600, timezone.utc)

    def parsed(record_ts_ms):
        return parse_record(KafkaRecord(samples.RAW_TOPIC, 0, 1, None, value, record_ts_ms), (), now, limits)

    # the earliest record the parser accepts for this window is one the readers read again...
    assert isinstance(parsed(start), IngestedEvent) and start < replay_from_ms
    # ...and one stamped any earlier is refused anyway (future_event), so starting earlier would re-read for nothing
    assert parsed(start - 1).reason == 'future_event'
    plan = ReplayPlan(replay_from_ms, {}, start)
    assert plan.read_from_ms == replay_from_ms - 300_000


def test_reprocessing_from_a_time_skips_every_event_of_earlier_windows_and_recounts_the_rest():
    fn = SkipProcessedEvents(ReplayPlan(from_ms=120_000, committed={}, read_from_ms=0, reprocess=True), 60)

    def passes(ts, offset):
        event = ingested(id=offset, ts=ts, offset=offset)
        return list(fn.process(event, timestamp=Timestamp(ts))) == [event]

    assert not passes(ts=100, offset=10_000)   # an earlier window, whatever its offset: not this run's business
    assert passes(ts=120, offset=1) and passes(ts=170, offset=2)


def test_the_start_timestamp_flag_takes_iso_or_epoch_ms_and_refuses_the_future_and_a_start_offset():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.options import EngagementOptions, InvalidOption
    from pipelines.replay import plan_replay

    def opts(*argv):
        return PipelineOptions(list(argv)).view_as(EngagementOptions)

    assert opts('--start_timestamp=2026-12-03T10:00:30Z').start_timestamp_ms() == 1_796_292_030_000
    assert opts('--start_timestamp=2026-12-03T10:00:30').start_timestamp_ms() == 1_796_292_030_000
    assert opts('--start_timestamp=1796292030000').start_timestamp_ms() == 1_796_292_030_000
    plan = plan_replay(opts('--start_timestamp=2026-12-03T10:00:30Z', '--max_future_seconds=300'))
    assert plan == ReplayPlan(1_796_292_000_000, {}, 1_796_291_700_000, reprocess=True)
    for argv, message in ((['--start_timestamp=yesterday'], 'expected ISO-8601'),
                          (['--start_timestamp=2999-01-01T00:00:00Z'], 'is in the future'),
                          (['--start_timestamp=2026-12-03T10:00:00Z', '--start_offset=earliest'],
                           '--start_timestamp sets where to start')):
        with pytest.raises(InvalidOption, match=message):
            opts(*argv).validate()
