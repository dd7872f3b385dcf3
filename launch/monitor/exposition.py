"""The service's `/metrics`: gauges of the stack computed when scraped (consumer-group lag and end offsets per
partition, replication slots, the CDC connector's tasks), followed by the pipeline's own exposition fetched from its
`--metrics_port`. Prometheus scrapes this one target and sees both; `engagement_pipeline_up` says whether the
pipeline answered."""
from __future__ import annotations

import logging
import urllib.error

import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from launch.monitor.probes import KafkaView, Targets, cdc_connector_state, http_get, replication_slots

_LOG = logging.getLogger(__name__)
PIPELINE_TIMEOUT_S = 2.0


class StackCollector(Collector):
    def __init__(self, targets: Targets, kafka: KafkaView):
        self._targets, self._kafka = targets, kafka

    def collect(self):
        yield from self._kafka_families()
        yield from self._cdc_families()

    def _kafka_families(self):
        lag = GaugeMetricFamily('engagement_consumer_lag_records', 'End offset minus the consumer group\'s '
                                'committed offset', labels=['group', 'topic', 'partition'])
        end = GaugeMetricFamily('engagement_kafka_end_offset', 'End offset of the partition',
                                labels=['topic', 'partition'])
        committed = GaugeMetricFamily('engagement_consumer_committed_offset', 'The consumer group\'s committed '
                                      'offset', labels=['group', 'topic', 'partition'])
        up = GaugeMetricFamily('engagement_kafka_up', '1 when Kafka answered this scrape')
        try:
            rows = self._kafka.partitions()
        except Exception as exc:  # noqa: BLE001 - a scrape reports what it could not read, it does not fail
            _LOG.warning('kafka view failed: %s: %s', type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        group = self._kafka.group
        for row in rows:
            partition = str(row['partition'])
            if row['end_offset'] is not None:
                end.add_metric([row['topic'], partition], row['end_offset'])
            if row['committed_offset'] is not None:
                committed.add_metric([group, row['topic'], partition], row['committed_offset'])
                lag.add_metric([group, row['topic'], partition], row['lag'])
        yield from (up, end, committed, lag)

    def _cdc_families(self):
        retained = GaugeMetricFamily('engagement_replication_slot_wal_retained_bytes', 'WAL Postgres keeps for the '
                                     'replication slot', labels=['slot'])
        active = GaugeMetricFamily('engagement_replication_slot_active', '1 while a client streams from the slot',
                                   labels=['slot'])
        try:
            for slot in replication_slots(self._targets.pg_dsn):
                retained.add_metric([slot['slot']], slot['wal_retained_bytes'])
                active.add_metric([slot['slot']], 1 if slot['active'] else 0)
        except Exception as exc:  # noqa: BLE001
            _LOG.warning('replication slots unreadable: %s: %s', type(exc).__name__, exc)
        yield from (retained, active)
        if self._targets.connect_url:
            running = GaugeMetricFamily('engagement_cdc_connector_running', '1 when the CDC connector and all its '
                                        'tasks are RUNNING', labels=['connector'])
            try:
                cdc_connector_state(self._targets, PIPELINE_TIMEOUT_S)
                running.add_metric([self._targets.connector], 1)
            except Exception:  # noqa: BLE001 - any answer but "all RUNNING" is 0
                running.add_metric([self._targets.connector], 0)
            yield running


def registry(targets: Targets, kafka: KafkaView) -> prometheus_client.CollectorRegistry:
    """A registry of the stack's gauges only (the pipeline brings its process metrics; ours would collide)."""
    reg = prometheus_client.CollectorRegistry(auto_describe=False)
    reg.register(StackCollector(targets, kafka))
    return reg


def _pipeline_text(url: str | None) -> str | None:
    if not url:
        return None
    try:
        status, body = http_get(url, PIPELINE_TIMEOUT_S)
    except (OSError, urllib.error.URLError):
        return None
    return body.decode() if status == 200 else None


def render(reg: prometheus_client.CollectorRegistry, pipeline_metrics_url: str | None) -> tuple[str, str]:
    """(exposition text, content type): the stack's gauges, `engagement_pipeline_up`, then the pipeline's."""
    ours = prometheus_client.generate_latest(reg).decode()
    pipeline = _pipeline_text(pipeline_metrics_url)
    up = ('# HELP engagement_pipeline_up 1 when the pipeline\'s metrics endpoint answered this scrape\n'
          f'# TYPE engagement_pipeline_up gauge\nengagement_pipeline_up {0 if pipeline is None else 1}\n')
    return ours + up + (pipeline or ''), prometheus_client.CONTENT_TYPE_LATEST


def pipeline_metrics(url: str | None) -> dict[str, dict[frozenset, float]] | None:
    """{sample name: {frozenset of (label, value): value}} of the pipeline's exposition, None when it does not
    answer."""
    text = _pipeline_text(url)
    if text is None:
        return None
    out: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def pipeline_samples(url: str | None, name: str) -> dict[frozenset, float]:
    """{frozenset of (label, value): value} of one metric of the pipeline's exposition (empty when it does not
    answer)."""
    return (pipeline_metrics(url) or {}).get(name, {})


def pipeline_snapshot(url: str | None) -> dict | None:
    """The pipeline's figures the live page shows, or None when it does not answer."""
    text = _pipeline_text(url)
    if text is None:
        return None
    snapshot: dict = {'read': 0.0, 'counted': 0.0, 'dead_letters': {}, 'breakers_open': 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == 'engagement_kafka_records_read_total':
                snapshot['read'] += sample.value
            elif sample.name == 'engagement_events_counted_total':
                snapshot['counted'] += sample.value
            elif sample.name == 'engagement_dead_letters_total':
                reason = f'{sample.labels["stage"]}/{sample.labels["reason"]}'
                snapshot['dead_letters'][reason] = snapshot['dead_letters'].get(reason, 0) + sample.value
            elif sample.name == 'engagement_api_breakers_open':
                snapshot['breakers_open'] = sample.value
    return snapshot
