"""EnrichWithContent: engagement maths, the catalogue cache (refresh, reload on a miss, rate limit, outages) and
unknown content as dead letters."""
import pickle
import sys
import types

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas import DeadLetter, EnrichedEvent
from tests.transforms.builders import PODCAST, VIDEO, content, ingested, random_uuid
from transforms.enrich import (
    CatalogueVersion,
    EnrichWithContent,
    EnrichWithContentFn,
    LoadCatalogueFn,
    PostgresContentLoader,
    engagement_metrics,
    enrich_event,
)


@pytest.mark.parametrize('duration_ms, length_seconds, seconds, percentage', [
    (660_295, 1464, 660.295, 45.1),
    (12_345, 100, 12.345, 12.35),     # half-up like SQL round(); float rounding would give 12.34
    (1_005, 1, 1.005, 100.5),
    (200_000, 100, 200.0, 200.0),     # longer than the content: reported, not capped
    (0, 100, 0.0, 0.0),
    (None, 100, None, None),          # no duration
    (60_000, None, 60.0, None),       # unknown length
    (60_000, 0, 60.0, None),          # zero length: no division
])
def test_engagement_metrics(duration_ms, length_seconds, seconds, percentage):
    assert engagement_metrics(duration_ms, length_seconds) == (seconds, percentage)


def test_enriched_event_carries_event_source_and_content():
    event = ingested(id=9, duration_ms=732_000, offset=44)

    enriched = enrich_event(event, content(length_seconds=1464))

    assert isinstance(enriched, EnrichedEvent)
    assert (enriched.id, enriched.source_offset, enriched.event_ts) == (9, 44, event.event_ts)
    assert (enriched.content_title, enriched.content_type, enriched.length_seconds) == (
        'A Short History Of Privacy #12', 'podcast', 1464)
    assert (enriched.engagement_seconds, enriched.engagement_percentage) == (732.0, 50.0)
    assert EnrichedEvent.model_validate_json(enriched.model_dump_json()) == enriched


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class CatalogueLoader:
    """Returns one catalogue per call from a script (the last one repeats); an Exception in it is raised."""

    def __init__(self, *catalogues):
        self.script = list(catalogues)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        result = self.script[min(self.calls, len(self.script)) - 1]
        if isinstance(result, Exception):
            raise result
        return {c.id: c for c in result}


def started(loader, refresh_seconds=60, miss_interval=1.0):
    clock = Clock()
    fn = EnrichWithContentFn(loader, refresh_seconds, miss_interval, clock)
    fn.setup()
    return fn, clock


def run(fn, event):
    [out] = list(fn.process(event))
    return out.value if isinstance(out, beam.pvalue.TaggedOutput) else out


def test_a_miss_reloads_once_and_finds_content_added_since_setup():
    loader = CatalogueLoader([content(PODCAST)], [content(PODCAST), content(VIDEO, content_type='video')])
    fn, _ = started(loader)

    out = run(fn, ingested(content_id=VIDEO))

    assert isinstance(out, EnrichedEvent) and out.content_type == 'video'
    assert loader.calls == 2


def test_content_still_unknown_after_the_reload_is_a_dead_letter():
    fn, _ = started(CatalogueLoader([content(PODCAST)]))
    unknown = random_uuid()

    dead = run(fn, ingested(id=77, content_id=unknown))

    assert isinstance(dead, DeadLetter)
    assert (dead.stage, dead.reason, dead.event_id) == ('enrich', 'unknown_content', 77)
    assert unknown in dead.error and '"id":77' in dead.payload


def test_misses_reload_at_most_once_per_interval():
    loader = CatalogueLoader([content(PODCAST)])
    fn, clock = started(loader, miss_interval=1.0)

    reasons = []
    for step in range(5):                    # five unknown ids within 0.8 s, then one after the interval
        reasons.append(run(fn, ingested(content_id=random_uuid())).reason)
        clock.now += 0.2
    clock.now += 0.5
    run(fn, ingested(content_id=random_uuid()))

    assert reasons == ['unknown_content'] * 5
    assert loader.calls == 1 + 2             # setup, first miss, the miss after the interval


def test_catalogue_refreshes_after_the_interval_without_a_miss():
    renamed = content(PODCAST, title='Renamed')
    loader = CatalogueLoader([content(PODCAST)], [renamed])
    fn, clock = started(loader, refresh_seconds=30)

    before = run(fn, ingested())
    clock.now += 30
    after = run(fn, ingested())

    assert (before.content_title, after.content_title) == ('A Short History Of Privacy #12', 'Renamed')


def test_a_failed_refresh_keeps_serving_the_last_catalogue():
    loader = CatalogueLoader([content(PODCAST)], ConnectionError('database down'))
    fn, clock = started(loader, refresh_seconds=30)
    clock.now += 30

    out = run(fn, ingested())

    assert isinstance(out, EnrichedEvent)
    assert loader.calls == 2


def test_a_miss_while_the_database_is_down_says_so():
    fn, _ = started(CatalogueLoader([content(PODCAST)], ConnectionError('database down')))

    dead = run(fn, ingested(content_id=random_uuid()))

    assert dead.reason == 'content_unavailable'


def side_run(fn, event, versions):
    [out] = list(fn.process(event, versions))
    return out.value if isinstance(out, beam.pvalue.TaggedOutput) else out


def test_with_a_side_input_the_newest_version_is_served_and_a_miss_still_loads_directly():
    loader = CatalogueLoader([content(PODCAST), content(VIDEO, content_type='video')])
    fn = EnrichWithContentFn(loader, 30, 1.0, Clock(), side_input=True)
    fn.setup()
    assert loader.calls == 0  # the catalogue comes with the side input
    old = CatalogueVersion(100.0, {PODCAST: content(PODCAST)})
    new = CatalogueVersion(200.0, {PODCAST: content(PODCAST, title='Renamed')})

    assert side_run(fn, ingested(), [new, old]).content_title == 'Renamed'  # the newest, in any order
    assert side_run(fn, ingested(content_id=VIDEO), [new, old]).content_type == 'video'  # a miss loads once
    assert loader.calls == 1
    assert side_run(fn, ingested(content_id=VIDEO), [new, old]).content_type == 'video'  # the load is newer
    assert side_run(fn, ingested(), [CatalogueVersion(1e12, {PODCAST: content(PODCAST)})]).content_title == \
        'A Short History Of Privacy #12'  # a version loaded later replaces it
    assert loader.calls == 1  # and no periodic reload: the side input refreshes


def test_a_side_input_load_that_fails_emits_nothing_so_the_last_version_stays():
    assert list(LoadCatalogueFn(CatalogueLoader(ConnectionError('database down'))).process(0)) == []
    [version] = LoadCatalogueFn(CatalogueLoader([content(PODCAST)])).process(0)
    assert set(version.contents) == {PODCAST} and version.loaded_at > 0


def test_setup_fails_with_one_clear_line_when_the_catalogue_cannot_load():
    fn = EnrichWithContentFn(CatalogueLoader(ConnectionError('connection refused')), 60, 1.0, Clock())

    with pytest.raises(RuntimeError, match='content catalogue could not be loaded .*connection refused'):
        fn.setup()


def test_pipeline_enriches_keeps_event_time_and_dead_letters_unknown_content():
    loader = CatalogueLoader([content(PODCAST, length_seconds=0)],
                             [content(PODCAST, length_seconds=0), content(VIDEO, length_seconds=None,
                                                                          content_type='video')])
    unknown = random_uuid()
    events = [ingested(id=1, ts=100.0), ingested(id=2, content_id=VIDEO, ts=200.0, duration_ms=None),
              ingested(id=3, content_id=unknown, ts=300.0)]

    with test_pipeline.TestPipeline(runner='FnApiRunner') as p:
        result = (p | beam.Create(events) | beam.Map(lambda e: beam.window.TimestampedValue(e, e.event_ts.timestamp()))
                  | EnrichWithContent(loader, refresh_seconds=60, miss_reload_interval_seconds=0))
        enriched = result.enriched | beam.Map(
            lambda e, ts=beam.DoFn.TimestampParam: (e.id, e.content_type, e.engagement_seconds,
                                                    e.engagement_percentage, float(ts)))
        dead = result.dead_letters | beam.Map(lambda d: (d.event_id, d.reason, d.stage))

        assert_that(enriched, equal_to([(1, 'podcast', 60.0, None, 100.0), (2, 'video', None, None, 200.0)]),
                    label='Enriched')
        assert_that(dead, equal_to([(3, 'unknown_content', 'enrich')]), label='DeadLetters')


def test_postgres_loader_builds_contents_skips_invalid_rows_and_hides_the_dsn(monkeypatch):
    rows = [(PODCAST, 'content-12', 'A Short History Of Privacy #12', 'podcast', 1464, content().publish_ts),
            (VIDEO, 'content-13', 'Broken', None, 10, content().publish_ts)]    # content_type NULL is allowed by SQL

    class Cursor:
        def __enter__(self): return self
        def __exit__(self, *exc): return False
        def execute(self, query): self.query = query
        def fetchall(self): return rows

    class Connection:
        closed = False
        def cursor(self): return Cursor()
        def close(self): self.closed = True

    connection = Connection()
    seen = {}

    def connect(dsn, connect_timeout):
        seen.update(dsn=dsn, timeout=connect_timeout)
        return connection

    monkeypatch.setitem(sys.modules, 'psycopg2', types.SimpleNamespace(connect=connect))
    loader = pickle.loads(pickle.dumps(PostgresContentLoader('postgresql://app:secret@db/engagement')))

    catalogue = loader()

    assert list(catalogue) == [PODCAST] and catalogue[PODCAST].length_seconds == 1464
    assert seen == {'dsn': 'postgresql://app:secret@db/engagement', 'timeout': 5} and connection.closed
    assert 'secret' not in repr(loader)


def test_invalid_settings_fail_at_construction():
    with pytest.raises(ValueError, match='refresh_seconds'):
        EnrichWithContent(CatalogueLoader([]), refresh_seconds=0)
    with pytest.raises(TypeError, match='loader must be callable'):
        EnrichWithContent('postgresql://localhost/engagement')


def test_an_event_whose_enrichment_raises_is_an_unexpected_error_dead_letter(monkeypatch):
    from transforms import enrich as enrich_module
    fn = enrich_module.EnrichWithContentFn(lambda: {PODCAST: content(PODCAST)}, 60, 1.0)
    fn.setup()
    monkeypatch.setattr(enrich_module, 'enrich_event', lambda event, content: 1 / 0)

    out = list(fn.process(ingested(id=9, content_id=PODCAST)))

    assert len(out) == 1 and out[0].tag == 'dead_letters'
    letter = out[0].value
    assert (letter.stage, letter.reason, letter.event_id) == ('enrich', 'unexpected_error', 9)
    assert letter.error.startswith('ZeroDivisionError while enriching')
