"""Credentials from the environment or files, and the one-line refusals, without a server (the refusals against real
servers are in tests/e2e/test_secure_stack.py)."""
from __future__ import annotations

import pytest

from connectors.credentials import (
    CredentialsRefused,
    check_kafka,
    check_postgres,
    java_client_properties,
    kafka_security_settings,
    redis_credentials,
    secret,
)
from tests.conftest import free_ports


def test_a_secret_comes_from_its_variable_first_then_from_the_file_its_file_variable_names(tmp_path):
    path = tmp_path / 'pw'
    path.write_text('from-the-file\n')
    assert secret('X_PASSWORD', {'X_PASSWORD_FILE': str(path)}) == 'from-the-file'
    assert secret('X_PASSWORD', {'X_PASSWORD': 'direct', 'X_PASSWORD_FILE': str(path)}) == 'direct'
    assert secret('X_PASSWORD', {}) is None
    with pytest.raises(ValueError, match=r'X_PASSWORD_FILE=/nonexistent/pw: No such file'):
        secret('X_PASSWORD', {'X_PASSWORD_FILE': '/nonexistent/pw'})


def test_tools_read_kafka_security_from_the_pipelines_variables(tmp_path):
    (tmp_path / 'pw').write_text('s3cret-value')
    environ = {'KAFKA_SECURITY_PROTOCOL': 'SASL_SSL', 'KAFKA_SASL_MECHANISM': 'PLAIN', 'KAFKA_SASL_USERNAME': 'svc',
               'KAFKA_SASL_PASSWORD_FILE': str(tmp_path / 'pw'), 'KAFKA_SSL_CAFILE': '/ca.pem'}
    assert kafka_security_settings(environ) == {
        'security_protocol': 'SASL_SSL', 'sasl_mechanism': 'PLAIN', 'sasl_plain_username': 'svc',
        'sasl_plain_password': 's3cret-value', 'ssl_cafile': '/ca.pem'}
    assert kafka_security_settings({}) == {}
    assert redis_credentials({'REDIS_USERNAME': 'u', 'REDIS_PASSWORD_FILE': str(tmp_path / 'pw')}) == {
        'username': 'u', 'password': 's3cret-value'}
    assert redis_credentials({}) == {}


def test_java_properties_for_connect_and_kafkaio_leave_unknown_settings_to_the_caller():
    config = {'bootstrap_servers': ['b:1'], 'security_protocol': 'SASL_SSL', 'sasl_mechanism': 'PLAIN',
              'sasl_plain_username': 'u', 'sasl_plain_password': 'p', 'linger_ms': 5}
    java = java_client_properties(config)
    assert java['sasl.jaas.config'] == ('org.apache.kafka.common.security.plain.PlainLoginModule required '
                                        'username="u" password="p";')
    assert config == {'linger_ms': 5}


def test_unreachable_services_are_not_a_refusal():
    # A pipeline started during an outage waits for the service, as it always did: only a refusal is fatal.
    port = free_ports(1)[0]
    check_kafka({'bootstrap_servers': f'127.0.0.1:{port}', 'security_protocol': 'SASL_SSL',
                 'sasl_mechanism': 'PLAIN', 'sasl_plain_username': 'u', 'sasl_plain_password': 'p'}, timeout=2)
    check_postgres(f'host=127.0.0.1 port={port} dbname=x user=postgres', timeout=2)
    assert issubclass(CredentialsRefused, Exception)
