"""Kafka 4 in KRaft mode, one node (broker and controller), from the jars `make install` put under
$ENGAGEMENT_HOME/kafka; `start` formats its storage on first start and creates the stack's topics.
"""
from __future__ import annotations

import subprocess

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

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        c = self.cfg
        props = write_properties(self.dir / 'server.properties', {
            'process.roles': 'broker,controller', 'node.id': 1,
            'controller.quorum.voters': f'1@127.0.0.1:{c.kafka_controller_port}',
            'listeners': f'PLAINTEXT://127.0.0.1:{c.kafka_port},CONTROLLER://127.0.0.1:{c.kafka_controller_port}',
            'advertised.listeners': f'PLAINTEXT://127.0.0.1:{c.kafka_port}',
            'controller.listener.names': 'CONTROLLER', 'inter.broker.listener.name': 'PLAINTEXT',
            'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
            'log.dirs': self.dir / 'data', 'num.partitions': c.kafka_partitions,
            'offsets.topic.replication.factor': 1, 'offsets.topic.num.partitions': 3,
            'transaction.state.log.replication.factor': 1, 'transaction.state.log.min.isr': 1,
            'group.initial.rebalance.delay.ms': 0, 'auto.create.topics.enable': 'true',
            'log.retention.hours': 168,
        })
        if not (self.dir / 'data' / 'meta.properties').exists():
            cluster_id = subprocess.run(self._java_cmd('kafka.tools.StorageTool', 'random-uuid', heap='-Xmx256m'),
                                        capture_output=True, text=True, check=True).stdout.split()[-1]
            with open(self.proc.log_file, 'ab') as log:
                subprocess.run(self._java_cmd('kafka.tools.StorageTool', 'format', '-t', cluster_id, '-c',
                                              str(props), heap='-Xmx256m'),
                               check=True, stdout=log, stderr=subprocess.STDOUT)
        self.proc.spawn(self._java_cmd('kafka.Kafka', str(props)))
        wait_ready('broker', self.proc, self._create_topics)

    def _admin(self):
        from kafka import KafkaAdminClient
        return KafkaAdminClient(bootstrap_servers=self.cfg.kafka_bootstrap, client_id='engagement-stack',
                                request_timeout_ms=5000)

    def _create_topics(self) -> bool:
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
        consumer = KafkaConsumer(bootstrap_servers=self.cfg.kafka_bootstrap, request_timeout_ms=5000)
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
