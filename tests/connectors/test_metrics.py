"""Each metric is a Beam metric and a Prometheus metric at once: same increments, Beam names extended by the label
values, histograms in seconds and milliseconds; metrics pickle as their name; the endpoint serves them."""
from __future__ import annotations

import pickle
import urllib.request

import prometheus_client
import pytest
from apache_beam.metrics.execution import MetricsContainer
from apache_beam.metrics.metricbase import MetricName
from apache_beam.runners.worker import statesampler
from apache_beam.utils import counters

from connectors import metrics
from tests.conftest import free_ports

COUNTER = metrics.Counter('engagement_test_things_total', 'Things', ('kind',), beam=('Test', 'things'))
GAUGE = metrics.Gauge('engagement_test_open', 'Open things', beam=('Test', 'open'))
HISTOGRAM = metrics.Histogram('engagement_test_seconds', 'Time of things', beam=('Test', 'time_ms'),
                              buckets=(0.1, 1.0))


@pytest.fixture
def beam_container():
    """The Beam metrics container of a step, current as it is while a runner runs a DoFn."""
    container = MetricsContainer('step')
    sampler = statesampler.StateSampler('', counters.CounterFactory())
    statesampler.set_current_tracker(sampler)
    sampler.start()
    try:
        with sampler.scoped_state('step', 'process', metrics_container=container):
            yield container
    finally:
        sampler.stop()
        statesampler.set_current_tracker(None)


def prometheus(name: str, **labels) -> float | None:
    return prometheus_client.REGISTRY.get_sample_value(name, labels)


def test_a_counter_counts_in_both_worlds(beam_container):
    before = prometheus('engagement_test_things_total', kind='a') or 0
    COUNTER.inc(3, kind='a')
    COUNTER.inc(kind='a')
    COUNTER.inc(kind='b')
    assert prometheus('engagement_test_things_total', kind='a') == before + 4
    assert beam_container.get_counter(MetricName('Test', 'things/a')).get_cumulative() == 4
    assert beam_container.get_counter(MetricName('Test', 'things/b')).get_cumulative() == 1


def test_a_gauge_is_set_or_moved(beam_container):
    GAUGE.set(2)
    GAUGE.add(1)
    GAUGE.add(-2)
    assert prometheus('engagement_test_open') == 1
    assert beam_container.get_gauge(MetricName('Test', 'open')).get_cumulative().value == 1


def test_a_histogram_is_seconds_in_prometheus_and_milliseconds_in_beam(beam_container):
    HISTOGRAM.observe(0.05)
    HISTOGRAM.observe(0.5)
    assert prometheus('engagement_test_seconds_bucket', le='0.1') >= 1
    assert prometheus('engagement_test_seconds_count') >= 2
    distribution = beam_container.get_distribution(MetricName('Test', 'time_ms')).get_cumulative()
    assert (distribution.count, distribution.sum, distribution.min, distribution.max) == (2, 550, 50, 500)


def test_metrics_pickle_as_their_name_and_are_declared_once():
    assert pickle.loads(pickle.dumps(COUNTER)) is COUNTER
    assert pickle.loads(pickle.dumps(metrics.DEAD_LETTERS)) is metrics.DEAD_LETTERS
    with pytest.raises(ValueError, match='declared twice'):
        metrics.Counter('engagement_test_things_total', 'again', beam=('Test', 'again'))


def test_the_endpoint_serves_the_catalogue_on_loopback():
    port = free_ports(1)[0]
    metrics.serve(port)
    metrics.DEAD_LETTERS.inc(stage='parse', reason='malformed_json')
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5) as response:
        text = response.read().decode()
    assert 'engagement_dead_letters_total{reason="malformed_json",stage="parse"}' in text
    assert '# HELP engagement_sink_write_seconds' in text and '# TYPE engagement_catalogue_age_seconds gauge' in text
