"""Per-content engagement per event-time window, live: early panes, an on-time pane, late panes; events later
than the allowed lateness go to the dead letters as `too_late` instead of being dropped silently.

    result = enriched | ContentStatsPerWindow(window_seconds=60, early_firing_seconds=1, allowed_lateness_seconds=300)
    result.stats         # PCollection[ContentWindowStats], one per pane per (content, window)
    result.dead_letters  # PCollection[DeadLetter], stage 'window', reason 'too_late'

    events -> RouteTooLateEvents -> CombineWithinBundle (per shard of contents) -> FixedWindows
           -> CountDistinctEventsPerContent -> ToContentWindowStats (one per content)

`FixedWindows` with `AfterWatermark(early=AfterProcessingTime (aligned), late=AfterCount(1))` in accumulating
mode; a `CombineFn` over packed partials (`transforms/partials.py`) that counts each event id once. Events are too
late when their window's deadline is at or behind the watermark the Kafka reader stamped on them. Why it is built
this way (exactness of the too-late rule, combining within bundles, shards of contents, no state and timers):
docs/pipeline.md, "How the windows are computed".
"""
from __future__ import annotations

import zlib
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger
from apache_beam.transforms.window import FixedWindows, GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from connectors import metrics
from schemas import dead_letter as reasons
from schemas.coders import carries_batches
from schemas.dead_letter import DEAD_LETTERS, DeadLetter
from schemas.events import EnrichedEvent, EventBatch
from schemas.stats import ContentWindowStats
from transforms.partials import PartialBuilder, compact, totals_of

ON_TIME = 'on_time'

_PANE_TIMING = {0: 'EARLY', 1: 'ON_TIME', 2: 'LATE'}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


class ContentStatsPerWindowOutputs(NamedTuple):
    stats: beam.PCollection
    dead_letters: beam.PCollection


def _iso(micros: int) -> str:
    try:
        return Timestamp(micros=micros).to_utc_datetime(has_tz=True).isoformat()
    except (OverflowError, ValueError):  # a window ending after year 9999 (ParseEvents refuses such events)
        return f'{micros} µs since the epoch'


class _FixedWindowArithmetic:
    """FixedWindows(size, offset).assign in integer microseconds, from the event's `event_ts` (the element
    timestamp ParseEvents gives it). The window of every event is needed twice per event; `WindowFn.assign` costs
    more than the rest of the routing, and so does asking Beam for the element timestamp (a DoFn with a
    TimestampParam takes Beam's slower per-window invocation path)."""

    def __init__(self, window_fn: FixedWindows):
        self.size = window_fn.size.micros
        self.offset = window_fn.offset.micros

    def start(self, event: EnrichedEvent) -> int:
        micros = (event.event_ts - _EPOCH) // _MICROSECOND
        return micros - (micros - self.offset) % self.size


# -- too-late routing ---------------------------------------------------------------------------------------

class RouteTooLateFn(beam.DoFn):
    """EnrichedEvent -> the event (main) or a `too_late` DeadLetter (tagged), by the reader's watermark stamp."""

    def __init__(self, window_fn: FixedWindows, allowed_lateness_seconds: int, closed_before_ms: int | None = None):
        self._windows = _FixedWindowArithmetic(window_fn)
        self._lateness_seconds = allowed_lateness_seconds
        self._closed_before_us = None if closed_before_ms is None else closed_before_ms * 1000
        self._unchecked = Metrics.counter(self.__class__, 'passed_unchecked')
        self._too_late = Metrics.counter(self.__class__, f'dead_letter_{reasons.TOO_LATE}')

    def process(self, event: EnrichedEvent | EventBatch):
        if not isinstance(event, EventBatch):
            letter = self._too_late_letter(event)
            yield event if letter is None else beam.pvalue.TaggedOutput(DEAD_LETTERS, letter)
            return
        on_time = []
        for one in event.events:
            letter = self._too_late_letter(one)
            if letter is None:
                on_time.append(one)
            else:
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, letter)
        if len(on_time) == len(event.events):
            yield event
        elif on_time:
            yield EventBatch(on_time)

    def _too_late_letter(self, event: EnrichedEvent) -> DeadLetter | None:
        """None when the event is on time, else its too_late dead letter."""
        start = self._windows.start(event)
        end = start + self._windows.size
        if self._closed_before_us is not None and end <= self._closed_before_us:
            self._too_late.inc()
            return (DeadLetter.for_event(
                event, stage='window', reason=reasons.TOO_LATE, now=datetime.now(timezone.utc),
                error=(f'event_ts {event.event_ts.isoformat()}: its window [{_iso(start)}, {_iso(end)}) was final '
                       f'before the pipeline restarted (replay point {_iso(self._closed_before_us)})')))
        watermark_ms = event.watermark_ms
        if watermark_ms is None:
            self._unchecked.inc()
            return None
        deadline = start + self._windows.size - 1 + self._lateness_seconds * 1_000_000
        if deadline > watermark_ms * 1000:
            return None
        self._too_late.inc()
        return DeadLetter.for_event(
            event, stage='window', reason=reasons.TOO_LATE, now=datetime.now(timezone.utc),
            error=(f'event_ts {event.event_ts.isoformat()} is beyond the allowed lateness: its window '
                   f'[{_iso(start)}, {_iso(end)}) closed for late data at {_iso(deadline + 1)} '
                   f'(end + {self._lateness_seconds} s) and the watermark had reached {_iso(watermark_ms * 1000)}'))


class RouteTooLateEvents(beam.PTransform):
    """EnrichedEvent -> outputs `on_time` (events the windows will count) and `dead_letter` (too_late)."""

    def __init__(self, window_fn: FixedWindows, allowed_lateness_seconds: int, closed_before_ms: int | None = None):
        super().__init__()
        self._fn = RouteTooLateFn(window_fn, allowed_lateness_seconds, closed_before_ms)

    def expand(self, events):
        route = beam.ParDo(self._fn)
        if carries_batches(events):
            route = route.with_output_types(EventBatch)
        return events | 'CompareWithReaderWatermark' >> route.with_outputs(DEAD_LETTERS, main=ON_TIME)


_COMPACT_AFTER = 32  # partials an accumulator collects before it merges them into one


def shard_of(content_id: str, shards: int) -> int:
    """The GroupByKey key of a content: a stable hash of its id, modulo `shards`."""
    return zlib.crc32(content_id.encode()) % shards


class CombineWithinBundleFn(beam.DoFn):
    """EnrichedEvents (any windowing) -> (shard, partial), one per (shard, window) of the bundle, emitted at the end
    of the bundle at the window's max timestamp (in the global window; the windowing downstream assigns the same
    window again from that timestamp)."""

    def __init__(self, window_fn: FixedWindows, shards: int):
        self._windows = _FixedWindowArithmetic(window_fn)
        self._shards = shards

    def start_bundle(self):
        self._partials = {}
        self._shard_of = {}

    def process(self, event: EnrichedEvent | EventBatch):
        events: list[EnrichedEvent] = event.events if isinstance(event, EventBatch) else [event]
        for one in events:
            content_id = one.content_id
            shard = self._shard_of.get(content_id)
            if shard is None:
                shard = self._shard_of[content_id] = shard_of(content_id, self._shards)
            key = (self._windows.start(one), shard)
            builder = self._partials.get(key)
            if builder is None:
                builder = self._partials[key] = PartialBuilder()
            builder.add(one)

    def finish_bundle(self):
        partials, self._partials = self._partials, {}
        size = self._windows.size
        if partials:
            metrics.EVENTS_COUNTED.inc(sum(len(builder.rows) for builder in partials.values()))
        for (start, shard), builder in partials.items():
            yield WindowedValue((shard, builder.partial()), Timestamp(micros=start + size - 1), (GlobalWindow(),))


class ContentStatsFn(beam.CombineFn):
    """Partials of one group of contents and window -> {content_id: totals} (dicts of ContentWindowStats fields,
    without the window). Idempotent per event id, whatever the order of inputs and merges. The accumulator is a
    list of partials, merged into one (`compact`, vectorized) when it grows and when the output is extracted."""

    def create_accumulator(self) -> list:
        return []

    def add_input(self, accumulator: list, partial: tuple) -> list:
        accumulator.append(partial)
        if len(accumulator) > _COMPACT_AFTER:
            accumulator[:] = [compact(accumulator)]
        return accumulator

    def merge_accumulators(self, accumulators) -> list:
        merged = [partial for accumulator in accumulators for partial in accumulator]
        return [compact(merged)] if len(merged) > _COMPACT_AFTER else merged

    def compact(self, accumulator: list) -> list:
        return [compact(accumulator)] if len(accumulator) > 1 else accumulator

    def extract_output(self, accumulator: list) -> dict:
        return totals_of(compact(accumulator)) if accumulator else {}


class ToContentWindowStatsFn(beam.DoFn):
    """(shard, {content_id: totals}) in a window pane -> one ContentWindowStats per content of the shard."""

    def process(self, element, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        _, by_content = element
        start, end = window.start.micros // 1_000_000, window.end.micros // 1_000_000
        timing = _PANE_TIMING.get(pane.timing, 'UNKNOWN')
        for content_id, figures in by_content.items():
            yield ContentWindowStats(window_start=start, window_end=end, content_id=content_id, pane_timing=timing,
                                     pane_index=pane.index, **figures)


class AfterProcessingTimeMillis(trigger.AfterProcessingTime):
    """`AfterProcessingTime` to the millisecond, optionally aligned to a grid of its period: the portable form of
    Java's `AfterProcessingTime.pastFirstElementInPane().alignedTo(period)`, which the Python SDK (2.77) lacks.

    Aligned (`aligned=True`): a pane fires at the first multiple of the period (epoch ms) after its first element,
    so the early panes of all keys fire together, once per period. Prism schedules a firing per distinct firing
    time, and each wakes its scheduling loop over the aggregation: with a delay counted from each key's first
    element, 200 contents meant ~200 firings a second; aligned, one (Prism's CPU fell by ~10%, p99 by ~0.2 s).
    An element waits up to one period (half on average) for its pane, and the pipeline's reader hands its records
    on just before each grid point (connectors/kafka/reader.py, "Throughput"). Prism labels panes oddly when aligned
    (it restarts the delay from the last element's time: a late element may get an EARLY, an ON_TIME and a LATE
    pane); the figures of every pane are right, and labels are informative only (schemas/stats.py).
    Delayed (`aligned=False`): Beam's own semantics, written as integral milliseconds (Beam's own writes
    `delay * 1000` into the proto's int64 `delay_millis`, so 0.5 s fails to translate).

    Runners that evaluate triggers themselves read the proto as written (Prism, Flink, Dataflow). A pipeline the
    Python SDK round-trips through its own trigger classes (it does so for DataflowRunner) comes back as Beam's
    `AfterProcessingTime` with whole seconds and no alignment: use `aligned=False` and whole seconds there."""

    def __init__(self, delay_seconds: float, aligned: bool = False):
        millis = round(delay_seconds * 1000)
        if millis < 1:
            raise ValueError(f'AfterProcessingTimeMillis: delay must be at least 1 ms, got {delay_seconds!r} s')
        super().__init__(delay=millis / 1000)
        self.millis = millis
        self.aligned = aligned

    def __repr__(self):
        return f'AfterProcessingTimeMillis({"aligned to" if self.aligned else "delay"} {self.millis} ms)'

    def __eq__(self, other):
        return type(self) is type(other) and (self.millis, self.aligned) == (other.millis, other.aligned)

    def __hash__(self):
        return hash((type(self), self.millis, self.aligned))

    def to_runner_api(self, unused_context):
        from apache_beam.portability.api import beam_runner_api_pb2
        transform = beam_runner_api_pb2.TimestampTransform
        if self.aligned:
            step = transform(align_to=transform.AlignTo(period=self.millis, offset=0))
        else:
            step = transform(delay=transform.Delay(delay_millis=self.millis))
        return beam_runner_api_pb2.Trigger(after_processing_time=beam_runner_api_pb2.Trigger.AfterProcessingTime(
            timestamp_transforms=[step]))


class ContentStatsPerWindow(beam.PTransform):
    """EnrichedEvent -> ContentWindowStats per pane, plus `too_late` dead letters. Events are windowed by their
    `event_ts` (the element timestamp ParseEvents gives them; the element timestamp itself is not read).

    window_seconds: width of the event-time windows; early_firing_seconds: period of early panes in seconds of
    processing time, to the millisecond (0.25 is fine), None for no early panes (bounded runs);
    allowed_lateness_seconds: how long after its end a window still takes late events (later ones: see the
    module docstring); closed_before_ms: after a restart, windows ending at or before this time (epoch ms) were
    final before it, and their events are too_late whatever the watermark (see pipelines.engagement);
    aligned_early_firings: early panes on the grid of the period, all keys together (default), or one period
    after the first element of each pane, Beam's default (needed where the SDK round-trips triggers through its
    own classes, i.e. on Dataflow: see AfterProcessingTimeMillis)."""

    def __init__(self, window_seconds: int = 60, early_firing_seconds: float | None = 1,
                 allowed_lateness_seconds: int = 300, closed_before_ms: int | None = None,
                 aligned_early_firings: bool = True, shards: int = 8):
        super().__init__()
        for name, value, low in (('window_seconds', window_seconds, 1),
                                 ('allowed_lateness_seconds', allowed_lateness_seconds, 0), ('shards', shards, 1)):
            if type(value) is not int or value < low:
                raise ValueError(f'ContentStatsPerWindow: {name} must be an integer >= {low}, got {value!r}')
        if early_firing_seconds is not None and (type(early_firing_seconds) not in (int, float)
                                                 or not early_firing_seconds >= 0.001):
            raise ValueError(f'ContentStatsPerWindow: early_firing_seconds must be a number of seconds >= 0.001 '
                             f'(or None), got {early_firing_seconds!r}')
        self._window_fn = FixedWindows(window_seconds)
        self._early_firing_seconds = early_firing_seconds
        self._aligned = aligned_early_firings
        self._shards = shards
        self._allowed_lateness_seconds = allowed_lateness_seconds
        self._closed_before_ms = closed_before_ms

    def _trigger(self):
        if self._early_firing_seconds is None:
            return trigger.AfterWatermark(late=trigger.AfterCount(1))
        return trigger.AfterWatermark(early=AfterProcessingTimeMillis(self._early_firing_seconds, self._aligned),
                                      late=trigger.AfterCount(1))

    def expand(self, events):
        routed = events | 'RouteTooLateEvents' >> RouteTooLateEvents(self._window_fn, self._allowed_lateness_seconds,
                                                                     self._closed_before_ms)
        stats = (routed[ON_TIME]
                 | 'CombineWithinBundle' >> beam.ParDo(CombineWithinBundleFn(self._window_fn, self._shards))
                 | 'FixedWindows' >> beam.WindowInto(
                     self._window_fn, trigger=self._trigger(),
                     accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                     allowed_lateness=self._allowed_lateness_seconds)
                 | 'CountDistinctEventsPerContent' >> beam.CombinePerKey(ContentStatsFn())
                 | 'ToContentWindowStats' >> beam.ParDo(ToContentWindowStatsFn()))
        return ContentStatsPerWindowOutputs(stats=stats, dead_letters=routed[DEAD_LETTERS])
