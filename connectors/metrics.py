"""The pipeline's metrics, each named once and reported twice: as a Beam metric (what the runner aggregates and
Dataflow shows in Cloud Monitoring as a custom counter of its step) and as a Prometheus metric of this process
(what `--metrics_port` serves on the local runners, whose SDK worker runs inside the pipeline process).

    RECORDS_READ.inc(42, topic='engagement.raw_events', partition=0)
    # Beam: counter ReadFromKafka/records/engagement.raw_events/0 += 42
    # Prometheus: engagement_kafka_records_read_total{topic="engagement.raw_events",partition="0"} += 42

A Beam metric's name is its declared name followed by the label values, `/`-separated; histograms are Beam
distributions in milliseconds. Prometheus counters count attempts (a bundle the runner retries counts again);
Beam's committed values count each bundle once. The objects pickle as their name, so DoFns may hold them.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any

import prometheus_client
from apache_beam.metrics import Metrics

_CATALOGUE: dict[str, 'Metric'] = {}
# Seconds; from a Redis write (milliseconds) to an event's way through the pipeline under load (tens of seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


def _named(name: str) -> 'Metric':
    return _CATALOGUE[name]


class Metric:
    """One metric in both worlds; `labels` name the Prometheus labels, whose values also extend the Beam name."""
    _prometheus_type: Any = None

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...] = (), *, beam: tuple[str, str],
                 **prometheus_kwargs):
        if name in _CATALOGUE:
            raise ValueError(f'metric {name} is declared twice')
        self.name, self.labels = name, labels
        self._beam_namespace, self._beam_name = beam
        self._prometheus = self._prometheus_type(name, documentation, labels, **prometheus_kwargs)
        self._children: dict[tuple, tuple[Any, Any]] = {}
        self._lock = threading.Lock()
        _CATALOGUE[name] = self

    def __reduce__(self):
        return _named, (self.name,)

    def _pair(self, values: dict[str, Any]) -> tuple[Any, Any]:
        key = tuple(str(values[label]) for label in self.labels)
        pair = self._children.get(key)
        if pair is None:
            with self._lock:
                beam_name = '/'.join((self._beam_name, *key))
                prometheus = self._prometheus.labels(*key) if self.labels else self._prometheus
                pair = self._children[key] = (self._beam(self._beam_namespace, beam_name), prometheus)
        return pair

    @staticmethod
    def _beam(namespace: str, name: str) -> Any:
        raise NotImplementedError


class Counter(Metric):
    _prometheus_type = prometheus_client.Counter
    _beam = staticmethod(Metrics.counter)

    def inc(self, n: int = 1, **labels: Any) -> None:
        beam, prometheus = self._pair(labels)
        beam.inc(n)
        prometheus.inc(n)


class Gauge(Metric):
    _prometheus_type = prometheus_client.Gauge
    _beam = staticmethod(Metrics.gauge)

    def set(self, value: float, **labels: Any) -> None:
        beam, prometheus = self._pair(labels)
        beam.set(int(value))
        prometheus.set(value)

    def add(self, delta: float, **labels: Any) -> None:
        """Move the gauge by `delta` (e.g. one more or one fewer open breaker among this process's DoFns)."""
        beam, prometheus = self._pair(labels)
        with self._lock:
            prometheus.inc(delta)
            beam.set(int(prometheus._value.get()))


class Histogram(Metric):
    """Seconds in Prometheus, milliseconds in the Beam distribution."""
    _prometheus_type = prometheus_client.Histogram
    _beam = staticmethod(Metrics.distribution)

    def observe(self, seconds: float, **labels: Any) -> None:
        beam, prometheus = self._pair(labels)
        beam.update(int(seconds * 1000))
        prometheus.observe(seconds)


# -- the catalogue ------------------------------------------------------------------------------------------
# Reader
RECORDS_READ = Counter('engagement_kafka_records_read_total', 'Kafka records read', ('topic', 'partition'),
                       beam=('ReadFromKafka', 'records'))
BYTES_READ = Counter('engagement_kafka_bytes_read_total', 'Bytes of Kafka keys and values read',
                     ('topic', 'partition'), beam=('ReadFromKafka', 'bytes'))
PARTITION_LAG = Gauge('engagement_kafka_partition_lag_records',
                      'Records between the reader and the end of the partition at its last fetch',
                      ('topic', 'partition'), beam=('ReadFromKafka', 'lag'))
LAST_FETCH = Gauge('engagement_kafka_last_fetch_timestamp_seconds', 'When the reader last got records of the '
                   'partition (Unix time)', ('topic', 'partition'), beam=('ReadFromKafka', 'last_fetch_s'))
WATERMARK = Gauge('engagement_reader_watermark_seconds', 'The reader\'s output watermark (Unix time)',
                  beam=('ReadFromKafka', 'watermark_s'))
WATERMARK_LAG = Gauge('engagement_reader_watermark_lag_seconds',
                      'Wall-clock time minus the reader\'s output watermark, when it last moved',
                      beam=('ReadFromKafka', 'watermark_lag_s'))
# Stages
EVENTS_PARSED = Counter('engagement_events_parsed_total', 'Events that passed validation, by source (cdc, direct)',
                        ('source',), beam=('ParseEvents', 'events'))
EVENTS_ENRICHED = Counter('engagement_events_enriched_total', 'Events enriched with their content, by content type',
                          ('content_type',), beam=('EnrichWithContent', 'enriched'))
EVENTS_COUNTED = Counter('engagement_events_counted_total', 'Events that entered the window aggregation',
                         beam=('ContentStatsPerWindow', 'events'))
CATALOGUE_CONTENTS = Gauge('engagement_catalogue_contents', 'Contents in the enrichment catalogue',
                           beam=('EnrichWithContent', 'catalogue_size'))
CATALOGUE_REFRESHED = Gauge('engagement_catalogue_refreshed_timestamp_seconds',
                            'When the enrichment catalogue was last loaded (Unix time)',
                            beam=('EnrichWithContent', 'catalogue_refreshed_s'))
DEAD_LETTERS = Counter('engagement_dead_letters_total', 'Dead letters written, by stage and reason',
                       ('stage', 'reason'), beam=('WriteDeadLettersToKafka', 'dead_letters'))
# Sinks
PANES_WRITTEN = Counter('engagement_panes_written_total', 'Window panes written, by sink', ('sink',),
                        beam=('engagement', 'panes_written'))
ROWS_WRITTEN = Counter('engagement_rows_written_total', 'Rows handed to BigQuery, by table', ('table',),
                       beam=('WriteToBigQuery', 'rows'))
SINK_WRITE_SECONDS = Histogram('engagement_sink_write_seconds', 'Time of one batch write, by sink (retries included)',
                               ('sink',), beam=('engagement', 'sink_write_ms'), buckets=LATENCY_BUCKETS)
SINK_RETRIES = Counter('engagement_sink_retries_total', 'Batch writes retried, by sink', ('sink',),
                       beam=('engagement', 'sink_retries'))
SINK_FAILURES = Counter('engagement_sink_failures_total', 'Batch writes given up (the bundle fails or its events '
                        'are dead-lettered), by sink', ('sink',), beam=('engagement', 'sink_failures'))
VIRAL_ALERTS = Counter('engagement_viral_alerts_total', 'Viral-content alerts raised (one per content and window), '
                       'by content type', ('content_type',), beam=('WriteContentStatsToRedis', 'viral_alerts'))
EVENT_TO_REDIS_SECONDS = Histogram(
    'engagement_event_to_redis_seconds',
    'From the Kafka timestamp of the newest event of a pane (the commit, for CDC events) to the pane\'s Redis write',
    beam=('WriteContentStatsToRedis', 'event_to_redis_ms'), buckets=LATENCY_BUCKETS)
API_EVENTS = Counter('engagement_api_events_total', 'Events the REST API holds, by answer (accepted, duplicate)',
                     ('status',), beam=('DeliverToApi', 'events'))
API_BREAKERS_OPEN = Gauge('engagement_api_breakers_open', 'Circuit breakers of the REST API sink that are open '
                          '(one breaker per DoFn instance)', beam=('DeliverToApi', 'breakers_open'))


def _catalogue_age() -> float:
    refreshed = CATALOGUE_REFRESHED._prometheus._value.get()
    return time.time() - refreshed if refreshed else math.nan


# Prometheus only, computed when scraped (the Beam side has the refresh time, from which Cloud Monitoring computes
# the same): NaN before the first load.
CATALOGUE_AGE = prometheus_client.Gauge('engagement_catalogue_age_seconds',
                                        'Seconds since the enrichment catalogue was last loaded')
CATALOGUE_AGE.set_function(_catalogue_age)


def serve(port: int, host: str = '127.0.0.1') -> None:
    """Serve this process's metrics (these and the process's own) at http://host:port/metrics, in a thread."""
    prometheus_client.start_http_server(port, addr=host)
