"""ContentMinuteStats: early, on-time and late panes; too-late events as dead letters; duplicates and CDC
updates counted once.

Runner choice (Beam 2.77): the plain DirectRunner hands any pipeline containing a TestStream to the old
BundleBasedDirectRunner, which ignores the watermark holds of timers that the too-late routing relies on. So the
streaming scenario runs on Prism, asked for explicitly (`runner='PrismRunner'`), which executes TestStream
including `advance_processing_time`. On Prism, elements waiting at a stateful step are only scheduled when the
watermark moves, so the scenario nudges the watermark after adding elements (as a live source does all the
time). The FnApiRunner runs the bounded case; it cannot run AfterProcessingTime triggers at all.
"""
import json
import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from schemas import ContentWindowStats, DeadLetter
from tests.transforms.builders import PODCAST, VIDEO, enriched
from transforms.windows import ContentAccumulator, ContentMinuteStats, ContentStatsFn


# -- the CombineFn alone --------------------------------------------------------------------------------------

def combine(*batches):
    """Run ContentStatsFn like a runner: one accumulator per batch, merged, extracted."""
    fn = ContentStatsFn()
    accumulators = []
    for batch in batches:
        accumulator = fn.create_accumulator()
        for event in batch:
            accumulator = fn.add_input(accumulator, event)
        accumulators.append(accumulator)
    return fn.extract_output(fn.merge_accumulators(accumulators))


def test_counts_per_type_and_sums_known_durations():
    totals = combine([enriched(id=1, event_type='play', duration_ms=1000),
                      enriched(id=2, event_type='click', duration_ms=None),
                      enriched(id=3, event_type='pause', duration_ms=2500)])

    assert totals == dict(events=3, play=1, pause=1, finish=0, click=1, engagement_ms=3500,
                          title='A Short History Of Privacy #12', content_type='podcast')


def test_a_redelivered_event_counts_once_within_and_across_bundles():
    event = enriched(id=1, duration_ms=1000, offset=10)
    redelivered = enriched(id=1, duration_ms=1000, offset=99)     # Debezium re-sent it after a crash

    assert combine([event, redelivered], [redelivered])['events'] == 1
    assert combine([event, redelivered], [redelivered])['engagement_ms'] == 1000


def test_a_cdc_update_replaces_the_earlier_version_whatever_the_order():
    first = enriched(id=5, event_type='pause', duration_ms=500, lsn=100)
    updated = enriched(id=5, event_type='finish', duration_ms=700, lsn=200)

    for batches in ([[first, updated]], [[updated, first]], [[updated], [first]], [[first], [updated]]):
        totals = combine(*batches)
        assert (totals['events'], totals['pause'], totals['finish'], totals['engagement_ms']) == (1, 0, 1, 700)


def test_title_follows_the_newest_event_id():
    totals = combine([enriched(id=8, title='New title')], [enriched(id=3, title='Old title')])

    assert totals['title'] == 'New title'


def test_accumulator_pickles_for_the_shuffle():
    accumulator = ContentStatsFn().add_input(ContentAccumulator(), enriched(id=1))

    assert beam.coders.registry.get_coder(object).decode(
        beam.coders.registry.get_coder(object).encode(accumulator)) == accumulator


@pytest.mark.parametrize('settings, flag', [
    (dict(early_firing_seconds=1.0), 'early_firing_seconds'),   # Prism rejects float processing-time delays
    (dict(window_seconds=0), 'window_seconds'),
    (dict(allowed_lateness_seconds=-1), 'allowed_lateness_seconds'),
])
def test_invalid_settings_fail_at_construction_naming_the_setting(settings, flag):
    with pytest.raises(ValueError, match=flag):
        ContentMinuteStats(**settings)


# -- streaming scenario on Prism ------------------------------------------------------------------------------

class AppendJsonLine(beam.DoFn):
    """Collects pipeline output into a file the test reads back (works whatever process runs the DoFn)."""

    def __init__(self, path):
        self._path = path

    def process(self, element):
        with open(self._path, 'a') as out:
            out.write(element.model_dump_json() + '\n')


def at(seconds, event):
    return TimestampedValue(event, seconds)


def play(id, ts, duration_ms=1000, content_id=PODCAST, **kw):
    return at(ts, enriched(id=id, ts=ts, event_type='play', duration_ms=duration_ms, content_id=content_id, **kw))


@pytest.fixture(scope='module')
def streamed(tmp_path_factory):
    """One window [0, 60) of the podcast, lateness 30 s, early panes every 2 s of processing time:

    wm 0   +1 play (10 s), +1 click (20 s), +1 pause of the video (15 s)      -> early pane: 2 podcast events
    wm 21  +1 play (30 s) twice (a redelivery), +1 pause (35 s) then its update to finish (lsn 100 -> 200)
    wm 31                                                                   -> early pane: 4 podcast events
    wm 65                                                                   -> on-time pane: 4
    wm 65  +1 play (40 s): late but within the lateness (window closes at 90) -> late pane: 5
    wm 100 +1 play (50 s, 9999 ms): beyond the lateness                     -> dead letter too_late
           +1 play (75 s) for window [60, 120), still open                  -> counted there
    """
    out = tmp_path_factory.mktemp('windows')
    stats_path, dead_path = str(out / 'stats.jsonl'), str(out / 'dead.jsonl')
    stream = (test_stream.TestStream()
              .advance_watermark_to(0)
              .add_elements([play(1, 10), at(20, enriched(id=2, ts=20, event_type='click', duration_ms=None)),
                             at(15, enriched(id=3, ts=15, event_type='pause', duration_ms=3000, content_id=VIDEO,
                                             content_type='video', title='Video'))])
              .advance_watermark_to(21)
              .advance_processing_time(5)
              .add_elements([play(4, 30, 2000, offset=40), play(4, 30, 2000, offset=41),
                             at(35, enriched(id=5, ts=35, event_type='pause', duration_ms=500, lsn=100)),
                             at(35, enriched(id=5, ts=35, event_type='finish', duration_ms=700, lsn=200))])
              .advance_watermark_to(31)
              .advance_processing_time(5)
              .advance_watermark_to(65)
              .add_elements([play(6, 40, 500)])
              .advance_watermark_to(66)
              .advance_watermark_to(100)
              .add_elements([play(7, 50, 9999), play(8, 75, 100)])
              .advance_watermark_to(101)
              .advance_watermark_to_infinity())
    options = StandardOptions(streaming=True)
    with test_pipeline.TestPipeline(runner='PrismRunner', options=options) as p:
        result = p | stream | ContentMinuteStats(window_seconds=60, early_firing_seconds=2,
                                                 allowed_lateness_seconds=30)
        result.stats | 'CollectStats' >> beam.ParDo(AppendJsonLine(stats_path))
        result.dead_letter | 'CollectDeadLetters' >> beam.ParDo(AppendJsonLine(dead_path))

    def read(path, model):
        try:
            with open(path) as lines:
                return [model.model_validate_json(line) for line in lines]
        except FileNotFoundError:
            return []
    return read(stats_path, ContentWindowStats), read(dead_path, DeadLetter)


def panes(stats, content_id, window_start):
    """The panes of one content and window in firing order (pane_index; output order is not firing order)."""
    return sorted((s for s in stats if s.content_id == content_id and s.window_start == window_start),
                  key=lambda s: s.pane_index)


def test_early_pane_shows_partial_counts_before_the_window_closes(streamed):
    first = panes(streamed[0], PODCAST, 0)[0]

    assert (first.events, first.play, first.click, first.engagement_ms) == (2, 1, 1, 1000)
    assert first.pane_timing == 'EARLY'


def test_on_time_pane_counts_redeliveries_once_and_updates_as_their_newest_version(streamed):
    [on_time] = [s for s in panes(streamed[0], PODCAST, 0) if s.pane_timing == 'ON_TIME']

    assert (on_time.events, on_time.play, on_time.click, on_time.pause, on_time.finish) == (4, 2, 1, 0, 1)
    assert on_time.engagement_ms == 1000 + 2000 + 700
    assert (on_time.window_end, on_time.title, on_time.content_type) == (60, 'A Short History Of Privacy #12',
                                                                           'podcast')


def test_late_event_within_the_lateness_updates_the_window(streamed):
    podcast = panes(streamed[0], PODCAST, 0)

    assert [p.events for p in podcast] == sorted(p.events for p in podcast)   # accumulating: totals only grow
    last = podcast[-1]
    assert (last.events, last.play, last.engagement_ms, last.pane_timing) == (5, 3, 4200, 'LATE')


def test_event_beyond_the_lateness_is_a_dead_letter_and_counted_nowhere(streamed):
    stats, dead = streamed

    assert [(d.event_id, d.stage, d.reason) for d in dead] == [(7, 'window', 'too_late')]
    assert '[1970-01-01T00:00:00+00:00, 1970-01-01T00:01:00+00:00)' in dead[0].error
    assert json.loads(dead[0].payload)['duration_ms'] == 9999
    assert all(s.engagement_ms < 9999 for s in stats)


def test_each_content_and_window_is_counted_apart(streamed):
    stats = streamed[0]

    assert (panes(stats, VIDEO, 0)[-1].events, panes(stats, VIDEO, 0)[-1].pause) == (1, 1)
    assert (panes(stats, PODCAST, 60)[-1].events, panes(stats, PODCAST, 60)[-1].engagement_ms) == (1, 100)
    assert {(s.content_id, s.window_start) for s in stats} == {(PODCAST, 0), (VIDEO, 0), (PODCAST, 60)}


# -- bounded run --------------------------------------------------------------------------------------------

def test_bounded_input_is_never_too_late_and_counts_every_window():
    """A backfill: the watermark stays at -inf until the input ends, so old events are simply on time."""
    events = [enriched(id=i, ts=ts, content_id=str(uuid.UUID(int=i % 2)))
              for i, ts in enumerate([5000, 10, 70, 70, 3600, 5], start=1)]
    events.append(enriched(id=2, ts=10, content_id=str(uuid.UUID(int=0)), offset=99))    # a redelivery

    with test_pipeline.TestPipeline(runner='FnApiRunner') as p:
        result = (p | beam.Create(events) | beam.Map(lambda e: TimestampedValue(e, e.event_ts.timestamp()))
                  | ContentMinuteStats(early_firing_seconds=None, allowed_lateness_seconds=0))
        counted = result.stats | beam.Map(lambda s: (s.window_start, s.content_id[-1], s.events))

        assert_that(counted, equal_to([(0, '0', 2), (60, '0', 1), (60, '1', 1), (3600, '1', 1), (4980, '1', 1)]),
                    label='Stats')
        assert_that(result.dead_letter, equal_to([]), label='NoDeadLetters')
