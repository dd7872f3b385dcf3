"""Where the pipeline reads: brokers, topics, consumer group, start position, reader, and the client's security."""
from __future__ import annotations

import re
import time

from apache_beam.options.pipeline_options import PipelineOptions

from connectors.credentials import secret
from pipelines import local_stack
from pipelines.options.common import NAME, InvalidOption, bad, check_names, env, parse_utc

START_OFFSETS = ('committed', 'earliest', 'latest')
KAFKA_READERS = ('python', 'xlang')
KAFKA_SECURITY_PROTOCOLS = ('PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL')
KAFKA_SASL_MECHANISMS = ('PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512', 'OAUTHBEARER')


class KafkaReadOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        local = local_stack.addresses()  # the defaults follow the stack's ENGAGEMENT_* variables
        kafka = parser.add_argument_group('Kafka source')
        kafka.add_argument('--kafka_bootstrap_servers',
                           default=env('KAFKA_BOOTSTRAP_SERVERS', local.kafka_bootstrap,
                                        'ENGAGEMENT_KAFKA_BOOTSTRAP'),
                           help='Kafka bootstrap servers, host:port[,host:port]. Env KAFKA_BOOTSTRAP_SERVERS '
                                '(or ENGAGEMENT_KAFKA_BOOTSTRAP); default the local stack, '
                                '127.0.0.1:$ENGAGEMENT_KAFKA_PORT (19092).')
        kafka.add_argument('--cdc_topic',
                           default=env('ENGAGEMENT_CDC_TOPIC', local.cdc_topic),
                           help='Debezium topic of the engagement_events table. Env ENGAGEMENT_CDC_TOPIC; '
                                'default $ENGAGEMENT_TOPIC_PREFIX.public.engagement_events (engagement.public.'
                                'engagement_events), the local stack\'s.')
        kafka.add_argument('--raw_topic', default=local.raw_topic,
                           help='Topic of plain JSON events from producers that bypass Postgres; empty to not '
                                'read one. Env ENGAGEMENT_RAW_TOPIC; default engagement.raw_events.')
        kafka.add_argument('--consumer_group', default=env('ENGAGEMENT_CONSUMER_GROUP', 'engagement-pipeline'),
                           help='Kafka consumer group whose committed offsets the reader resumes from. '
                                'Env ENGAGEMENT_CONSUMER_GROUP; default engagement-pipeline.')
        kafka.add_argument('--start_offset', default='committed',
                           help='Where to start reading: committed (the group\'s commits, rewound to replay every '
                                'window that was not final; earliest when the group has none), earliest, or '
                                'latest. Default committed.')
        kafka.add_argument('--start_timestamp', default=env('ENGAGEMENT_START_TIMESTAMP'),
                           help='Reprocess from this time: ISO-8601 (UTC without an offset) or epoch milliseconds. '
                                'The readers start at the Kafka records of that time (offsets for times, less '
                                '--max_future_seconds) whatever the group committed; windows from the one holding it '
                                'on are counted again from their first event, events of earlier windows are '
                                'skipped (counter before_start). Use a consumer group of its own to rebuild beside '
                                'the live pipeline, and delete the Redis windows to rebuild first: the sink keeps a '
                                'pane with more events (docs/operations.md, "Reprocessing from a time"). Env '
                                'ENGAGEMENT_START_TIMESTAMP; default none.')
        kafka.add_argument('--kafka_reader', default='python',
                           help='python: our splittable DoFn (connectors/kafka/reader.py, librdkafka fetch), on every '
                                'runner; '
                                'xlang: Beam\'s cross-language ReadFromKafka (Java KafkaIO 2.73, '
                                'connectors/kafka/xlang.py) through a Java expansion service (see docs/runners.md, '
                                '"The cross-language Kafka reader"). Default python.')
        kafka.add_argument('--kafka_read_splits', type=int, default=0,
                           help='With --kafka_reader=python: read the partitions as this many elements (partition '
                                'groups, dealt round-robin), shuffled over the runner\'s workers so that they are '
                                'read in parallel; each keeps the minimum watermark of its partitions and the '
                                'runner\'s is the minimum over them. 0 (default): the Flink job\'s parallelism '
                                '(--parallelism, else the cluster\'s slots), 1 on the other runners (Prism '
                                'refuses more: it does not keep the minimum over the groups; on Dataflow give it).')
        kafka.add_argument('--kafka_expansion_service', default='',
                           help='With --kafka_reader=xlang: host:port of a running Java expansion service with '
                                'KafkaIO. Default: on DataflowRunner Beam\'s own (downloaded by Beam), on other '
                                'runners the one make install assembles, started on a free 127.0.0.1 port for the '
                                'run.')
        kafka.add_argument('--kafka_security_protocol', default=env('KAFKA_SECURITY_PROTOCOL', 'PLAINTEXT'),
                           help='PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. Env KAFKA_SECURITY_PROTOCOL; '
                                'default PLAINTEXT.')
        kafka.add_argument('--kafka_sasl_mechanism', default=env('KAFKA_SASL_MECHANISM'),
                           help='PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER. Env KAFKA_SASL_MECHANISM.')
        kafka.add_argument('--kafka_sasl_username', default=env('KAFKA_SASL_USERNAME'),
                           help='SASL user name. Env KAFKA_SASL_USERNAME.')
        kafka.add_argument('--kafka_sasl_password', default=None,
                           help='SASL password. Give it as the env KAFKA_SASL_PASSWORD or a file named by '
                                'KAFKA_SASL_PASSWORD_FILE instead: a flag shows in process lists (the flag is for '
                                'a Dataflow Flex Template parameter). Never logged.')
        kafka.add_argument('--kafka_ssl_cafile', default=env('KAFKA_SSL_CAFILE'),
                           help='CA bundle for SSL/SASL_SSL. Env KAFKA_SSL_CAFILE.')

    def check(self) -> None:
        if not self.kafka_bootstrap_servers or not all(re.fullmatch(r'[^\s:,]+:\d{1,5}', hp.strip())
                                                 for hp in self.kafka_bootstrap_servers.split(',')):
            bad('kafka_bootstrap_servers', self.kafka_bootstrap_servers, 'expected host:port[,host:port]')
        check_names(self, ('cdc_topic', 'consumer_group'))
        if self.raw_topic and not NAME.fullmatch(self.raw_topic):
            bad('raw_topic', self.raw_topic, 'expected a topic name (or empty to not read one)')
        if self.start_offset not in START_OFFSETS:
            bad('start_offset', self.start_offset, f'expected one of {", ".join(START_OFFSETS)}')
        if self.start_timestamp:
            ms = self.start_timestamp_ms()
            if ms > time.time() * 1000:
                bad('start_timestamp', self.start_timestamp, 'is in the future')
            if self.start_offset != 'committed':
                bad('start_offset', self.start_offset, '--start_timestamp sets where to start; drop --start_offset')
        if self.kafka_reader not in KAFKA_READERS:
            bad('kafka_reader', self.kafka_reader, f'expected one of {", ".join(KAFKA_READERS)}')
        if self.kafka_read_splits < 0:
            bad('kafka_read_splits', self.kafka_read_splits, 'expected 0 (automatic) or a whole number >= 1')
        if self.kafka_expansion_service and not re.fullmatch(r'[^\s:,/]+:\d{1,5}', self.kafka_expansion_service):
            bad('kafka_expansion_service', self.kafka_expansion_service, 'expected host:port')
        if self.kafka_expansion_service and self.kafka_reader != 'xlang':
            bad('kafka_expansion_service', self.kafka_expansion_service, 'only used with --kafka_reader=xlang')
        if self.kafka_reader == 'xlang' and self.kafka_sasl_mechanism == 'OAUTHBEARER':
            bad('kafka_sasl_mechanism', self.kafka_sasl_mechanism,
                'not supported with --kafka_reader=xlang (the Java consumer needs a login callback handler)')
        if self.kafka_security_protocol not in KAFKA_SECURITY_PROTOCOLS:
            bad('kafka_security_protocol', self.kafka_security_protocol,
                f'expected one of {", ".join(KAFKA_SECURITY_PROTOCOLS)}')
        if self.kafka_security_protocol.startswith('SASL'):
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                bad('kafka_sasl_mechanism', self.kafka_sasl_mechanism,
                    f'{self.kafka_security_protocol} needs one of {", ".join(KAFKA_SASL_MECHANISMS)}')
            if self.kafka_sasl_mechanism != 'OAUTHBEARER' and not (self.kafka_sasl_username and
                                                                   self.sasl_password()):
                raise InvalidOption(f'--kafka_sasl_username and KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE) '
                                    f'are required with {self.kafka_sasl_mechanism}')

    def start_timestamp_ms(self) -> int:
        """--start_timestamp as epoch milliseconds (InvalidOption if it is neither ISO-8601 nor a number)."""
        text = str(self.start_timestamp).strip()
        if text.isdigit():
            return int(text)
        try:
            return int(parse_utc(text).timestamp() * 1000)
        except ValueError:
            bad('start_timestamp', self.start_timestamp, 'expected ISO-8601 (2026-12-03T10:00:00Z) or epoch ms')

    def topics(self) -> list[str]:
        """The topics the pipeline reads: the CDC topic and the raw topic, either of which may be empty."""
        return [t for t in (self.cdc_topic, self.raw_topic) if t]

    def sasl_password(self) -> str | None:
        """--kafka_sasl_password, else $KAFKA_SASL_PASSWORD, else the file $KAFKA_SASL_PASSWORD_FILE."""
        try:
            return self.kafka_sasl_password or secret('KAFKA_SASL_PASSWORD')
        except ValueError as exc:
            raise InvalidOption(str(exc)) from None

    def kafka_consumer_config(self) -> dict:
        """kafka-python client settings from these options (secrets included: never log the result)."""
        config = {'bootstrap_servers': self.kafka_bootstrap_servers.split(','),
                  'security_protocol': self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            config['sasl_mechanism'] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            config['sasl_plain_username'] = self.kafka_sasl_username
            config['sasl_plain_password'] = self.sasl_password()
        if self.kafka_ssl_cafile:
            config['ssl_cafile'] = self.kafka_ssl_cafile
        return config

    def kafka_producer_config(self) -> dict:
        """kafka_consumer_config() without the brokers: the security a producer given --kafka_bootstrap_servers
        needs (the dead-letter and alert writers)."""
        return {k: v for k, v in self.kafka_consumer_config().items() if k != 'bootstrap_servers'}
