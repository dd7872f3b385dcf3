"""ContentStatsPerWindow: early, on-time and late panes; too-late events as dead letters; duplicates and CDC
updates counted once.

Runner choice (Beam 2.77): the plain DirectRunner hands any pipeline containing a TestStream to the old
BundleBasedDirectRunner, so the streaming scenario runs on Prism, asked for explicitly (`runner='PrismRunner'`),
which executes TestStream including `advance_processing_time`. The FnApiRunner runs the bounded case; it cannot
run AfterProcessingTime triggers at all. Events carry the reader's watermark stamp (`watermark_ms`) that a
TestStream does not give them: the scenario sets it to the watermark of the moment it adds them, as the Kafka
reader would. The last test runs the real reader on Prism against a Kafka broker (integration).
"""
import json
import time
import uuid

import apache_beam as beam
import pytest
import redis
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from kafka import KafkaProducer

from connectors.kafka import ReadFromKafka
from schemas import ContentWindowStats, DeadLetter
from schemas.dead_letter import DEAD_LETTERS
from tests.transforms.builders import PODCAST, VIDEO, enriched
from tests.transforms.test_partials import event_ids
from transforms.parse import ParseEvents
from transforms.partials import partial_of
from transforms.windows import (
    CombineWithinBundleFn,
    ContentStatsFn,
    ContentStatsPerWindow,
    RouteTooLateFn,
    shard_of,
)

# -- counting: partials per bundle, merged like a runner would ------------------------------------------------

def combine(*bundles, merge_order=None):
    """Count each bundle into a partial (as CombineWithinBundle does), feed the partials to ContentStatsFn
    (as the GroupByKey does), and extract the totals of the one content."""
    fn = ContentStatsFn()
    partials = [partial_of(bundle) for bundle in bundles]
    accumulator = fn.create_accumulator()
    for partial in (partials if merge_order is None else [partials[i] for i in merge_order]):
        accumulator = fn.add_input(accumulator, partial)
    [(content_id, totals)] = fn.extract_output(accumulator).items()
    return totals


def test_counts_per_type_and_sums_known_durations():
    events = [enriched(id=1, event_type='play', duration_ms=1000, ts=10),
              enriched(id=2, event_type='click', duration_ms=None, ts=12),
              enriched(id=3, event_type='pause', duration_ms=2500, ts=11)]
    totals = combine(events)

    newest = max(int(e.ingest_ts.timestamp() * 1000) for e in events)   # the latency metric's reference
    assert totals == dict(events=3, play=1, pause=1, finish=0, click=1, engagement_ms=3500,
                          title='A Short History Of Privacy #12', content_type='podcast', newest_ingest_ms=newest)
    assert newest == int(events[1].ingest_ts.timestamp() * 1000)


def test_the_newest_kafka_timestamp_survives_merging_in_any_order():
    bundles = [[enriched(id=5, ts=30)], [enriched(id=1, ts=50), enriched(id=2, ts=20)], [enriched(id=9, ts=40)]]
    newest = int(bundles[1][0].ingest_ts.timestamp() * 1000)
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
        totals = combine(*bundles, merge_order=order)
        assert totals['newest_ingest_ms'] == newest and totals['events'] == 4


def test_a_redelivered_event_counts_once_within_and_across_bundles():
    event = enriched(id=1, duration_ms=1000, offset=10)
    redelivered = enriched(id=1, duration_ms=1000, offset=99)     # Debezium re-sent it after a crash

    assert combine([event, redelivered], [redelivered])['events'] == 1
    assert combine([event, redelivered], [redelivered])['engagement_ms'] == 1000


def test_a_cdc_update_replaces_the_earlier_version_whatever_the_order():
    first = enriched(id=5, event_type='pause', duration_ms=500, lsn=100)
    updated = enriched(id=5, event_type='finish', duration_ms=700, lsn=200)
    other = enriched(id=6, event_type='play', duration_ms=1000)

    for bundles in ([[first, updated]], [[updated, first]], [[updated], [first]], [[first], [updated]],
                    [[first, other], [updated]], [[updated, other], [first]]):
        for order in ([0, 1], [1, 0]) if len(bundles) == 2 else (None,):
            totals = combine(*bundles, merge_order=order)
            assert (totals['pause'], totals['finish'], totals['engagement_ms'] % 1000) == (0, 1, 700), (bundles, order)


def test_title_follows_the_newest_event_id():
    assert combine([enriched(id=8, title='New title')], [enriched(id=3, title='Old title')])['title'] == 'New title'
    assert combine([enriched(id=3, title='Old title')], [enriched(id=8, title='New title')])['title'] == 'New title'


def test_merging_leaves_the_merged_partials_alone():
    fn = ContentStatsFn()
    partial = partial_of([enriched(id=1, lsn=100)])
    newer = partial_of([enriched(id=1, event_type='finish', lsn=200), enriched(id=2, content_id=VIDEO)])

    merged = fn.merge_accumulators([fn.create_accumulator(), [partial], [newer]])

    assert partial == partial_of([enriched(id=1, lsn=100)])
    assert newer == partial_of([enriched(id=1, event_type='finish', lsn=200), enriched(id=2, content_id=VIDEO)])
    assert fn.extract_output(merged)[PODCAST]['finish'] == 1
    assert fn.extract_output(merged)[VIDEO]['events'] == 1


def test_an_accumulator_of_many_partials_is_compacted_on_the_way_and_counts_the_same():
    fn = ContentStatsFn()
    bundles = [[enriched(id=i, event_type=('play', 'click')[i % 2], duration_ms=i,
                         content_id=(PODCAST, VIDEO)[i % 3 == 0])
                for i in range(b, b + 5)] for b in range(0, 200, 4)]          # 50 bundles, each repeating one id
    accumulator = fn.create_accumulator()
    for bundle in bundles:
        accumulator = fn.add_input(accumulator, partial_of(bundle))

    assert len(accumulator) <= 33
    by_content = fn.extract_output(accumulator)
    ids = {PODCAST: [i for i in range(201) if i % 3], VIDEO: [i for i in range(201) if i % 3 == 0]}
    for content_id, expected in ids.items():
        assert by_content[content_id]['events'] == len(expected)
        assert by_content[content_id]['engagement_ms'] == sum(expected)
        assert by_content[content_id]['click'] == sum(i % 2 for i in expected)
    assert fn.extract_output(fn.compact(accumulator)) == by_content
    halves = fn.merge_accumulators([accumulator[:10], accumulator[10:]])
    assert fn.extract_output(halves) == by_content


@pytest.mark.parametrize('shards', [1, 2, 8])
def test_combining_within_a_bundle_emits_one_partial_per_shard_and_window_at_the_window_end(shards):
    fn = CombineWithinBundleFn(FixedWindows(60), shards)
    fn.start_bundle()
    for event in (enriched(id=1, ts=10), enriched(id=2, ts=59.9), enriched(id=3, ts=60),
                  enriched(id=4, ts=30, content_id=VIDEO)):
        assert fn.process(event) is None

    emitted = [(wv.value[0], wv.timestamp, event_ids(wv.value[1])) for wv in fn.finish_bundle()]

    end_of = lambda start: Timestamp(micros=(start + 60) * 1_000_000 - 1)  # noqa: E731
    podcast, video = shard_of(PODCAST, shards), shard_of(VIDEO, shards)
    expected = [(podcast, end_of(60), {PODCAST: [3]})]
    if podcast == video:
        expected.append((podcast, end_of(0), {PODCAST: [1, 2], VIDEO: [4]}))
    else:
        expected += [(podcast, end_of(0), {PODCAST: [1, 2]}), (video, end_of(0), {VIDEO: [4]})]
    assert sorted(emitted, key=repr) == sorted(expected, key=repr)
    assert list(fn.finish_bundle()) == []                       # nothing carried into the next bundle


def test_shards_spread_contents_and_keep_a_content_in_one():
    contents = [str(uuid.UUID(int=i * 7919)) for i in range(400)]
    counts = [sum(shard_of(c, 8) == s for c in contents) for s in range(8)]
    assert min(counts) > 25 and {shard_of(c, 8) for c in contents[:1]} == {shard_of(contents[0], 8)}


# -- too-late routing by the reader's watermark stamp ---------------------------------------------------------

def route(event, window_seconds=60, lateness_seconds=30):
    fn = RouteTooLateFn(FixedWindows(window_seconds), lateness_seconds)
    [out] = list(fn.process(event))
    return out


def test_an_event_stamped_before_its_window_deadline_is_counted():
    event = enriched(id=1, ts=50, watermark_ms=89_999)              # window [0, 60) + 30 s closes at 90 s

    assert route(event) is event


def test_an_event_stamped_at_or_after_its_window_deadline_is_a_dead_letter():
    for watermark_ms in (90_000, 3_600_000):
        out = route(enriched(id=1, ts=50, watermark_ms=watermark_ms))

        assert out.tag == DEAD_LETTERS
        assert (out.value.stage, out.value.reason, out.value.event_id) == ('window', 'too_late', 1)
        assert '[1970-01-01T00:00:00+00:00, 1970-01-01T00:01:00+00:00)' in out.value.error


def test_an_unstamped_event_passes_unchecked():
    event = enriched(id=1, ts=50, watermark_ms=None)

    assert route(event) is event


def test_after_a_restart_an_event_of_a_window_final_before_it_is_too_late_whatever_its_stamp():
    fn = RouteTooLateFn(FixedWindows(60), 30, closed_before_ms=120_000)   # windows ending <= 120 s were final
    [final] = list(fn.process(enriched(id=1, ts=119, watermark_ms=0)))
    [open_window] = list(fn.process(enriched(id=2, ts=120, watermark_ms=0)))

    assert final.tag == DEAD_LETTERS and (final.value.reason, final.value.event_id) == ('too_late', 1)
    assert 'final before the pipeline restarted' in final.value.error
    assert open_window.event_ts.timestamp() == 120


# -- settings ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('settings, flag', [
    (dict(early_firing_seconds=0), 'early_firing_seconds'),
    (dict(early_firing_seconds='1'), 'early_firing_seconds'),
    (dict(window_seconds=0), 'window_seconds'),
    (dict(allowed_lateness_seconds=-1), 'allowed_lateness_seconds'),
])
def test_invalid_settings_fail_at_construction_naming_the_setting(settings, flag):
    with pytest.raises(ValueError, match=flag):
        ContentStatsPerWindow(**settings)


# -- streaming scenario on Prism ------------------------------------------------------------------------------

class AppendJsonLine(beam.DoFn):
    """Collects pipeline output into a file the test reads back (works whatever process runs the DoFn)."""

    def __init__(self, path):
        self._path = path

    def process(self, element):
        with open(self._path, 'a') as out:
            out.write(element.model_dump_json() + '\n')


def read_lines(path, model):
    try:
        with open(path) as lines:
            return [model.model_validate_json(line) for line in lines]
    except FileNotFoundError:
        return []


def at(seconds, event):
    return TimestampedValue(event, seconds)


def play(id, ts, duration_ms=1000, content_id=PODCAST, **kw):
    return at(ts, enriched(id=id, ts=ts, event_type='play', duration_ms=duration_ms, content_id=content_id, **kw))


@pytest.fixture(scope='module', params=[True, False], ids=['aligned', 'delayed'])
def streamed(tmp_path_factory, request):
    """One window [0, 60) of the podcast, lateness 30 s, early panes every 2 s of processing time; each event is
    stamped with the watermark of the moment it is added (ms):

    wm 0   +1 play (10 s), +1 click (20 s), +1 pause of the video (15 s)      -> early pane: 2 podcast events
    wm 21  +1 play (30 s) twice (a redelivery), +1 pause (35 s) then its update to finish (lsn 100 -> 200)
    wm 31                                                                   -> early pane: 4 podcast events
    wm 65                                                                   -> on-time pane: 4
    wm 65  +1 play (40 s): late but within the lateness (window closes at 90) -> late pane: 5
    wm 100 +1 play (50 s, 9999 ms): beyond the lateness                     -> dead letter too_late
           +1 play (75 s) for window [60, 120), still open                  -> counted there

    Early panes aligned to the grid of their period (the pipeline's) or delayed from each pane's first element
    (Beam's default). Aligned, Prism adds panes: a late element gets an EARLY, an ON_TIME and a LATE pane, all
    with the same totals; the figures of every pane are the same either way.
    """
    out = tmp_path_factory.mktemp('windows')
    stats_path, dead_path = str(out / 'stats.jsonl'), str(out / 'dead.jsonl')
    stream = (test_stream.TestStream()
              .advance_watermark_to(0)
              .add_elements([play(1, 10, watermark_ms=0),
                             at(20, enriched(id=2, ts=20, event_type='click', duration_ms=None, watermark_ms=0)),
                             at(15, enriched(id=3, ts=15, event_type='pause', duration_ms=3000, content_id=VIDEO,
                                             content_type='video', title='Video', watermark_ms=0))])
              .advance_watermark_to(21)
              .advance_processing_time(5)
              .add_elements([play(4, 30, 2000, offset=40, watermark_ms=21_000),
                             play(4, 30, 2000, offset=41, watermark_ms=21_000),
                             at(35, enriched(id=5, ts=35, event_type='pause', duration_ms=500, lsn=100,
                                             watermark_ms=21_000)),
                             at(35, enriched(id=5, ts=35, event_type='finish', duration_ms=700, lsn=200,
                                             watermark_ms=21_000))])
              .advance_watermark_to(31)
              .advance_processing_time(5)
              .advance_watermark_to(65)
              .add_elements([play(6, 40, 500, watermark_ms=65_000)])
              .advance_watermark_to(66)
              .advance_watermark_to(100)
              .add_elements([play(7, 50, 9999, watermark_ms=100_000), play(8, 75, 100, watermark_ms=100_000)])
              .advance_watermark_to(101)
              .advance_watermark_to_infinity())
    options = StandardOptions(streaming=True)
    with test_pipeline.TestPipeline(runner='PrismRunner', options=options) as p:
        result = p | stream | ContentStatsPerWindow(window_seconds=60, early_firing_seconds=2,
                                                 allowed_lateness_seconds=30, aligned_early_firings=request.param)
        result.stats | 'CollectStats' >> beam.ParDo(AppendJsonLine(stats_path))
        result.dead_letters | 'CollectDeadLetters' >> beam.ParDo(AppendJsonLine(dead_path))
    return read_lines(stats_path, ContentWindowStats), read_lines(dead_path, DeadLetter)


def panes(stats, content_id, window_start):
    """The panes of one content and window in firing order (pane_index; output order is not firing order)."""
    return sorted((s for s in stats if s.content_id == content_id and s.window_start == window_start),
                  key=lambda s: s.pane_index)


def test_early_pane_shows_partial_counts_before_the_window_closes(streamed):
    first = panes(streamed[0], PODCAST, 0)[0]

    assert (first.events, first.play, first.click, first.engagement_ms) == (2, 1, 1, 1000)
    assert first.pane_timing == 'EARLY'


def test_on_time_pane_counts_redeliveries_once_and_updates_as_their_newest_version(streamed):
    on_time = next(s for s in panes(streamed[0], PODCAST, 0) if s.pane_timing == 'ON_TIME')

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
    assert 'watermark_ms' not in json.loads(dead[0].payload)      # run-time state, not part of the event
    assert all(s.engagement_ms < 9999 for s in stats)


def test_each_content_and_window_is_counted_apart(streamed):
    stats = streamed[0]

    assert (panes(stats, VIDEO, 0)[-1].events, panes(stats, VIDEO, 0)[-1].pause) == (1, 1)
    assert (panes(stats, PODCAST, 60)[-1].events, panes(stats, PODCAST, 60)[-1].engagement_ms) == (1, 100)
    assert {(s.content_id, s.window_start) for s in stats} == {(PODCAST, 0), (VIDEO, 0), (PODCAST, 60)}


# -- bounded run --------------------------------------------------------------------------------------------

def test_bounded_input_is_never_too_late_and_counts_every_window():
    """A backfill: the watermark stays at -inf until the input ends, and no reader stamps the events, so old
    events are simply on time."""
    events = [enriched(id=i, ts=ts, content_id=str(uuid.UUID(int=i % 2)))
              for i, ts in enumerate([5000, 10, 70, 70, 3600, 5], start=1)]
    events.append(enriched(id=2, ts=10, content_id=str(uuid.UUID(int=0)), offset=99))    # a redelivery

    with test_pipeline.TestPipeline(runner='FnApiRunner') as p:
        result = (p | beam.Create(events) | beam.Map(lambda e: TimestampedValue(e, e.event_ts.timestamp()))
                  | ContentStatsPerWindow(early_firing_seconds=None, allowed_lateness_seconds=0))
        counted = result.stats | beam.Map(lambda s: (s.window_start, s.content_id[-1], s.events))

        assert_that(counted, equal_to([(0, '0', 2), (60, '0', 1), (60, '1', 1), (3600, '1', 1), (4980, '1', 1)]),
                    label='Stats')
        assert_that(result.dead_letters, equal_to([]), label='NoDeadLetters')


# -- the reader's stamp on Prism (integration) ----------------------------------------------------------------

class ToRedisList(beam.DoFn):
    def __init__(self, url: str, key: str, describe):
        self._url, self._key, self._describe = url, key, describe

    def setup(self):
        self._redis = redis.Redis.from_url(self._url)

    def process(self, element):
        self._redis.rpush(self._key, json.dumps(self._describe(element)))

    def teardown(self):
        self._redis.close()


def _as_enriched(event):
    return enriched(id=event.id, ts=event.event_ts.timestamp(), event_type=event.event_type,
                    duration_ms=event.duration_ms, offset=event.source_offset, watermark_ms=event.watermark_ms)


@pytest.mark.integration
def test_an_event_the_reader_passed_is_counted_although_the_same_bundle_moves_the_watermark_past_it(stack):
    """An hour-old event read from a backlog: stamped with the watermark of the backlog (an hour ago) it passes,
    and then the same reader call finds its partition caught up and moves the watermark to wall clock, far beyond
    the event's deadline. Had Beam applied that watermark before taking the bundle's output, the GroupByKey would
    drop the event as late and its window would never show it. The same hour-old event sent again once the
    reader is live is stamped with a recent watermark and must become a too_late dead letter instead."""
    from tests.connectors.kafka.test_reader import create_topic, running, streaming_pipeline, unique

    cfg = stack.cfg
    topic = create_topic(cfg, unique('too-late'), 1)
    old_s = (int(time.time()) - 3600) // 10 * 10 + 2

    def send(event_id, kafka_ts_ms):
        producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks='all')
        value = {'id': event_id, 'content_id': PODCAST, 'user_id': str(uuid.UUID(int=1)), 'event_type': 'play',
                 'event_ts': Timestamp(old_s).to_utc_datetime(has_tz=True).isoformat(), 'duration_ms': event_id}
        producer.send(topic, value=json.dumps(value).encode(), timestamp_ms=kafka_ts_ms)
        producer.flush()
        producer.close()

    send(1, old_s * 1000)
    key = unique('too-late-out')
    out = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
    pipeline = streaming_pipeline()
    parsed = (pipeline
              | 'Read' >> ReadFromKafka({'bootstrap_servers': cfg.kafka_bootstrap}, [topic],
                                        start_offset='earliest', commit_offsets=False)
              | 'Parse' >> ParseEvents())
    result = (parsed.events | 'Enrich' >> beam.Map(_as_enriched)
              | ContentStatsPerWindow(window_seconds=10, early_firing_seconds=1, allowed_lateness_seconds=5))
    result.stats | 'Stats' >> beam.ParDo(ToRedisList(cfg.redis_url, f'{key}:stats', lambda s: s.events))
    result.dead_letters | 'Dead' >> beam.ParDo(ToRedisList(cfg.redis_url, f'{key}:dead',
                                                          lambda d: [d.event_id, d.reason]))

    def seen(kind):
        return [json.loads(x) for x in out.lrange(f'{key}:{kind}', 0, -1)]

    with running(pipeline) as run:
        run.wait_for(lambda: seen('stats'), 'the window of the backlog event')
        time.sleep(3)                                   # the reader is live now, its watermark at wall clock
        send(2, int(time.time() * 1000))
        run.wait_for(lambda: seen('dead'), 'the dead letter of the resent event')
        time.sleep(2)
    assert seen('stats')[-1] == 1
    assert seen('dead') == [[2, 'too_late']]


@pytest.mark.parametrize('seconds, millis', [(1, 1000), (0.5, 500), (0.25, 250), (2.0004, 2000)])
def test_early_panes_fire_on_a_grid_of_the_period_in_milliseconds(seconds, millis):
    """All contents' early panes fire together (Java's alignedTo); Beam's Python AfterProcessingTime has neither
    alignment nor milliseconds (it writes a float into an int64 field)."""
    proto = ContentStatsPerWindow(early_firing_seconds=seconds)._trigger().to_runner_api(None)
    [step] = proto.after_end_of_window.early_firings.after_processing_time.timestamp_transforms
    assert (step.WhichOneof('timestamp_transform'), step.align_to.period, step.align_to.offset) == (
        'align_to', millis, 0)


def test_unaligned_early_panes_keep_beams_delay_after_the_first_element():
    proto = ContentStatsPerWindow(early_firing_seconds=2, aligned_early_firings=False)._trigger().to_runner_api(None)
    [step] = proto.after_end_of_window.early_firings.after_processing_time.timestamp_transforms
    assert (step.WhichOneof('timestamp_transform'), step.delay.delay_millis) == ('delay', 2000)
