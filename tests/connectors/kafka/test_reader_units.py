"""The reader without a broker: wrong arguments fail when the pipeline is built, live calls end on the grid of
the early firings, records cross stages with the schema coder."""
from __future__ import annotations

import pytest
from apache_beam import coders

from connectors.kafka import KafkaRecord, ReadFromKafka
from connectors.kafka.reader import _GRID_LEAD_S, live_call_seconds


@pytest.mark.parametrize('kwargs, message', [
    (dict(consumer_config={}), 'bootstrap_servers'),
    (dict(consumer_config={'bootstrap_servers': 'k:9092', 'group_id': 'g'}), 'must not set group_id'),
    (dict(consumer_config={'bootstrap_servers': 'k:9092', 'value_deserializer': str}), 'value_deserializer'),
    (dict(topics='events'), 'list of topic names'),
    (dict(start_offset='newest'), 'start_offset must be one of'),
    (dict(group_id=None), 'group_id is required'),
    (dict(start_timestamp_ms=-1), 'start_timestamp_ms'),
    (dict(max_bundle_seconds=0), 'max_bundle_seconds'),
    (dict(live_grid_seconds=0), 'live_grid_seconds'),
    (dict(splits=0), 'splits must be a whole number'),
    (dict(splits=1.5), 'splits must be a whole number'),
])
def test_wrong_arguments_fail_with_the_argument_named(kwargs, message):
    args = dict(consumer_config={'bootstrap_servers': 'k:9092'}, topics=['events'], group_id='g')
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ReadFromKafka(**args)



def test_live_calls_without_a_grid_last_the_live_bundle_time():
    assert live_call_seconds(1_700_000_000.37, 0.1, None) == 0.1


@pytest.mark.parametrize('grid', [1.0, 0.5, 0.25])
def test_live_calls_on_a_grid_end_just_before_its_next_point_leaving_at_least_the_live_time(grid):
    for start in (1_700_000_000.0, 1_700_000_000.05, 1_700_000_000.69, 1_700_000_000.7, 1_700_000_000.99):
        end = start + live_call_seconds(start, 0.1, grid)
        point = end + _GRID_LEAD_S
        assert abs(point / grid - round(point / grid)) < 1e-6, (start, end)   # just before a grid point
        assert 0.1 - 1e-6 <= end - start <= 0.1 + grid + 1e-6, (start, end)   # the first one that leaves 0.1 s
        # One call per period: a call that starts as the previous one ended runs to the next point.
        assert abs(live_call_seconds(end + 0.001, 0.1, grid) - (grid - 0.001)) < 1e-6


def test_records_cross_stages_with_the_schema_coder():
    coder = coders.registry.get_coder(KafkaRecord)
    record = KafkaRecord('events', 2, 41, None, b'{"id": 7}', 1_795_522_806_682)
    stamped = record._replace(watermark_ms=1_795_522_804_000)
    assert isinstance(coder, coders.RowCoder)
    assert coder.decode(coder.encode(record)) == record
    assert coder.decode(coder.encode(stamped)) == stamped
