"""Kafka 4 in KRaft mode, one node (broker and controller), from the jars `make install` put under
$ENGAGEMENT_HOME/kafka; `start` formats its storage on first start and creates the stack's topics. With
`kafka_security=sasl_ssl` the client listener is SASL_SSL only (SCRAM-SHA-512 and PLAIN; the stack's certificate and
passwords in <state dir>/secrets/, see launch/stack/secrets.py).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from launch.stack import secrets
from launch.stack.component import Component, StackError, java_binary, log4j2_config, wait_ready, write_properties


class Kafka(Component):
    name = 'kafka'
    port_settings = ('kafka_port', 'kafka_controller_port')

    def _classpath(self) -> str:
        lib = self.cfg.home / 'kafka' / 'lib'
        if not any(lib.glob('kafka_2.13-*.jar')):
            raise StackError(f'Kafka jars not found in {lib}: run `make install`.')
        return f'{lib}/*'

    def _java_cmd(self, main: str, *args: str, heap: str = '-Xmx1g') -> list[str]:
        log4j = log4j2_config(self.dir / 'log4j2.properties', {'kafka.coordinator': 'WARN'})
        return [java_binary(), heap, '-XX:+UseG1GC', f'-Dlog4j2.configurationFile={log4j}',
                f'-Dkafka.logs.dir={self.dir / "logs"}', '-cp', self._classpath(), main, *args]

    def _listener_properties(self) -> dict[str, object]:
        c = self.cfg
        controller = f'CONTROLLER://127.0.0.1:{c.kafka_controller_port}'
        if c.kafka_security != 'sasl_ssl':
            return {'listeners': f'PLAINTEXT://127.0.0.1:{c.kafka_port},{controller}',
                    'advertised.listeners': f'PLAINTEXT://127.0.0.1:{c.kafka_port}',
                    'inter.broker.listener.name': 'PLAINTEXT',
                    'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT'}
        # The client listener takes TLS + SASL only (SCRAM-SHA-512 for the clients, PLAIN too); the broker talks to
        # itself through it as its own PLAIN user. The controller listener (KRaft's quorum) stays plaintext on
        # 127.0.0.1: no client uses it.
        state = c.state_dir
        broker_pw, client_pw = secrets.password(state, 'kafka-broker'), secrets.password(state, 'kafka-client')
        plain_users = f'user_{secrets.KAFKA_BROKER_USER}="{broker_pw}" user_{secrets.KAFKA_CLIENT_USER}="{client_pw}"'
        return {
            'listeners': f'SASL_SSL://127.0.0.1:{c.kafka_port},{controller}',
            'advertised.listeners': f'SASL_SSL://127.0.0.1:{c.kafka_port}',
            'inter.broker.listener.name': 'SASL_SSL',
            'listener.security.protocol.map': 'SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT',
            'sasl.enabled.mechanisms': 'SCRAM-SHA-512,PLAIN', 'sasl.mechanism.inter.broker.protocol': 'PLAIN',
            'listener.name.sasl_ssl.plain.sasl.jaas.config':
                'org.apache.kafka.common.security.plain.PlainLoginModule required '
                f'username="{secrets.KAFKA_BROKER_USER}" password="{broker_pw}" {plain_users};',
            'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config':
                'org.apache.kafka.common.security.scram.ScramLoginModule required;',
            'ssl.keystore.type': 'PKCS12', 'ssl.keystore.location': self._keystore(),
            'ssl.keystore.password': secrets.password(state, 'kafka-keystore'),
            'ssl.truststore.type': 'PEM', 'ssl.truststore.location': secrets.kafka_ca_file(state),
        }

    def _keystore(self) -> Path:
        """The broker's key and self-signed certificate (127.0.0.1, localhost), made once with the JDK's keytool;
        the certificate, exported as PEM, is what clients trust. keytool reads the store password from a file."""
        store = self.dir / 'broker.p12'
        ca = secrets.kafka_ca_file(self.cfg.state_dir)
        if store.exists() and ca.exists():
            return store
        secrets.password(self.cfg.state_dir, 'kafka-keystore')
        pw_file = str(secrets.password_file(self.cfg.state_dir, 'kafka-keystore'))
        keytool = str(Path(java_binary()).with_name('keytool'))
        store.unlink(missing_ok=True)
        common = ['-keystore', str(store), '-storetype', 'PKCS12', '-storepass:file', pw_file]
        with open(self.proc.log_file, 'ab') as log:
            subprocess.run([keytool, '-genkeypair', '-alias', 'broker', '-keyalg', 'RSA', '-keysize', '2048',
                            '-validity', '3650', '-dname', 'CN=127.0.0.1', '-ext', 'SAN=ip:127.0.0.1,dns:localhost',
                            '-keypass:file', pw_file, *common], check=True, stdout=log, stderr=subprocess.STDOUT)
            subprocess.run([keytool, '-exportcert', '-rfc', '-alias', 'broker', '-file', str(ca), *common],
                           check=True, stdout=log, stderr=subprocess.STDOUT)
        os.chmod(store, 0o600)
        return store

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        c = self.cfg
        settings = {
            'process.roles': 'broker,controller', 'node.id': 1,
            'controller.quorum.voters': f'1@127.0.0.1:{c.kafka_controller_port}',
            **self._listener_properties(),
            'controller.listener.names': 'CONTROLLER',
            'log.dirs': self.dir / 'data', 'num.partitions': c.kafka_partitions,
            'offsets.topic.replication.factor': 1, 'offsets.topic.num.partitions': 3,
            'transaction.state.log.replication.factor': 1, 'transaction.state.log.min.isr': 1,
            'group.initial.rebalance.delay.ms': 0, 'auto.create.topics.enable': 'true',
            'log.retention.hours': 168,
        }
        props = write_properties(self.dir / 'server.properties', settings, private=True)
        if not (self.dir / 'data' / 'meta.properties').exists():
            cluster_id = subprocess.run(self._java_cmd('kafka.tools.StorageTool', 'random-uuid', heap='-Xmx256m'),
                                        capture_output=True, text=True, check=True).stdout.split()[-1]
            with open(self.proc.log_file, 'ab') as log:
                subprocess.run(self._java_cmd('kafka.tools.StorageTool', 'format', '-t', cluster_id, '-c',
                                              str(props), heap='-Xmx256m'),
                               check=True, stdout=log, stderr=subprocess.STDOUT)
        self.proc.spawn(self._java_cmd('kafka.Kafka', str(props)))
        if c.kafka_security == 'sasl_ssl':
            wait_ready('SASL_SSL listener', self.proc, self._add_client_user)
        wait_ready('broker', self.proc, self.create_topics)

    def _admin_config(self) -> dict:
        """The stack's own client settings: on SASL_SSL the broker's PLAIN user (it exists before any SCRAM
        credential does)."""
        config = self.cfg.kafka_client_config(mechanism='PLAIN')
        if self.cfg.kafka_security == 'sasl_ssl':
            config.update({'sasl_plain_username': secrets.KAFKA_BROKER_USER,
                           'sasl_plain_password': secrets.read_password(self.cfg.state_dir, 'kafka-broker')})
        return config

    def _add_client_user(self) -> bool:
        """The client user's SCRAM-SHA-512 credential, through the Admin API (an upsert: idempotent), so that the
        password never appears on a command line (`kafka-storage format --add-scram` would put it there)."""
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        from connectors.credentials import librdkafka_client_settings
        admin = AdminClient({**librdkafka_client_settings(self._admin_config()), 'log_level': 0})
        upsert = UserScramCredentialUpsertion(
            secrets.KAFKA_CLIENT_USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
            secrets.read_password(self.cfg.state_dir, 'kafka-client').encode())
        for future in admin.alter_user_scram_credentials([upsert], request_timeout=5).values():
            future.result()
        return True

    def _admin(self):
        from kafka import KafkaAdminClient
        return KafkaAdminClient(**self._admin_config(), client_id='engagement-stack', request_timeout_ms=5000)

    def create_topics(self) -> bool:
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError
        admin = self._admin()
        try:
            existing = set(admin.list_topics())
            wanted = [NewTopic(t, self.cfg.kafka_partitions, 1) for t in self.cfg.topics if t not in existing]
            if wanted:
                try:
                    admin.create_topics(wanted)
                except TopicAlreadyExistsError:
                    pass
            return set(self.cfg.topics) <= set(admin.list_topics())
        finally:
            admin.close()

    def end_offsets(self) -> dict[str, int]:
        from kafka import KafkaConsumer, TopicPartition
        consumer = KafkaConsumer(**self._admin_config(), request_timeout_ms=5000)
        try:
            out = {}
            for topic in self.cfg.topics:
                parts = consumer.partitions_for_topic(topic) or set()
                tps = [TopicPartition(topic, p) for p in sorted(parts)]
                offsets = consumer.end_offsets(tps) if tps else {}
                out[topic] = sum(offsets.values())
            return out
        finally:
            consumer.close()

    def health(self):
        rows = super().health()
        if rows[0][1]:
            try:
                offsets = self.end_offsets()
                rows.append(('topic end offsets', True, ', '.join(f'{t}={n}' for t, n in offsets.items())))
            except Exception as exc:
                rows.append(('topic end offsets', False, f'{type(exc).__name__}: {exc}'))
        return rows
