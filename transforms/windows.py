"""Per-content engagement per event-time window, live: early panes, an on-time pane, late panes; events later
than the allowed lateness go to the dead letters as `too_late` instead of being dropped silently.

Beam concepts: `FixedWindows` with `AfterWatermark(early=AfterProcessingTime, late=AfterCount(1))`,
accumulating panes and allowed lateness; a `CombineFn` whose accumulator makes counting idempotent per event id;
a stateful `DoFn` with event-time timers and their watermark holds.

    result = enriched | ContentMinuteStats(window_seconds=60, early_firing_seconds=1, allowed_lateness_seconds=300)
    result.stats        # PCollection[ContentWindowStats], one per pane per (content, window)
    result.dead_letter  # PCollection[DeadLetter], stage 'window', reason 'too_late'

Too-late detection. Beam's GroupByKey drops an element whose window expired (window end + allowed lateness
behind the watermark), and a Python DoFn cannot read the watermark. `RouteTooLateEvents` therefore learns it
from event-time timers and enforces it with their watermark holds:
  * events go to `lateness_shards` keys (default 1) in the global window; each key runs a timer loop: a timer
    set for time H fires once the watermark reaches H, then is set again for H + `watermark_probe_seconds`;
  * a pending event-time timer holds the stage's output watermark at H, so the GroupByKey downstream never sees
    a watermark beyond H. An event whose window expires after H (window max timestamp + lateness > H) is
    therefore never dropped by Beam: it passes. An event whose window expires at or before H goes to the dead
    letters. H runs at most one probe interval ahead of a watermark already reached, so "too_late" is exact up
    to that interval: an event within `watermark_probe_seconds` of its deadline may be routed as too_late
    although its window was still open; none is dropped silently;
  * until a key's first timer fires nothing is known about the watermark, and events pass unchecked (counter
    `passed_unchecked`): the first events of each shard after the pipeline starts, and a whole bounded run,
    where the watermark stays at -inf until the input ends. That is the one case in which Beam could still drop
    an event that arrives beyond the lateness. Each extra shard adds such a start-up exposure, which is why the
    default is one shard; raise it only when one key cannot keep up (e.g. a hot key on Dataflow);
  * a second timer at the end of the global window stops the loop when the input is finished (watermark at
    +inf); otherwise the loop would chase the end of time.
Alternatives rejected: comparing with the largest event time seen (a different notion of lateness than the one
the GroupByKey applies, so events would still vanish), and an allowed lateness padded by a margin (no margin is
safe against a watermark jump). Cost: one timer per shard per probe interval of event time; the on-time pane
waits up to one probe interval for the hold; after a jump of the watermark (a backlog) the loop walks up in
probe steps, one bundle each. Runners must honour timer watermark holds (Prism, Dataflow and Flink do; the old
BundleBasedDirectRunner does not, and there the routing is approximate).

Deduplication. Debezium is at-least-once and re-sends rows after a crash; a producer may retry. The CombineFn
keeps, per (content, window), one contribution per event id (the newest version by Postgres LSN, then Kafka
offset), so a duplicate never counts twice, and a CDC update of an event replaces its earlier version. This
costs memory proportional to the distinct events per content per window (hundreds), held until the window
expires. A duplicate cannot land in another window or content: it carries the same event_ts and content_id. An
update that changes event_ts or content_id is counted in both places (engagement rows are append-only).
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import NamedTuple

import apache_beam as beam
from apache_beam.coders import BooleanCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimeDomain, TimerSpec, on_timer
from apache_beam.transforms.window import FixedWindows, GlobalWindow, GlobalWindows, WindowFn
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas import dead_letter as reasons
from schemas.dead_letter import DeadLetter
from schemas.events import EVENT_TYPES, EnrichedEvent
from schemas.stats import ContentWindowStats
from transforms.tags import DEAD_LETTER

ON_TIME = 'on_time'

_PANE_TIMING = {0: 'EARLY', 1: 'ON_TIME', 2: 'LATE'}


class ContentMinuteStatsOutputs(NamedTuple):
    stats: beam.PCollection
    dead_letter: beam.PCollection


# -- too-late routing ---------------------------------------------------------------------------------------

def _iso(timestamp: Timestamp) -> str:
    return timestamp.to_utc_datetime(has_tz=True).isoformat()


class RouteTooLateFn(beam.DoFn):
    """(shard, EnrichedEvent) in the global window -> the event (main) or a `too_late` DeadLetter (tagged)."""
    PROBE = ReadModifyWriteStateSpec('probe_micros', VarIntCoder())  # time of the pending timer = the hold
    CONFIRMED = ReadModifyWriteStateSpec('confirmed', BooleanCoder())  # a timer has fired: the probe is valid
    FINISHED = ReadModifyWriteStateSpec('finished', BooleanCoder())  # the input is exhausted
    TICK = TimerSpec('tick', TimeDomain.WATERMARK)
    END = TimerSpec('end', TimeDomain.WATERMARK)

    def __init__(self, window_fn: WindowFn, allowed_lateness_seconds: int, probe_seconds: int):
        self._window_fn = window_fn
        self._lateness = Duration(seconds=allowed_lateness_seconds)
        self._lateness_seconds = allowed_lateness_seconds
        self._probe_micros = probe_seconds * 1_000_000
        self._passed = Metrics.counter(self.__class__, 'passed')
        self._unchecked = Metrics.counter(self.__class__, 'passed_unchecked')
        self._too_late = Metrics.counter(self.__class__, f'dead_letter_{reasons.TOO_LATE}')

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                probe=beam.DoFn.StateParam(PROBE), confirmed=beam.DoFn.StateParam(CONFIRMED),
                tick=beam.DoFn.TimerParam(TICK), end=beam.DoFn.TimerParam(END)):
        _, event = element
        hold = probe.read()
        if hold is None:
            # First event of this key: start probing the watermark. Never beyond the wall clock, so an event
            # stamped in the future cannot postpone the first reading.
            hold = min(timestamp.micros, Timestamp.now().micros)
            tick.set(Timestamp(micros=hold))
            probe.write(hold)
            end.set(GlobalWindow().max_timestamp())
        window = self._window_fn.assign(WindowFn.AssignContext(timestamp, element=event))[0]
        expiry = window.max_timestamp() + self._lateness
        if not confirmed.read():
            self._unchecked.inc()
        elif expiry.micros <= hold:
            self._too_late.inc()
            watermark = Timestamp(micros=hold - self._probe_micros)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter.for_event(
                event, stage='window', reason=reasons.TOO_LATE, now=datetime.now(timezone.utc),
                error=(f'event_ts {event.event_ts.isoformat()} is beyond the allowed lateness: its window '
                       f'[{_iso(window.start)}, {_iso(window.end)}) closed for late data at {_iso(expiry)} '
                       f'(end + {self._lateness_seconds} s) and the watermark had reached {_iso(watermark)}')))
            return
        self._passed.inc()
        yield event

    @on_timer(TICK)
    def _on_tick(self, fired=beam.DoFn.TimestampParam, probe=beam.DoFn.StateParam(PROBE),
                 confirmed=beam.DoFn.StateParam(CONFIRMED), finished=beam.DoFn.StateParam(FINISHED),
                 tick=beam.DoFn.TimerParam(TICK)):
        confirmed.write(True)
        if finished.read():
            return
        hold = fired.micros + self._probe_micros
        tick.set(Timestamp(micros=hold))
        probe.write(hold)

    @on_timer(END)
    def _on_end(self, finished=beam.DoFn.StateParam(FINISHED), tick=beam.DoFn.TimerParam(TICK)):
        finished.write(True)
        tick.clear()


class RouteTooLateEvents(beam.PTransform):
    """EnrichedEvent -> outputs `on_time` (events the windows will count) and `dead_letter` (too_late)."""

    def __init__(self, window_fn: WindowFn, allowed_lateness_seconds: int, shards: int = 1,
                 watermark_probe_seconds: int = 1):
        super().__init__()
        self._fn = RouteTooLateFn(window_fn, allowed_lateness_seconds, watermark_probe_seconds)
        self._shards = shards

    def expand(self, events):
        shards = self._shards
        return (events
                | 'InGlobalWindow' >> beam.WindowInto(GlobalWindows())
                | 'ShardByEventId' >> beam.Map(lambda event: (event.id % shards, event))
                | 'CompareWithWatermark' >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER, main=ON_TIME))


# -- counting -----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ContentAccumulator:
    """One contribution per event id: {id: (version, event_type, duration_ms)}; the content's title and type as
    carried by the event with the highest id: (id, title, content_type)."""
    by_id: dict = dataclasses.field(default_factory=dict)
    content: tuple | None = None

    def add(self, event_id: int, contribution: tuple, content: tuple) -> None:
        known = self.by_id.get(event_id)
        if known is None or contribution[0] > known[0]:
            self.by_id[event_id] = contribution
        if self.content is None or content[0] > self.content[0]:
            self.content = content


def _version(event: EnrichedEvent) -> tuple[int, int]:
    lsn = -1 if event.source_lsn is None else event.source_lsn
    offset = -1 if event.source_offset is None else event.source_offset
    return lsn, offset


class ContentStatsFn(beam.CombineFn):
    """EnrichedEvents of one content and window -> totals (dict of ContentWindowStats fields, without the
    window). Idempotent per event id, whatever the order of inputs and merges."""

    def create_accumulator(self) -> ContentAccumulator:
        return ContentAccumulator()

    def add_input(self, accumulator: ContentAccumulator, event: EnrichedEvent) -> ContentAccumulator:
        accumulator.add(event.id, (_version(event), event.event_type, event.duration_ms),
                        (event.id, event.content_title, event.content_type))
        return accumulator

    def merge_accumulators(self, accumulators) -> ContentAccumulator:
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            for event_id, contribution in accumulator.by_id.items():
                merged.add(event_id, contribution, accumulator.content)
        return merged

    def extract_output(self, accumulator: ContentAccumulator) -> dict:
        counts = dict.fromkeys(EVENT_TYPES, 0)
        engagement_ms = 0
        for _, event_type, duration_ms in accumulator.by_id.values():
            counts[event_type] += 1
            if duration_ms is not None:
                engagement_ms += duration_ms
        _, title, content_type = accumulator.content
        return dict(events=len(accumulator.by_id), engagement_ms=engagement_ms, title=title,
                    content_type=content_type, **counts)


class ToContentWindowStatsFn(beam.DoFn):
    """(content_id, totals) in a window pane -> ContentWindowStats."""

    def process(self, element, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        content_id, totals = element
        yield ContentWindowStats(
            window_start=window.start.micros // 1_000_000, window_end=window.end.micros // 1_000_000,
            content_id=content_id, pane_timing=_PANE_TIMING.get(pane.timing, 'UNKNOWN'), pane_index=pane.index,
            **totals)


class ContentMinuteStats(beam.PTransform):
    """EnrichedEvent (at event time) -> ContentWindowStats per pane, plus `too_late` dead letters.

    window_seconds: width of the event-time windows; early_firing_seconds: processing-time delay of early
    panes (an int: Prism rejects a float), None for no early panes (bounded runs); allowed_lateness_seconds:
    how long after its end a window still takes late events; lateness_shards and watermark_probe_seconds tune
    the too-late routing (see the module docstring)."""

    def __init__(self, window_seconds: int = 60, early_firing_seconds: int | None = 1,
                 allowed_lateness_seconds: int = 300, lateness_shards: int = 1, watermark_probe_seconds: int = 1):
        super().__init__()
        for name, value, low in (('window_seconds', window_seconds, 1),
                                 ('allowed_lateness_seconds', allowed_lateness_seconds, 0),
                                 ('lateness_shards', lateness_shards, 1),
                                 ('watermark_probe_seconds', watermark_probe_seconds, 1),
                                 ('early_firing_seconds', early_firing_seconds, 1)):
            if name == 'early_firing_seconds' and value is None:
                continue
            if type(value) is not int or value < low:
                raise ValueError(f'ContentMinuteStats: {name} must be an integer >= {low}, got {value!r}')
        self._window_fn = FixedWindows(window_seconds)
        self._early_firing_seconds = early_firing_seconds
        self._allowed_lateness_seconds = allowed_lateness_seconds
        self._lateness_shards = lateness_shards
        self._probe_seconds = watermark_probe_seconds

    def _trigger(self):
        if self._early_firing_seconds is None:
            return trigger.AfterWatermark(late=trigger.AfterCount(1))
        return trigger.AfterWatermark(early=trigger.AfterProcessingTime(self._early_firing_seconds),
                                      late=trigger.AfterCount(1))

    def expand(self, events):
        routed = events | 'RouteTooLateEvents' >> RouteTooLateEvents(
            self._window_fn, self._allowed_lateness_seconds, self._lateness_shards, self._probe_seconds)
        stats = (routed[ON_TIME]
                 | 'KeyByContent' >> beam.Map(lambda event: (event.content_id, event))
                 | 'FixedWindows' >> beam.WindowInto(
                     self._window_fn, trigger=self._trigger(),
                     accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                     allowed_lateness=self._allowed_lateness_seconds)
                 | 'CountDistinctEventsPerContent' >> beam.CombinePerKey(ContentStatsFn())
                 | 'ToContentWindowStats' >> beam.ParDo(ToContentWindowStatsFn()))
        return ContentMinuteStatsOutputs(stats=stats, dead_letter=routed[DEAD_LETTER])
