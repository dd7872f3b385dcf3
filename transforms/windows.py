"""Per-content engagement per event-time window, live: early panes, an on-time pane, late panes; events later
than the allowed lateness go to the dead letters as `too_late` instead of being dropped silently.

Beam concepts: `FixedWindows` with `AfterWatermark(early=AfterProcessingTime (aligned), late=AfterCount(1))`,
accumulating panes and allowed lateness; a `CombineFn` whose accumulator makes counting idempotent per event id;
a `DoFn` that combines within its bundle and emits at `finish_bundle` with explicit timestamps and windows.

    result = enriched | ContentStatsPerWindow(window_seconds=60, early_firing_seconds=1, allowed_lateness_seconds=300)
    result.stats        # PCollection[ContentWindowStats], one per pane per (content, window)
    result.dead_letters # PCollection[DeadLetter], stage 'window', reason 'too_late'

    events -> RouteTooLateEvents -> CombineWithinBundle (per shard of contents) -> FixedWindows
           -> CountDistinctEventsPerContent -> ToContentWindowStats (one per content)

Too-late detection. Beam's GroupByKey drops an element whose window expired (window end + allowed lateness
behind the watermark), and a Python DoFn cannot read the watermark. The Kafka reader can: it stamps every record
with its output watermark at emission (`KafkaRecord.watermark_ms`, carried as `IngestedEvent.watermark_ms`).
`RouteTooLateEvents` sends an event to the dead letters when its window's deadline (window max timestamp +
allowed lateness) is at or before that watermark, and passes it otherwise. Nothing it passes can be dropped:
  * the routing runs in the reader's bundle (the transforms up to the GroupByKey fuse into the reader's stage:
    no shuffle in between), and a downstream watermark never passes the watermark its upstream reported;
  * the stamped watermark is at least the one the reader reported when the bundle started (the reader's
    watermark only moves forward), and while the bundle runs nothing downstream gets further;
  * Prism decides late drops when the bundle's output is handed to the GroupByKey, against the GroupByKey's
    output watermark before the reader's new watermark is applied (engine/elementmanager.go, PersistBundle and
    aggregateStageKind.addPending): an element whose deadline lies after the stamp is kept.
  So the rule is exact with respect to the reader's watermark; Beam's own would use the GroupByKey's, which lags
  it, so an event within that lag of its deadline goes to the dead letters where Beam might still have taken it:
  conservative, never silent. An event without a stamp (the reader had no watermark yet, or another source)
  passes unchecked (counter `passed_unchecked`): downstream watermarks are then still at their start, so
  nothing can be dropped unless a source that does not stamp runs behind a watermark (TestStream, say): stamp
  such events to have them checked. tests/transforms/test_windows.py pins the reader case on Prism.

Deduplication. Debezium is at-least-once and re-sends rows after a crash; a producer may retry. The accumulator
keeps, per (content, window), one contribution per event id (the newest version by Postgres LSN, then Kafka
offset), so a duplicate never counts twice, and a CDC update of an event replaces its earlier version. This costs
memory proportional to the events per window (37 bytes each), held until the window expires. A
duplicate cannot land in another window or content: it carries the same event_ts and content_id. An update that
changes event_ts or content_id is counted in both places (engagement rows are append-only).

Cost. The trigger's late firing `AfterCount(1)` keeps Prism from lifting the combiner, and in accumulating mode
Prism hands every element of a window to each pane again. So this transform combines within each bundle itself
(`CombineWithinBundle`): the GroupByKey receives one small partial accumulator per key and window and bundle, not
one pickled event per event, and the events cross no stage boundary. A partial packs its events' rows into one
bytes object, column after column (see "counting" below): Beam's fast primitive coder copies it as a whole, and
each pane merges the partials of its window so far with a few numpy operations (concatenate; a stable argsort of
the event ids to find repeated ids; bincounts for the totals). With n bundles per window a window's rows are merged
about n times, but at memory speed: at 500,000 events of backlog the panes re-merged 6.1 million rows in all (12
times each event), ~17% of the pipeline's CPU samples (py-spy). The code of 0611f4f kept each event as a Python
dict entry:
decoding and merging them in Python, the pipeline used 40-80% more CPU for the same backlog, read at ~9,000
events/s instead of ~13,000-16,000 (docs/benchmarks.md, 2026-11-25, 874ef40).
Prism keeps every partial until its window expires (end + allowed lateness) and walks all of them whenever the
input watermark moves or a processing-time firing is due (engine/elementmanager.go,
aggregateStageKind.buildEventTimeBundle). A CPU profile showed that walk at 56% of Prism's CPU, and as the
windows within their allowed lateness filled up, latency at 1,000 events/s grew from 1.1 s to 2.4 s (p50) in
ten minutes (docs/benchmarks.md, 2026-11-25, 0611f4f). Hence, from most to least effect:
  * the key is not the content but one of `shards` groups of contents (`shard_of`): a partial carries the
    contents of its group, and a pane emits one ContentWindowStats per content of the group (a content without
    new events gets its unchanged totals again: an idempotent overwrite). 8 groups
    instead of ~200 contents: Prism holds ~25 times fewer elements (10 CPU-s instead of 55 in an 80 s run);
  * the reader hands its records on once per early-firing period, just before the panes fire
    (connectors/kafka/reader.py), and reports its watermark in whole seconds; a backlog is read in large bundles
    (pipelines/engagement.py);
  * early panes fire on one grid for all keys (AfterProcessingTimeMillis, aligned), not at a time per key.

Why not per-key state and timers instead (a stateful DoFn holding each (content, window)'s accumulator, which
Prism would not walk)? Tried in 0611f4f: Prism 2.77 collects a stateful DoFn's state at the window's end
whatever the allowed lateness (engine/elementmanager.go StageStateful: no windowing strategy), so late panes
would restart from zero; keyed by (content, window) in the global window instead, every firing reads its state
in a blocking call to the runner (Prism gives no cache tokens), and the ~200 firings a second took seconds:
p50 9 s against 1 s here.
"""
from __future__ import annotations

import zlib
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger
from apache_beam.transforms.window import FixedWindows, GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from schemas import dead_letter as reasons
from schemas.dead_letter import DEAD_LETTERS, DeadLetter
from schemas.events import EVENT_TYPES, EnrichedEvent
from schemas.stats import ContentWindowStats

ON_TIME = 'on_time'

_PANE_TIMING = {0: 'EARLY', 1: 'ON_TIME', 2: 'LATE'}
_TYPE_INDEX = {event_type: i for i, event_type in enumerate(EVENT_TYPES)}
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

    def process(self, event: EnrichedEvent):
        start = self._windows.start(event)
        end = start + self._windows.size
        if self._closed_before_us is not None and end <= self._closed_before_us:
            self._too_late.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.for_event(
                event, stage='window', reason=reasons.TOO_LATE, now=datetime.now(timezone.utc),
                error=(f'event_ts {event.event_ts.isoformat()}: its window [{_iso(start)}, {_iso(end)}) was final '
                       f'before the pipeline restarted (replay point {_iso(self._closed_before_us)})')))
            return
        watermark_ms = event.watermark_ms
        if watermark_ms is None:
            self._unchecked.inc()
            yield event
            return
        deadline = start + self._windows.size - 1 + self._lateness_seconds * 1_000_000
        if deadline > watermark_ms * 1000:
            yield event
            return
        self._too_late.inc()
        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.for_event(
            event, stage='window', reason=reasons.TOO_LATE, now=datetime.now(timezone.utc),
            error=(f'event_ts {event.event_ts.isoformat()} is beyond the allowed lateness: its window '
                   f'[{_iso(start)}, {_iso(end)}) closed for late data at {_iso(deadline + 1)} '
                   f'(end + {self._lateness_seconds} s) and the watermark had reached {_iso(watermark_ms * 1000)}')))


class RouteTooLateEvents(beam.PTransform):
    """EnrichedEvent -> outputs `on_time` (events the windows will count) and `dead_letter` (too_late)."""

    def __init__(self, window_fn: FixedWindows, allowed_lateness_seconds: int, closed_before_ms: int | None = None):
        super().__init__()
        self._fn = RouteTooLateFn(window_fn, allowed_lateness_seconds, closed_before_ms)

    def expand(self, events):
        return events | 'CompareWithReaderWatermark' >> beam.ParDo(self._fn).with_outputs(DEAD_LETTERS, main=ON_TIME)


# -- counting -----------------------------------------------------------------------------------------------
#
# A partial: what one bundle saw of one group of contents in one window, a tuple (contents, metas, rows):
#   contents  [content_id, ...]                        the contents the rows refer to, by position;
#   metas     [(event_id, title, content_type), ...]   per content, as carried by its event with the highest id;
#   rows      bytes: one row per event seen (duplicates and versions included), stored column after column
#             (COLUMNS: event id, Postgres LSN, Kafka offset, duration_ms, position in `contents`, type index).
# Tuples, lists, strings and one bytes object: Beam encodes them with its fast primitive coder, and the rows
# cross the shuffle as one copy of memory however many events they hold; each column is read back without a copy.
# Rows are deduplicated when merged (`compact`): one row per event id, the newest version by (LSN, offset), -1
# where unknown.

COLUMNS: tuple[tuple[str, np.dtype[Any]], ...] = (
    ('id', np.dtype('<i8')), ('lsn', np.dtype('<i8')), ('offset', np.dtype('<i8')), ('duration_ms', np.dtype('<i8')),
    ('content', np.dtype('<i4')), ('type', np.dtype('<i1')))
_ROW_BYTES = sum(dtype.itemsize for _, dtype in COLUMNS)
_NO_DURATION = -1           # duration_ms is validated >= 0 (schemas/events.py)
_COMPACT_AFTER = 32         # partials an accumulator collects before it merges them into one


def pack(columns) -> bytes:
    """Columns (in COLUMNS' order, any int sequences of one length) -> rows bytes."""
    return b''.join(np.asarray(values, dtype=dtype).tobytes() for values, (_, dtype) in zip(columns, COLUMNS))


def unpack(rows: bytes) -> dict[str, np.ndarray]:
    """Rows bytes -> {column: read-only array viewing `rows`}."""
    count, at, out = len(rows) // _ROW_BYTES, 0, {}
    for name, dtype in COLUMNS:
        out[name] = np.frombuffer(rows, dtype=dtype, count=count, offset=at)
        at += count * dtype.itemsize
    return out


class PartialBuilder:
    """Collects the events of one (window, group of contents) in a bundle; `partial()` packs them."""
    __slots__ = ('index', 'metas', 'rows')

    def __init__(self):
        self.index: dict[str, int] = {}
        self.metas: list[tuple] = []
        self.rows: list[tuple] = []

    def add(self, event: EnrichedEvent) -> None:
        position = self.index.get(event.content_id)
        if position is None:
            position = self.index[event.content_id] = len(self.metas)
            self.metas.append((event.id, event.content_title, event.content_type))
        elif event.id > self.metas[position][0]:
            self.metas[position] = (event.id, event.content_title, event.content_type)
        self.rows.append((event.id, -1 if event.source_lsn is None else event.source_lsn,
                          -1 if event.source_offset is None else event.source_offset,
                          _NO_DURATION if event.duration_ms is None else event.duration_ms,
                          position, _TYPE_INDEX[event.event_type]))

    def partial(self) -> tuple:
        columns = zip(*self.rows) if self.rows else [()] * len(COLUMNS)
        return list(self.index), self.metas, pack(columns)


def partial_of(events) -> tuple:
    """The partial of `events` (one group of contents, one window)."""
    builder = PartialBuilder()
    for event in events:
        builder.add(event)
    return builder.partial()


def compact(partials: list) -> tuple:
    """One partial holding the rows of all `partials` (left alone), one row per event id: its newest version."""
    index: dict[str, int] = {}
    metas: list[tuple] = []
    chunks: list[list] = [[] for _ in COLUMNS]
    for contents, its_metas, rows in partials:
        positions = np.empty(len(contents), dtype=COLUMNS[4][1])
        for i, (content_id, meta) in enumerate(zip(contents, its_metas)):
            position = index.get(content_id)
            if position is None:
                position = index[content_id] = len(metas)
                metas.append(meta)
            elif meta[0] > metas[position][0]:
                metas[position] = meta
            positions[i] = position
        columns = unpack(rows)
        for chunk, (name, _) in zip(chunks, COLUMNS):
            chunk.append(positions[columns[name]] if name == 'content' else columns[name])
    merged = [np.concatenate(chunk) if chunk else np.empty(0, dtype) for chunk, (_, dtype) in zip(chunks, COLUMNS)]
    keep = _newest_versions(*merged[:3])
    if keep is not None:
        merged = [column[keep] for column in merged]
    return list(index), metas, pack(merged)


def _newest_versions(ids: np.ndarray, lsns: np.ndarray, offsets: np.ndarray) -> np.ndarray | None:
    """A mask of the rows to keep, the newest version of each event id, or None when no id repeats. Duplicates
    are rare (a Debezium restart, a CDC update), so only the rows of repeated ids are sorted by version; ids come
    in ascending runs (Kafka order), which the stable sort (timsort) takes in near-linear time."""
    by_id = np.argsort(ids, kind='stable')
    sorted_ids = ids[by_id]
    repeated = sorted_ids[1:] == sorted_ids[:-1]
    if not repeated.any():
        return None
    involved = np.zeros(len(ids), dtype=bool)
    involved[:-1] |= repeated
    involved[1:] |= repeated
    candidates = by_id[involved]
    ranked = candidates[np.lexsort((offsets[candidates], lsns[candidates], ids[candidates]))]
    ranked_ids = ids[ranked]
    newest = np.append(ranked_ids[1:] != ranked_ids[:-1], True)   # the last row of each id: its newest version
    keep = np.ones(len(ids), dtype=bool)
    keep[candidates] = False
    keep[ranked[newest]] = True
    return keep


def totals_of(partial: tuple) -> dict:
    """{content_id: the window's figures so far} (ContentWindowStats fields without the window and pane) of a
    compacted partial."""
    contents, metas, rows = partial
    columns = unpack(rows)
    n, types = len(contents), len(EVENT_TYPES)
    counts = np.bincount(columns['content'].astype(np.int64) * types + columns['type'], minlength=n * types)
    per_type = counts.reshape(n, types).tolist()
    durations = columns['duration_ms']
    known = durations >= 0
    # Sums of int32-bounded durations: exact in float64 below 2**53 ms, i.e. for over four million events of
    # 24.8 days each in one (content, window); checked rather than assumed.
    engagement = np.bincount(columns['content'][known], weights=durations[known], minlength=n)
    if len(engagement) and engagement.max() >= 2 ** 53:
        raise OverflowError('engagement_ms of a (content, window) exceeds 2**53 ms')
    out: dict[str, dict[str, Any]] = {}
    for content_id, (_, title, content_type), by_type, engagement_ms in zip(contents, metas, per_type,
                                                                            engagement.tolist()):
        out[content_id] = {'events': sum(by_type), 'engagement_ms': int(engagement_ms), 'title': title,
                           'content_type': content_type, **dict(zip(EVENT_TYPES, by_type))}
    return out


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

    def process(self, event: EnrichedEvent):
        content_id = event.content_id
        shard = self._shard_of.get(content_id)
        if shard is None:
            shard = self._shard_of[content_id] = shard_of(content_id, self._shards)
        key = (self._windows.start(event), shard)
        builder = self._partials.get(key)
        if builder is None:
            builder = self._partials[key] = PartialBuilder()
        builder.add(event)

    def finish_bundle(self):
        partials, self._partials = self._partials, {}
        size = self._windows.size
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
