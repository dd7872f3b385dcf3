"""Kafka Connect standalone with Debezium's Postgres connector (pgoutput): the CDC of `content` and
`engagement_events` onto Kafka. `start` returns once the replication slot streams, so that rows inserted right
after `up` are captured by the stream rather than racing the snapshot.
"""
from __future__ import annotations

import urllib.error
from pathlib import Path

from launch.stack import secrets
from launch.stack.component import (
    Component,
    StackError,
    http_json,
    java_binary,
    log4j2_config,
    wait_ready,
    write_properties,
)
from launch.stack.postgres import Postgres

CONNECTOR_NAME = 'engagement-cdc'


class Connect(Component):
    name = 'connect'
    port_settings = ('connect_port',)

    def connector_config(self) -> dict[str, str]:
        c = self.cfg
        slot = c.topic_prefix.replace('.', '_').replace('-', '_') + '_cdc'
        return {
            'connector.class': 'io.debezium.connector.postgresql.PostgresConnector', 'tasks.max': '1',
            'plugin.name': 'pgoutput', 'slot.name': slot, 'publication.name': slot,
            'publication.autocreate.mode': 'filtered',
            'database.hostname': '127.0.0.1', 'database.port': str(c.pg_port), 'database.user': 'postgres',
            'database.dbname': c.pg_database, 'topic.prefix': c.topic_prefix,
            'table.include.list': 'public.content,public.engagement_events',
            'snapshot.mode': 'initial',
            # The default 500 ms poll makes insert-to-Kafka p50 ~650 ms; 50 ms gives ~50 ms (STACK-NOTES).
            'poll.interval.ms': '50', 'max.batch.size': '4096', 'max.queue.size': '16384',
            'tombstones.on.delete': 'false',
            # Debezium 3 adds four `__debezium.context.*` headers (~190 bytes, a run UUID among them) to every
            # record by default; nothing here reads them, and kafka-python decodes headers in pure Python per record.
            'extended.headers.enabled': 'false',
        }

    def worker_config(self, offsets_file: Path | str, plugin_path: Path | str) -> dict[str, object]:
        """The standalone worker's settings (less the Kafka client's security ones)."""
        return {
            'bootstrap.servers': self.cfg.kafka_bootstrap,
            'key.converter': 'org.apache.kafka.connect.json.JsonConverter', 'key.converter.schemas.enable': 'false',
            'value.converter': 'org.apache.kafka.connect.json.JsonConverter',
            'value.converter.schemas.enable': 'false',
            'offset.storage.file.filename': offsets_file,
            # A short flush interval bounds the re-sent changes after a crash (Debezium is at-least-once).
            'offset.flush.interval.ms': 1000,
            'plugin.path': plugin_path, 'plugin.discovery': 'service_load',
            'listeners': f'http://127.0.0.1:{self.cfg.connect_port}',
            'rest.advertised.host.name': '127.0.0.1', 'rest.advertised.port': self.cfg.connect_port,
            'producer.linger.ms': 5,
        }

    def start(self) -> None:
        lib = self.cfg.home / 'connect' / 'lib'
        plugins = self.cfg.home / 'connect' / 'plugins'
        if not any(lib.glob('connect-runtime-*.jar')) or not (plugins / 'debezium-postgres').is_dir():
            raise StackError(f'Kafka Connect / Debezium jars not found under {self.cfg.home / "connect"}: '
                             'run `make install`.')
        self.dir.mkdir(parents=True, exist_ok=True)
        worker = write_properties(self.dir / 'worker.properties', {
            **self.worker_config(self.dir / 'offsets.dat', plugins), **self._kafka_security()}, private=True)
        connector = self.connector_config()
        if self.cfg.pg_auth != 'trust':
            connector['database.password'] = secrets.read_password(self.cfg.state_dir, 'postgres')
        connector = write_properties(self.dir / 'connector.properties', {'name': CONNECTOR_NAME, **connector},
                                     private=True)
        log4j = log4j2_config(self.dir / 'log4j2.properties', {
            'io.debezium.connector.postgresql.connection.MeasurementCollector': 'ERROR',
            'io.debezium.converters.CloudEventsConverter': 'OFF',
            'org.apache.kafka.connect.runtime.isolation': 'WARN',
            'org.apache.kafka.clients': 'WARN',
        })
        self.proc.spawn([java_binary(), '-Xmx1g', '-XX:+UseG1GC', f'-Dlog4j2.configurationFile={log4j}',
                         '-cp', f'{lib}/*', 'org.apache.kafka.connect.cli.ConnectStandalone',
                         str(worker), str(connector)])
        wait_ready('connector task RUNNING', self.proc, lambda: self.task_state() == 'RUNNING')
        # RUNNING comes before the replication slot streams; wait for it so that rows inserted right after `up`
        # returns are captured by the stream rather than racing the snapshot.
        wait_ready('replication slot active', self.proc, self.slot_active)

    def _kafka_security(self) -> dict[str, str]:
        """The worker's and its connector's Kafka clients on the stack's SASL_SSL listener (SCRAM-SHA-512)."""
        if self.cfg.kafka_security != 'sasl_ssl':
            return {}
        from connectors.credentials import java_client_properties
        config = self.cfg.kafka_client_config()
        config.pop('bootstrap_servers')
        java = java_client_properties(config)
        # The worker's own clients take the top-level settings; the source task's producer and the admin client
        # that creates topics take them prefixed.
        return {f'{prefix}{k}': v for prefix in ('', 'producer.', 'consumer.', 'admin.') for k, v in java.items()}

    def slot_active(self) -> bool:
        result = Postgres(self.cfg).psql(self.cfg.pg_database, '-tAc',
                                         'SELECT active FROM pg_replication_slots WHERE slot_name = '
                                         f"'{self.connector_config()['slot.name']}'", check=False)
        return result.stdout.strip() == 't'

    def task_state(self) -> str:
        status = http_json(f'{self.cfg.connect_url}/connectors/{CONNECTOR_NAME}/status')
        tasks = status.get('tasks') or []
        if status['connector']['state'] != 'RUNNING' or not tasks:
            return status['connector']['state']
        return tasks[0]['state']

    def health(self):
        rows = super().health()
        if rows[0][1]:
            try:
                state = self.task_state()
                rows.append((f'connector {CONNECTOR_NAME}', state == 'RUNNING', f'task {state}'))
            except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                rows.append((f'connector {CONNECTOR_NAME}', False, f'{type(exc).__name__}: {exc}'))
        return rows
