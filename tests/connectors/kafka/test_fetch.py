"""The librdkafka fetch: the kafka-python settings the pipeline passes translate, and a setting it cannot translate
is refused."""
from __future__ import annotations

import pytest

from connectors.kafka.fetch import librdkafka_settings


def test_fetcher_takes_the_kafka_python_settings_the_pipeline_passes():
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
    plain = {k: v for k, v in settings.items() if not k.startswith(('sasl', 'ssl', 'security'))}
    confluent_kafka.Consumer(plain).close()


def test_fetcher_refuses_a_setting_it_cannot_translate():
    with pytest.raises(ValueError, match="'sasl_oauth_token_provider'"):
        librdkafka_settings({'bootstrap_servers': 'x:1', 'sasl_oauth_token_provider': object()}, fetch_wait_ms=50)
