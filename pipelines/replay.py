"""Restart and replay: where a pipeline started with `--start_offset=committed` resumes, and what it skips.

Exactly-once in effect. Runner state is lost when a local pipeline is killed, so the effects are built to be
recomputed: the Redis sink writes absolute values per (window, content), and on a start with
`--start_offset=committed` the reader replays from a window-aligned point early enough to recompute every window
that was not final at the last commit:

    replay_from = align_down(min committed watermark - allowed lateness - replay margin, window)

The reader starts each partition at the first record whose Kafka timestamp is at or after
`replay_from - max_future_seconds` (or its committed offset if that is earlier): the parser accepts an event stamped
up to `--max_future_seconds` ahead of its record's timestamp (a producer's clock ahead of the broker's), so an event
of a recounted window may sit in Kafka that much before `replay_from`; starting at `replay_from` itself would recount
such a window short. Windows that end at or before `replay_from` were final before the crash and must not be overwritten
by a partial recount: their events before the committed offset were handled completely and are skipped (counter
`already_final`); their events at or after it were never processed, so they reach the event sinks (API,
BigQuery) and, for the windows, go to the dead letters as `too_late`, as they would have without the crash.
Windows from `replay_from` on are recounted from their first event, and the recount overwrites what was there;
the event sinks get those events again and are idempotent on the event id. Debezium's
duplicates (at-least-once) are counted once per event id inside each window. The margin
(`--replay_margin_seconds`, default one window) covers panes that were computed but not yet written when the
pipeline died: a window that became final more than the margin (in event time) before the last offset commit is
assumed written.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from connectors.kafka import committed_positions
from pipelines.options import EngagementOptions
from schemas.events import EventBatch

_LOG = logging.getLogger('pipelines.engagement')
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECOND = timedelta(seconds=1)


def replay_start_ms(positions: dict, window_seconds: int, allowed_lateness_seconds: int,
                    margin_seconds: int) -> int | None:
    """The window-aligned replay point (epoch ms) from the committed positions, or None without commits."""
    watermarks = [wm for _, wm in positions.values() if wm is not None]
    if not watermarks:
        return None
    floor_s = min(watermarks) // 1000 - allowed_lateness_seconds - margin_seconds
    return max(0, floor_s // window_seconds * window_seconds) * 1000


class ReplayPlan(NamedTuple):
    """Where a restart from committed offsets replays from. `from_ms`: the window-aligned replay point (epoch ms);
    windows ending at or before it were final before the restart. `committed`: {(topic, partition): offset}."""
    from_ms: int
    committed: dict
    read_from_ms: int | None = None  # where the readers start by record timestamp; None: from_ms
    reprocess: bool = False          # --start_timestamp: every event of a window before from_ms is skipped


def reader_start_ms(replay_from_ms: int, max_future_seconds: float) -> int:
    """The record timestamp the readers replay from: early enough for every event the parser accepts whose event
    time is at or after `replay_from_ms` (it is at most `max_future_seconds` ahead of its record's timestamp)."""
    return max(0, replay_from_ms - int(max_future_seconds * 1000))


class SkipProcessedEvents(beam.DoFn):
    """Drop replayed events that the run before the restart had handled completely: in a window that was final
    (ends at or before the replay point) and before their partition's committed offset (counted or dead-lettered,
    delivered to every sink). An event of a final window at or after the committed offset was never processed: it
    goes on, so the event sinks get it, and ContentStatsPerWindow routes it to the dead letters as too_late (as a run
    without the restart would have), instead of recounting a final window partially."""

    def __init__(self, replay: ReplayPlan, window_seconds: int):
        self._from_s = replay.from_ms // 1000
        self._window = window_seconds
        self._committed = dict(replay.committed)
        self._reprocess = replay.reprocess
        self._skipped = Metrics.counter('engagement', 'already_final')
        self._before_start = Metrics.counter('engagement', 'before_start')

    def process(self, event, timestamp=beam.DoFn.TimestampParam):
        if not isinstance(event, EventBatch):
            if self._goes_on(event, int(timestamp)):
                yield event
            return
        going_on = [one for one in event.events if self._goes_on(one, (one.event_ts - _EPOCH) // _SECOND)]
        if going_on:
            yield EventBatch(going_on)

    def _goes_on(self, event, event_seconds: int) -> bool:
        window_end = (event_seconds // self._window + 1) * self._window
        if window_end <= self._from_s and self._reprocess:
            self._before_start.inc()  # reprocessing from a time: earlier windows are not this run's business
            return False
        if window_end <= self._from_s and event.source_offset is not None and \
                event.source_offset < self._committed.get((event.source_topic, event.source_partition), -1):
            self._skipped.inc()
            return False
        return True


def plan_reprocess(opts: EngagementOptions) -> ReplayPlan:
    """--start_timestamp: recount every window from the one holding the timestamp, skip earlier ones."""
    window_ms = opts.window_seconds * 1000
    from_ms = opts.start_timestamp_ms() // window_ms * window_ms
    _LOG.info('start: reprocessing from %s (windows from %s on), group %s', opts.start_timestamp, from_ms,
              opts.consumer_group)
    return ReplayPlan(from_ms, {}, reader_start_ms(from_ms, opts.max_future_seconds), reprocess=True)


def plan_replay(opts: EngagementOptions) -> ReplayPlan | None:
    if opts.start_timestamp:
        return plan_reprocess(opts)
    if opts.start_offset != 'committed':
        return None
    positions = committed_positions(opts.kafka_consumer_config(), opts.consumer_group, opts.topics())
    replay_from = replay_start_ms(positions, opts.window_seconds, opts.allowed_lateness_seconds,
                                  opts.replay_margin_seconds)
    _LOG.info('start: group %s, %d committed partitions, replay from %s', opts.consumer_group,
              sum(1 for off, _ in positions.values() if off is not None), replay_from)
    if replay_from is None:
        return None
    return ReplayPlan(replay_from, {tp: offset for tp, (offset, _) in positions.items() if offset is not None},
                      reader_start_ms(replay_from, opts.max_future_seconds))
