"""`--kafka_reader=xlang`: its options are validated at start, kafka-python settings become the Java consumer's,
and the whole engagement graph builds with Beam's cross-language ReadFromKafka, expanded by the Java expansion
service `make install` assembles (started on 127.0.0.1 for the build and stopped afterwards). No Kafka needed."""
from __future__ import annotations

import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from connectors.kafka.expansion_service import LocalExpansionService
from connectors.kafka.xlang import ReadFromKafkaXlang, java_consumer_config
from pipelines import engagement, xlang
from pipelines.options import EngagementOptions, InvalidOption


def options(*argv) -> EngagementOptions:
    return PipelineOptions(list(argv)).view_as(EngagementOptions)


@pytest.mark.parametrize('argv, flag', [
    (['--kafka_reader=java'], '--kafka_reader'),
    (['--kafka_reader=xlang', '--kafka_expansion_service=localhost'], '--kafka_expansion_service'),
    (['--kafka_expansion_service=127.0.0.1:8097'], '--kafka_expansion_service'),  # without xlang: a mistake
    (['--kafka_reader=xlang', '--kafka_security_protocol=SASL_SSL', '--kafka_sasl_mechanism=OAUTHBEARER'],
     '--kafka_sasl_mechanism'),
])
def test_bad_reader_options_are_refused_naming_the_flag(argv, flag):
    with pytest.raises(InvalidOption, match=flag):
        options(*argv).validate()


def test_reader_options_default_to_python_and_accept_xlang_with_a_service():
    assert options().validate().kafka_reader == 'python'
    opts = options('--kafka_reader=xlang', '--kafka_expansion_service=127.0.0.1:8097').validate()
    assert (opts.kafka_reader, opts.kafka_expansion_service) == ('xlang', '127.0.0.1:8097')


def test_kafka_python_settings_become_java_consumer_properties():
    java = java_consumer_config({'bootstrap_servers': ['b1:9092', 'b2:9092'], 'security_protocol': 'SASL_SSL',
                                 'sasl_mechanism': 'SCRAM-SHA-512', 'sasl_plain_username': 'svc',
                                 'sasl_plain_password': 'p"w', 'ssl_cafile': '/etc/ca.pem'}, 'engagement-pipeline')
    assert java == {
        'bootstrap.servers': 'b1:9092,b2:9092', 'security.protocol': 'SASL_SSL', 'sasl.mechanism': 'SCRAM-SHA-512',
        'sasl.jaas.config': 'org.apache.kafka.common.security.scram.ScramLoginModule required username="svc" '
                            'password="p\\"w";',
        'ssl.truststore.type': 'PEM', 'ssl.truststore.location': '/etc/ca.pem', 'group.id': 'engagement-pipeline',
        'auto.offset.reset': 'earliest', 'enable.auto.commit': 'false'}
    with pytest.raises(ValueError, match='fetch_max_bytes'):
        java_consumer_config({'bootstrap_servers': 'b:1', 'fetch_max_bytes': 1}, None)


def test_the_group_is_required_since_the_java_read_starts_from_its_commits():
    with pytest.raises(ValueError, match='group_id is required'):
        ReadFromKafkaXlang({'bootstrap_servers': 'b:1'}, ['t'], group_id=None)


@pytest.fixture(scope='module')
def launcher_jar():
    jar = xlang.kafka_expansion_service_jar()
    if not jar.is_file():
        pytest.skip(f'{jar} is not installed (make install builds it)')
    return jar


def test_the_engagement_graph_builds_with_the_cross_language_reader(launcher_jar):
    with LocalExpansionService(launcher_jar) as service:
        pid = service.pid
        argv = ['--kafka_reader=xlang', f'--kafka_expansion_service={service.address}',
                '--kafka_bootstrap_servers=127.0.0.1:9', '--api_url=', '--bq_enabled=false']
        opts = options(*argv).validate()
        p = beam.Pipeline(options=opts)
        outputs = engagement.build(p, opts)
        proto = p.to_runner_api()
    names = [t.unique_name for t in proto.components.transforms.values()]
    assert 'ReadFromKafka/ToKafkaRecord' in names
    # Expanded by the Java service: KafkaIO's own steps are in the graph, reading with Java's splittable DoFn.
    assert any(n.startswith('ReadFromKafka/KafkaIO/KafkaIO.Read/') and 'ReadSourceDescriptors' in n for n in names)
    # The Java part was expanded by the service: its environment is the loopback worker on 127.0.0.1.
    java_envs = [env for env_id, env in proto.components.environments.items() if b'127.0.0.1:' in
                 env.SerializeToString()]
    assert java_envs, 'no environment names the expansion service\'s loopback worker'
    assert outputs['records'].element_type.__name__ == 'KafkaRecord'
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped when the block ended
