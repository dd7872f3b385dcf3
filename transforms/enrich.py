"""Enrich events with their content (title, type, length) and the engagement figures derived from both.

Beam concepts: a `DoFn` whose `setup()` loads a lookup table, a tagged dead-letter output, `Metrics.counter`.

    enriched = events | EnrichWithContent(PostgresContentLoader(dsn), refresh_seconds=60)
    enriched.enriched     # PCollection[EnrichedEvent] (timestamps kept); EventBatch in, EventBatch out
    enriched.dead_letters # PCollection[DeadLetter], stage 'enrich', reason unknown_content/content_unavailable

An event whose enrichment raises (a defect an event's content could trigger) becomes a dead letter
`unexpected_error` naming the exception, logged once per exception type; the catalogue's own failures are the
database's and are handled as described in `EnrichWithContent`.

Engagement maths lives in one pure function, `engagement_metrics`.
"""
from __future__ import annotations

import collections
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from pydantic import ValidationError

from connectors import metrics
from schemas import dead_letter as reasons
from schemas.coders import carries_batches
from schemas.content import Content
from schemas.dead_letter import DEAD_LETTERS, DeadLetter
from schemas.events import EnrichedEvent, EventBatch, IngestedEvent
from schemas.trusted import trusted

ENRICHED = 'enriched'

ContentLoader = Callable[[], Mapping[str, Content]]
"""A picklable callable returning the whole catalogue, {content id: Content}. Called on workers."""

_LOG = logging.getLogger(__name__)


class EngagementMetrics(NamedTuple):
    seconds: float | None
    percentage: float | None


def engagement_metrics(duration_ms: int | None, length_seconds: int | None) -> EngagementMetrics:
    """engagement_seconds = duration_ms / 1000 (None without a duration);
    engagement_percentage = engagement_seconds / length_seconds * 100, rounded half away from zero to 2 decimals
    like SQL's round(numeric, 2) (None without a duration, without a length, or with length 0).

    The percentage is computed exactly, in integers: hundredths = duration_ms / (10 * length_seconds) * 100,
    rounded half up, then divided by 100 (one correctly rounded division, the same float as the decimal result).
    Binary floats would round 12.345 down to 12.34 where SQL gives 12.35. It is not capped at 100. Both inputs are
    >= 0 (the models say so), which the rounding relies on."""
    if duration_ms is None:
        return EngagementMetrics(None, None)
    seconds = duration_ms / 1000
    if not length_seconds:
        return EngagementMetrics(seconds, None)
    divisor = 10 * length_seconds
    hundredths = (200 * duration_ms + divisor) // (2 * divisor)
    return EngagementMetrics(seconds, hundredths / 100)


def enrich_event(event: IngestedEvent, content: Content) -> EnrichedEvent:
    """The event joined with its content. Both inputs are validated models, so the result is assembled without
    validating every field a second time (this runs once per event)."""
    seconds, percentage = engagement_metrics(event.duration_ms, content.length_seconds)
    return trusted(EnrichedEvent, {
        **event.__dict__, 'content_title': content.title, 'content_type': content.content_type,
        'length_seconds': content.length_seconds, 'engagement_seconds': seconds,
        'engagement_percentage': percentage})


class PostgresContentLoader:
    """Loads the catalogue from Postgres' `content` table with a short-lived connection per call (calls are
    rare: at most one per refresh interval or rate-limited miss). Rows that do not pass `Content` are left out
    and logged; events for them then go to the dead letters."""
    QUERY = 'SELECT id::text, slug, title, content_type, length_seconds, publish_ts FROM content'

    def __init__(self, dsn: str, connect_timeout_seconds: int = 5):
        self.dsn = dsn
        self.connect_timeout_seconds = connect_timeout_seconds

    def __call__(self) -> dict[str, Content]:
        import psycopg2
        conn = psycopg2.connect(self.dsn, connect_timeout=self.connect_timeout_seconds)
        try:
            with conn.cursor() as cur:
                cur.execute(self.QUERY)
                rows = cur.fetchall()
        finally:
            conn.close()
        catalogue = {}
        for id_, slug, title, content_type, length_seconds, publish_ts in rows:
            try:
                catalogue[id_] = Content(id=id_, slug=slug, title=title, content_type=content_type,
                                         length_seconds=length_seconds, publish_ts=publish_ts)
            except ValidationError as exc:
                _LOG.warning(json.dumps({'event': 'content_row_invalid', 'content_id': id_,
                                         'error': str(exc.errors(include_url=False))[:300]}))
        return catalogue

    def __repr__(self) -> str:  # never show the DSN: it may hold a password
        return 'PostgresContentLoader(<dsn>)'


def load_or_log(loader: ContentLoader, why: str, failures) -> dict[str, Content] | None:
    """The catalogue, or None once a failed load is counted in `failures` and logged (the caller keeps the last)."""
    try:
        return dict(loader())
    except Exception as exc:  # noqa: BLE001 - the database's failure, whatever it raises
        failures.inc()
        _LOG.warning(json.dumps({'event': 'content_reload_failed', 'why': why,
                                 'error': f'{type(exc).__name__}: {str(exc).strip()}'[:300]}))
        return None


def slowly_updating(root, fire_interval: float, load: beam.DoFn, stop_timestamp=None) -> beam.PCollection:
    """Beam's slowly-updating side input: `PeriodicImpulse(fire_interval)` -> `load` -> global window, one pane per
    load (discarding); to be read with `AsList`. The enrichment's side-input mode and the side-input probe
    (launch/scenarios/side_input_probe.py) build it here, so the probe measures what the pipeline runs."""
    from apache_beam.transforms import trigger
    from apache_beam.transforms.periodicsequence import PeriodicImpulse
    from apache_beam.transforms.window import GlobalWindows
    bounds = {} if stop_timestamp is None else {'stop_timestamp': stop_timestamp}
    return (root
            | 'CatalogueImpulse' >> PeriodicImpulse(fire_interval=fire_interval, apply_windowing=False, **bounds)
            | 'LoadCatalogue' >> beam.ParDo(load)
            | 'PanePerLoad' >> beam.WindowInto(GlobalWindows(), trigger=trigger.Repeatedly(trigger.AfterCount(1)),
                                               accumulation_mode=trigger.AccumulationMode.DISCARDING))


class EnrichWithContentFn(beam.DoFn):
    """IngestedEvent -> EnrichedEvent (main) or DeadLetter (tagged `dead_letter`); see EnrichWithContent."""

    def __init__(self, loader: ContentLoader, refresh_seconds: float, miss_reload_interval_seconds: float,
                 clock: Callable[[], float] = time.monotonic, side_input: bool = False):
        self._loader = loader
        self._side_input = side_input  # the catalogue comes as CatalogueVersion side input; no periodic reload
        self._refresh_seconds = math.inf if side_input else refresh_seconds
        self._miss_interval = miss_reload_interval_seconds
        self._clock = clock
        self._reloads = Metrics.counter(self.__class__, 'catalogue_reloads')
        self._reload_failures = Metrics.counter(self.__class__, 'catalogue_reload_failures')
        self._unknown = Metrics.counter(self.__class__, f'dead_letter_{reasons.UNKNOWN_CONTENT}')
        self._unavailable = Metrics.counter(self.__class__, f'dead_letter_{reasons.CONTENT_UNAVAILABLE}')
        self._unexpected_errors = Metrics.counter(self.__class__, f'dead_letter_{reasons.UNEXPECTED_ERROR}')
        self._logged: set[str] = set()

    def setup(self):
        # Wall-clock time of the catalogue in use: a side-input version replaces it only when loaded later.
        self._version_ts = -math.inf
        self._versions_seen: object = None
        # With a side input the first version arrives with it (or a miss loads it directly).
        self._catalogue: dict[str, Content] = {} if self._side_input else self._first_catalogue()
        self._loaded_at = self._clock()
        self._next_refresh = self._loaded_at + self._refresh_seconds  # never, with a side input
        self._last_miss_reload = -math.inf
        # Counted per bundle (finish_bundle): a metric update costs about a microsecond, as much as the enrichment.
        self._enriched_in_bundle: collections.Counter = collections.Counter()

    def _first_catalogue(self) -> dict[str, Content]:
        try:
            catalogue = dict(self._loader())
        except Exception as exc:
            raise RuntimeError(f'EnrichWithContent: the content catalogue could not be loaded '
                               f'({type(exc).__name__}: {str(exc).strip()}); is the database reachable?') from exc
        self._catalogue_loaded(len(catalogue))
        return catalogue

    def _reload(self, now: float, why: str) -> bool:
        catalogue = load_or_log(self._loader, why, self._reload_failures)
        if catalogue is None:  # keep serving the last catalogue; try again after the miss interval
            self._next_refresh = now + max(self._miss_interval, 1.0)
            return False
        self._catalogue, self._loaded_at, self._version_ts = catalogue, now, time.time()
        self._next_refresh = now + self._refresh_seconds
        self._reloads.inc()
        self._catalogue_loaded(len(catalogue))
        return True

    @staticmethod
    def _catalogue_loaded(contents: int) -> None:
        metrics.CATALOGUE_CONTENTS.set(contents)
        metrics.CATALOGUE_REFRESHED.set(time.time())

    def process(self, event: IngestedEvent | EventBatch, versions=()):
        now = self._clock()
        if versions is not self._versions_seen:  # a side input's view is the same object until it changes
            self._adopt(versions, now)
        if now >= self._next_refresh:
            self._reload(now, 'refresh')
        if not isinstance(event, EventBatch):
            result = self._enrich(event, now)
            yield result if type(result) is EnrichedEvent else beam.pvalue.TaggedOutput(DEAD_LETTERS, result)
            return
        enriched = []
        for one in event.events:   # the catalogue is the same for the whole batch (a miss may reload it)
            result = self._enrich(one, now)
            if type(result) is EnrichedEvent:
                enriched.append(result)
            else:
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, result)
        if enriched:
            yield EventBatch(enriched)

    def _enrich(self, event: IngestedEvent, now: float) -> EnrichedEvent | DeadLetter:
        content = self._catalogue.get(event.content_id)
        if content is None:
            reason, error = self._look_up_after_miss(event, now)
            content = self._catalogue.get(event.content_id)
            if content is None:
                (self._unknown if reason == reasons.UNKNOWN_CONTENT else self._unavailable).inc()
                return DeadLetter.for_event(event, stage='enrich', reason=reason, error=error,
                                            now=datetime.now(timezone.utc))
        try:
            enriched = enrich_event(event, content)
        except Exception as exc:  # noqa: BLE001 - an event's content must never fail the bundle
            return self._unexpected(event, exc)
        self._enriched_in_bundle[enriched.content_type] += 1
        return enriched

    def _adopt(self, versions, now: float) -> None:
        """Serve the newest catalogue the side input holds, unless a direct reload (after a miss) is newer."""
        self._versions_seen = versions
        newest = max(versions, key=lambda version: version.loaded_at, default=None)
        if newest is not None and newest.loaded_at > self._version_ts:
            self._catalogue, self._version_ts, self._loaded_at = newest.contents, newest.loaded_at, now

    def _unexpected(self, event: IngestedEvent, exc: Exception) -> DeadLetter:
        """The dead letter of an event whose enrichment raised; logged once per exception type."""
        self._unexpected_errors.inc()
        kind = type(exc).__name__
        if kind not in self._logged:
            self._logged.add(kind)
            _LOG.error(json.dumps({'event': 'enrich_unexpected_error', 'exception': kind, 'error': str(exc)[:300],
                                   'event_id': event.id, 'topic': event.source_topic,
                                   'partition': event.source_partition, 'offset': event.source_offset,
                                   'note': 'dead-lettered; logged once per kind'}))
        return DeadLetter.for_event(event, stage='enrich', reason=reasons.UNEXPECTED_ERROR,
                                    error=f'{kind} while enriching: {str(exc)[:300]}', now=datetime.now(timezone.utc))

    def finish_bundle(self):
        for content_type, count in self._enriched_in_bundle.items():
            metrics.EVENTS_ENRICHED.inc(count, content_type=content_type)
        self._enriched_in_bundle.clear()

    def _look_up_after_miss(self, event: IngestedEvent, now: float) -> tuple[str, str]:
        """Reload once for a miss, unless a reload for a miss happened less than the interval ago; returns the
        dead-letter reason and text that apply if the content is still unknown."""
        if now - self._last_miss_reload < self._miss_interval:
            return reasons.UNKNOWN_CONTENT, (
                f'content {event.content_id} is not in the catalogue ({len(self._catalogue)} contents, '
                f'reloaded {now - self._loaded_at:.1f} s ago)')
        self._last_miss_reload = now
        if self._reload(now, 'miss'):
            return reasons.UNKNOWN_CONTENT, (
                f'content {event.content_id} is not in the catalogue, even after reloading it '
                f'({len(self._catalogue)} contents)')
        return reasons.CONTENT_UNAVAILABLE, (
            f'content {event.content_id} is not in the cached catalogue and reloading it failed; replay this '
            f'dead letter once the database is reachable')


class CatalogueVersion(NamedTuple):
    loaded_at: float                # Unix time of the load
    contents: dict[str, Content]


class LoadCatalogueFn(beam.DoFn):
    """An impulse -> the whole catalogue as a CatalogueVersion; a failed load emits nothing (the side input keeps
    the last version) and is logged and counted."""

    def __init__(self, loader: ContentLoader):
        self._loader = loader
        self._loads = Metrics.counter(EnrichWithContentFn, 'catalogue_reloads')
        self._failures = Metrics.counter(EnrichWithContentFn, 'catalogue_reload_failures')

    def process(self, _impulse):
        contents = load_or_log(self._loader, 'side_input', self._failures)
        if contents is None:  # the last version stays in use
            return
        self._loads.inc()
        EnrichWithContentFn._catalogue_loaded(len(contents))
        yield CatalogueVersion(time.time(), contents)


class EnrichedEvents(NamedTuple):
    enriched: beam.PCollection      # EnrichedEvent, timestamps kept
    dead_letters: beam.PCollection  # DeadLetter, stage 'enrich'


class EnrichWithContent(beam.PTransform):
    """Join each event with its content from a catalogue that follows the database within `refresh_seconds`.

    By default (the runners' `auto` outside Dataflow) the catalogue lives in the DoFn, which behaves the same on
    every runner; Beam 2.77's Prism refuses a triggered global-window side input (apache/beam#31438) and its Flink
    runner neither refreshes one for live elements nor checkpoints its state (docs/runners.md):
      * `setup()` loads it once per DoFn instance (per worker thread);
      * it is reloaded when `refresh_seconds` have passed (checked as events arrive);
      * an event whose content is missing triggers one reload, at most once per
        `miss_reload_interval_seconds` per DoFn, so a stream of bad ids cannot hammer the database; if the
        content is still unknown the event goes to the dead letters as `unknown_content` (or
        `content_unavailable` if the reload failed). A failed periodic reload keeps the last catalogue.
    Everything lives inside this one transform so that the pipeline does not depend on how the catalogue
    travels.

    With `side_input=True` the catalogue travels as Beam's slowly-updating side input instead:
    `PeriodicImpulse(refresh_seconds)` -> load -> global window, a pane per load (discarding) -> `AsList`; each DoFn
    serves the newest version it sees. A miss still loads the catalogue once directly (rate-limited as above), so a
    new content is used from its first event rather than from the next impulse. For unbounded pipelines on runners
    that deliver a refreshed side input to live elements (Dataflow; `python -m launch.scenarios.side_input_probe`
    tells for a runner). The impulse never ends: a bounded pipeline (a backfill) uses the default.

    `loader` must be picklable (it is shipped to workers): e.g. `PostgresContentLoader(dsn)`.
    """

    def __init__(self, loader: ContentLoader, refresh_seconds: float = 60,
                 miss_reload_interval_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 side_input: bool = False):
        super().__init__()
        if not callable(loader):
            raise TypeError(f'EnrichWithContent: loader must be callable, got {loader!r}')
        if not refresh_seconds > 0:
            raise ValueError(f'EnrichWithContent: refresh_seconds must be > 0, got {refresh_seconds}')
        if not miss_reload_interval_seconds >= 0:
            raise ValueError(f'EnrichWithContent: miss_reload_interval_seconds must be >= 0, '
                             f'got {miss_reload_interval_seconds}')
        self._loader, self._refresh_seconds, self._side_input = loader, refresh_seconds, side_input
        self._fn = EnrichWithContentFn(loader, refresh_seconds, miss_reload_interval_seconds, clock, side_input)

    def expand(self, events):
        side = {'versions': beam.pvalue.AsList(slowly_updating(events.pipeline, self._refresh_seconds,
                                                               LoadCatalogueFn(self._loader)))
                } if self._side_input else {}
        join = beam.ParDo(self._fn, **side)
        if carries_batches(events):
            join = join.with_output_types(EventBatch)
        outputs = events | 'JoinContentCatalogue' >> join.with_outputs(DEAD_LETTERS, main=ENRICHED)
        return EnrichedEvents(outputs[ENRICHED], outputs[DEAD_LETTERS])
