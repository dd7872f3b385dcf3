"""docker-compose.yml: valid against the Compose specification's JSON schema (check-jsonschema's vendored copy), and
the same components, versions, ports and settings as `launch.stack`. No Docker engine here, so nothing is started:
docs/operations.md says so."""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch.stack import config as stack_config
from launch.stack import install
from launch.stack.connect import CONNECTOR_NAME, Connect
from launch.stack.kafka import Kafka
from launch.stack.prometheus import scrape_config
from pipelines import local_stack

REPO = stack_config.REPO_ROOT
COMPOSE = REPO / 'docker-compose.yml'
DEPLOY = REPO / 'deploy'
CHECK_JSONSCHEMA = Path(sys.executable).with_name('check-jsonschema')


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _properties(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith('#')]
    return dict(line.split('=', 1) for line in lines)


def _validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHECK_JSONSCHEMA), '--builtin-schema', 'vendor.compose-spec', str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope='module')
def cfg():
    return stack_config.load(environ={})


def test_the_compose_file_is_valid_against_the_compose_specification():
    result = _validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_compose_file(tmp_path):
    broken = copy.deepcopy(_compose())
    broken['services']['redis']['restart'] = ['always']      # a string in the specification
    broken['services']['postgres']['imagee'] = 'postgres:15'  # a misspelt key
    path = tmp_path / 'docker-compose.yml'
    path.write_text(yaml.safe_dump(broken))
    result = _validate(path)
    assert result.returncode == 1 and 'restart' in result.stdout and 'imagee' in result.stdout, result.stdout


def test_every_service_is_on_the_shared_loopback_namespace_and_only_the_page_and_prometheus_are_published(cfg):
    services = _compose()['services']
    assert {name for name, s in services.items() if s.get('network_mode') != 'service:net'} == {'net'}
    published = services['net']['ports']
    assert published == [f'127.0.0.1:{cfg.monitor_port}:{cfg.monitor_port}',
                         f'127.0.0.1:{cfg.prometheus_port}:{cfg.prometheus_port}']


def test_the_services_use_the_ports_of_the_local_stack(cfg):
    services = _compose()['services']

    def command(name):
        return ' '.join(services[name]['command'])

    assert services['postgres']['environment']['PGPORT'] == str(cfg.pg_port)
    assert f'--port {cfg.redis_port}' in command('redis')
    assert f'--port {cfg.gcs_port}' in command('storage') and f'--port {cfg.bq_port}' in command('bigquery')
    assert f'--port {cfg.api_port}' in command('api')
    assert f'--client-id {local_stack.API_CLIENT_ID}' in command('api')
    assert f'--metrics_port={cfg.metrics_port}' in command('pipeline')
    assert f'0.0.0.0:{cfg.prometheus_port}' in command('prometheus')
    assert services['postgres']['environment']['POSTGRES_DB'] == cfg.pg_database


def test_kafka_has_the_listeners_of_the_local_stack(cfg):
    env = _compose()['services']['kafka']['environment']
    props = Kafka(cfg)._listener_properties()
    assert env['KAFKA_LISTENERS'] == props['listeners']
    assert env['KAFKA_ADVERTISED_LISTENERS'] == props['advertised.listeners']
    assert env['KAFKA_LISTENER_SECURITY_PROTOCOL_MAP'] == props['listener.security.protocol.map']
    assert env['KAFKA_CONTROLLER_QUORUM_VOTERS'] == f'1@127.0.0.1:{cfg.kafka_controller_port}'
    assert env['KAFKA_NUM_PARTITIONS'] == str(cfg.kafka_partitions)


def test_connect_and_debezium_have_the_settings_of_the_local_stack(cfg):
    connect = Connect(cfg)
    assert _properties(DEPLOY / 'compose' / 'connect' / 'connector.properties') == {
        'name': CONNECTOR_NAME, **connect.connector_config()}
    expected = {k: str(v) for k, v in connect.worker_config('/var/lib/connect/offsets.dat',
                                                           '/opt/connect-plugins').items()}
    assert _properties(DEPLOY / 'compose' / 'connect' / 'worker.properties') == expected


def test_prometheus_has_the_scrape_config_and_rules_of_the_local_stack(cfg):
    local = scrape_config(cfg).replace(str(REPO / 'launch' / 'monitor' / 'prometheus' / 'alerts.yml'),
                                       '/etc/prometheus/alerts.yml')
    assert yaml.safe_load((DEPLOY / 'compose' / 'prometheus.yml').read_text()) == yaml.safe_load(local)
    volumes = _compose()['services']['prometheus']['volumes']
    assert './launch/monitor/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro' in volumes


def _pom_version(pom: str, artifact: str) -> str:
    text = (install.MAVEN_DIR / pom).read_text()
    return re.search(rf'<artifactId>{artifact}</artifactId><version>([^<]+)</version>', text).group(1)


def test_the_images_pin_the_versions_make_install_installs():
    services = _compose()['services']
    kafka = _pom_version('kafka.pom.xml', 'kafka_2.13')
    debezium = _pom_version('debezium-postgres.pom.xml', 'debezium-connector-postgres')
    assert services['kafka']['image'] == f'apache/kafka:{kafka}'
    connect_image = (DEPLOY / 'connect.Dockerfile').read_text()
    assert f'FROM apache/kafka:{kafka}\n' in connect_image
    plugin = f'debezium-connector-postgres/{debezium}/debezium-connector-postgres-{debezium}-plugin.tar.gz'
    assert plugin in connect_image
    app_image = (DEPLOY / 'Dockerfile').read_text()
    assert f'build_prism.py {install.BEAM_VERSION} ' in app_image
    assert services['postgres']['image'].startswith('postgres:15.')
    for name in ('storage', 'bigquery', 'api', 'init', 'pipeline', 'monitor', 'generator'):
        assert services[name]['image'] == 'engagement-app:dev' and services[name]['build']['dockerfile'] == \
            'deploy/Dockerfile'
