"""Configuration errors a user meets before anything starts: the message must say what is wrong and what to change."""
import socket
import subprocess
import sys

import pytest

from launch.stack import config as stack_config
from launch.stack.stack import Stack


def test_defaults_are_documented_ports_on_loopback():
    cfg = stack_config.load({}, environ={})
    assert (cfg.pg_port, cfg.redis_port, cfg.kafka_port, cfg.kafka_controller_port, cfg.connect_port) == \
        (15432, 16379, 19092, 19093, 18083)
    assert cfg.kafka_bootstrap == '127.0.0.1:19092'
    assert cfg.events_topic == 'engagement.public.engagement_events'
    assert cfg.kafka_partitions == 3


def test_flag_beats_environment_beats_default():
    cfg = stack_config.load({'redis_port': '20001'}, environ={'ENGAGEMENT_REDIS_PORT': '20002',
                                                              'ENGAGEMENT_KAFKA_PORT': '20003'})
    assert cfg.redis_port == 20001
    assert cfg.kafka_port == 20003


def test_non_numeric_port_names_flag_and_variable():
    with pytest.raises(stack_config.ConfigError) as err:
        stack_config.load({}, environ={'ENGAGEMENT_PG_PORT': 'fifty'})
    assert str(err.value) == "--pg-port / ENGAGEMENT_PG_PORT: 'fifty' (from ENGAGEMENT_PG_PORT) is not a whole number."


def test_port_out_of_range():
    with pytest.raises(stack_config.ConfigError) as err:
        stack_config.load({'kafka_port': '80'}, environ={})
    assert str(err.value) == ('--kafka-port / ENGAGEMENT_KAFKA_PORT: 80 (from --kafka-port) is out of range; '
                              'use 1024..65535.')


def test_partitions_out_of_range():
    with pytest.raises(stack_config.ConfigError,
                       match=r'--kafka-partitions / ENGAGEMENT_KAFKA_PARTITIONS: 0 .* use 1\.\.64'):
        stack_config.load({}, environ={'ENGAGEMENT_KAFKA_PARTITIONS': '0'})


def test_two_components_on_one_port():
    with pytest.raises(stack_config.ConfigError) as err:
        stack_config.load({'redis_port': '15432'}, environ={})
    assert 'ENGAGEMENT_REDIS_PORT' in str(err.value) and 'ENGAGEMENT_PG_PORT' in str(err.value)
    assert 'both 15432' in str(err.value)


def test_bad_topic_name():
    with pytest.raises(stack_config.ConfigError, match='--raw-topic / ENGAGEMENT_RAW_TOPIC'):
        stack_config.load({'raw_topic': 'raw events'}, environ={})


def test_busy_port_gives_one_line_naming_port_and_variable(stack_config_tmp):
    cfg = stack_config_tmp
    with socket.socket() as squatter:
        squatter.bind(('127.0.0.1', cfg.kafka_port))
        squatter.listen()
        stack = Stack(cfg)
        with pytest.raises(stack_config.ConfigError) as err:
            stack.check_ports(stack.components)
    assert str(err.value) == (f'kafka: port {cfg.kafka_port} on 127.0.0.1 is already in use by another program: '
                              'set ENGAGEMENT_KAFKA_PORT (or --kafka-port) to a free port.')


def test_busy_port_from_the_command_line_starts_nothing(stack_config_tmp):
    cfg = stack_config_tmp
    with socket.socket() as squatter:
        squatter.bind(('127.0.0.1', cfg.redis_port))
        squatter.listen()
        proc = subprocess.run([sys.executable, '-m', 'launch.stack', 'up', *cfg.cli_flags()], capture_output=True,
                              text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f'error: redis: port {cfg.redis_port} on 127.0.0.1 is already in use by another '
                                   'program: set ENGAGEMENT_REDIS_PORT (or --redis-port) to a free port.')
    assert not (cfg.state_dir / 'pids').exists() or not any((cfg.state_dir / 'pids').iterdir())


def test_bad_value_from_the_command_line():
    proc = subprocess.run([sys.executable, '-m', 'launch.stack', 'status', '--pg-port', 'abc'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --pg-port / ENGAGEMENT_PG_PORT: 'abc' (from --pg-port) is not a whole number."


def test_authentication_settings_are_choices_and_a_state_directory_keeps_its_own(tmp_path):
    with pytest.raises(stack_config.ConfigError, match=r"--kafka-security / ENGAGEMENT_KAFKA_SECURITY: 'ssl' .* "
                                                       r'not one of plaintext, sasl_ssl'):
        stack_config.load({'kafka_security': 'ssl'}, environ={})
    cfg = stack_config.load({'state_dir': str(tmp_path), 'kafka_security': 'sasl_ssl',
                             'redis_auth': 'password'}, environ={})
    stack_config.record_authentication(cfg)
    again = stack_config.load({'state_dir': str(tmp_path)}, environ={})  # later commands need not repeat them
    assert (again.kafka_security, again.pg_auth, again.redis_auth) == ('sasl_ssl', 'trust', 'password')
    with pytest.raises(stack_config.ConfigError, match='made with'):
        stack_config.load({'state_dir': str(tmp_path)}, environ={'ENGAGEMENT_KAFKA_SECURITY': 'plaintext'})
    assert oct((tmp_path / 'secrets' / 'settings.json').stat().st_mode & 0o777) == '0o600'


def test_clients_get_file_names_never_secrets(tmp_path):
    from launch.stack import secrets
    cfg = stack_config.load({'state_dir': str(tmp_path), 'kafka_security': 'sasl_ssl', 'pg_auth': 'scram-sha-256',
                             'redis_auth': 'password'}, environ={})
    password = secrets.password(tmp_path, 'kafka-client')
    secrets.password(tmp_path, 'redis')
    env = cfg.env()
    assert env['KAFKA_SASL_PASSWORD_FILE'] == str(tmp_path / 'secrets' / 'kafka-client.password')
    assert env['PGPASSFILE'] == str(tmp_path / 'secrets' / 'pgpass')
    assert f"passfile={tmp_path / 'secrets' / 'pgpass'}" in cfg.pg_dsn
    assert not any(password in value for value in env.values())
    assert cfg.kafka_client_config()['sasl_plain_password'] == password
    assert oct((tmp_path / 'secrets').stat().st_mode & 0o777) == '0o700'
    assert oct((tmp_path / 'secrets' / 'kafka-client.password').stat().st_mode & 0o777) == '0o600'
