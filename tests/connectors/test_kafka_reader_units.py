"""connectors.kafka without a broker: the restriction only splits at checkpoints, the watermark is the minimum over
partitions, and wrong arguments fail when the pipeline is built."""
from __future__ import annotations

import pytest
from apache_beam import coders
from apache_beam.utils.timestamp import Timestamp

from connectors.kafka import (_GRID_LEAD_S, KafkaRecord, ReadFromKafka, _Advance, _MinWatermarkProvider, _Partitions,
                              _PartitionsProvider, _ReadPlan, live_call_seconds)

PARTITIONS = (('events', 0), ('events', 1), ('events', 2))


def tracker_at(offsets=(10, 20, 30), watermarks=(None, None, None)):
    return _PartitionsProvider().create_tracker(_Partitions(PARTITIONS, tuple(offsets), tuple(watermarks)))


@pytest.mark.parametrize('fraction', [0.5, 0.25, 1.0, float('nan')])
def test_only_checkpoints_split(fraction):
    tracker = tracker_at()
    assert tracker.try_split(fraction) is None
    assert tracker.try_claim(_Advance(0, 15, 1_000)), 'a refused split leaves the restriction readable'


def test_checkpoint_hands_the_rest_to_the_residual():
    tracker = tracker_at()
    assert tracker.try_claim(_Advance(1, 25, 2_000))
    with pytest.raises(ValueError):
        tracker.check_done()
    primary, residual = tracker.try_split(0)
    assert primary == _Partitions(PARTITIONS, (10, 25, 30), (None, 2_000, None), done=True)
    assert residual == _Partitions(PARTITIONS, (10, 25, 30), (None, 2_000, None))
    assert not tracker.try_claim(_Advance(0, 11, 3_000)), 'nothing is claimed after a checkpoint'
    assert tracker.try_split(0) is None
    tracker.check_done()
    assert tracker.is_bounded() and not _PartitionsProvider().create_tracker(residual).is_bounded()


def test_claims_never_go_back():
    tracker = tracker_at()
    assert tracker.try_claim(_Advance(2, 30, 5_000)), 'an unchanged offset with a newer watermark is a valid claim'
    with pytest.raises(ValueError):
        tracker.try_claim(_Advance(2, 29, 6_000))


def test_initial_restriction_is_the_plan():
    plan = _ReadPlan(PARTITIONS, (1, 2, 3))
    assert _PartitionsProvider().initial_restriction(plan) == _Partitions(PARTITIONS, (1, 2, 3), (None, None, None))


def test_watermark_is_the_minimum_once_every_partition_is_known():
    provider = _MinWatermarkProvider()
    unknown = _Partitions(PARTITIONS, (0, 0, 0), (5_000, None, 9_000))
    assert provider.initial_estimator_state(None, unknown) is None
    known = _Partitions(PARTITIONS, (0, 0, 0), (5_000, 3_000, 9_000))
    assert provider.initial_estimator_state(None, known) == Timestamp(micros=3_000_000)


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


def test_fetcher_takes_the_kafka_python_settings_the_pipeline_passes():
    from connectors.kafka_fetch import librdkafka_settings
    settings = librdkafka_settings({'bootstrap_servers': ['127.0.0.1:1', '127.0.0.1:2'],
                                    'security_protocol': 'SASL_SSL', 'sasl_mechanism': 'SCRAM-SHA-512',
                                    'sasl_plain_username': 'u', 'sasl_plain_password': 'p',
                                    'ssl_cafile': '/ca.pem', 'ssl_check_hostname': False}, fetch_wait_ms=50)
    assert settings['bootstrap.servers'] == '127.0.0.1:1,127.0.0.1:2'
    assert (settings['security.protocol'], settings['sasl.mechanism']) == ('SASL_SSL', 'SCRAM-SHA-512')
    assert (settings['sasl.username'], settings['sasl.password'], settings['ssl.ca.location']) == ('u', 'p', '/ca.pem')
    assert settings['ssl.endpoint.identification.algorithm'] == 'none'
    assert settings['fetch.wait.max.ms'] == 50 and settings['enable.auto.commit'] is False
    import confluent_kafka
    confluent_kafka.Consumer({k: v for k, v in settings.items() if not k.startswith(('sasl', 'ssl', 'security'))}).close()


def test_fetcher_refuses_a_setting_it_cannot_translate():
    from connectors.kafka_fetch import librdkafka_settings
    with pytest.raises(ValueError, match="'sasl_oauth_token_provider'"):
        librdkafka_settings({'bootstrap_servers': 'x:1', 'sasl_oauth_token_provider': object()}, fetch_wait_ms=50)
