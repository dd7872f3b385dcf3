"""`EngagementOptions`: every flag of the engagement pipeline, in one `PipelineOptions` subclass.

Defaults match the local stack (`python -m launch.stack up`), so locally no flag is needed beyond the runner.
Where operators expect an environment variable, it is the fallback when the flag is absent (flag > variable >
default); `validate()` rejects bad values at start with a message naming the flag.
"""
from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from apache_beam.options.pipeline_options import PipelineOptions

START_OFFSETS = ('committed', 'earliest', 'latest')
KAFKA_SECURITY_PROTOCOLS = ('PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL')
KAFKA_SASL_MECHANISMS = ('PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512', 'OAUTHBEARER')


class InvalidOption(ValueError):
    """A flag has a value the pipeline cannot run with; the message names the flag."""


def _env(name: str, default: str | None = None, *more: str) -> str | None:
    for var in (name, *more):
        if os.environ.get(var):
            return os.environ[var]
    return default


class EngagementOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        kafka = parser.add_argument_group('Kafka source')
        kafka.add_argument('--kafka_bootstrap_servers',
                           default=_env('KAFKA_BOOTSTRAP_SERVERS', '127.0.0.1:19092', 'ENGAGEMENT_KAFKA_BOOTSTRAP'),
                           help='Kafka bootstrap servers, host:port[,host:port]. Env KAFKA_BOOTSTRAP_SERVERS '
                                '(or ENGAGEMENT_KAFKA_BOOTSTRAP); default 127.0.0.1:19092, the local stack.')
        kafka.add_argument('--cdc_topic',
                           default=_env('ENGAGEMENT_CDC_TOPIC', 'engagement.public.engagement_events'),
                           help='Debezium topic of the engagement_events table. Env ENGAGEMENT_CDC_TOPIC; '
                                'default engagement.public.engagement_events.')
        kafka.add_argument('--raw_topic', default=_env('ENGAGEMENT_RAW_TOPIC', 'engagement.raw_events'),
                           help='Topic of plain JSON events from producers that bypass Postgres; empty to not '
                                'read one. Env ENGAGEMENT_RAW_TOPIC; default engagement.raw_events.')
        kafka.add_argument('--consumer_group', default=_env('ENGAGEMENT_CONSUMER_GROUP', 'engagement-pipeline'),
                           help='Kafka consumer group whose committed offsets the reader resumes from. '
                                'Env ENGAGEMENT_CONSUMER_GROUP; default engagement-pipeline.')
        kafka.add_argument('--start_offset', default='committed',
                           help='Where to start reading: committed (the group\'s commits, rewound to replay every '
                                'window that was not final; earliest when the group has none), earliest, or '
                                'latest. Default committed.')
        kafka.add_argument('--kafka_security_protocol', default=_env('KAFKA_SECURITY_PROTOCOL', 'PLAINTEXT'),
                           help='PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. Env KAFKA_SECURITY_PROTOCOL; '
                                'default PLAINTEXT.')
        kafka.add_argument('--kafka_sasl_mechanism', default=_env('KAFKA_SASL_MECHANISM'),
                           help='PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER. Env KAFKA_SASL_MECHANISM.')
        kafka.add_argument('--kafka_sasl_username', default=_env('KAFKA_SASL_USERNAME'),
                           help='SASL user name. Env KAFKA_SASL_USERNAME.')
        kafka.add_argument('--kafka_sasl_password', default=_env('KAFKA_SASL_PASSWORD'),
                           help='SASL password; prefer the env KAFKA_SASL_PASSWORD (a flag shows up in process '
                                'lists). Never logged.')
        kafka.add_argument('--kafka_ssl_cafile', default=_env('KAFKA_SSL_CAFILE'),
                           help='CA bundle for SSL/SASL_SSL. Env KAFKA_SSL_CAFILE.')

        content = parser.add_argument_group('content enrichment')
        content.add_argument('--pg_dsn',
                             default=_env('ENGAGEMENT_PG_DSN',
                                          'host=127.0.0.1 port=15432 dbname=engagement user=postgres'),
                             help='libpq connection string of the database holding the content table. '
                                  'Env ENGAGEMENT_PG_DSN; default the local stack.')
        content.add_argument('--content_refresh_seconds', type=int, default=30,
                             help='Reload the content catalogue this often (seconds); an event whose content is '
                                  'unknown triggers one early reload before it is dead-lettered. Default 30.')

        windows = parser.add_argument_group('windows')
        windows.add_argument('--window_seconds', type=int, default=60,
                             help='Event-time fixed window length in seconds. Default 60.')
        windows.add_argument('--early_firing_seconds', type=int, default=1,
                             help='Emit an early (speculative) pane every this many seconds of processing time. '
                                  'Default 1.')
        windows.add_argument('--allowed_lateness_seconds', type=int, default=600,
                             help='Accept events this late (event time behind the watermark); later ones go to '
                                  'the dead letters as too_late. Default 600.')

        windows.add_argument('--replay_margin_seconds', type=int, default=60,
                             help='On a restart from committed offsets, replay this much event time beyond the '
                                  'allowed lateness, so that panes computed but not yet written when the pipeline '
                                  'stopped are recomputed. Default 60.')

        redis = parser.add_argument_group('Redis sink')
        redis.add_argument('--redis_url', default=_env('REDIS_URL', 'redis://127.0.0.1:16379/0', 'ENGAGEMENT_REDIS_URL'),
                           help='redis:// or rediss:// URL (a password in it is never logged). Env REDIS_URL '
                                '(or ENGAGEMENT_REDIS_URL); default the local stack.')
        redis.add_argument('--redis_prefix', default='engagement',
                           help='Prefix of every Redis key (see the README data model). Default engagement.')
        redis.add_argument('--redis_ttl_seconds', type=int, default=86400,
                           help='Expiry of every Redis key, seconds. Default 86400.')

        dlq = parser.add_argument_group('dead letters')
        dlq.add_argument('--dead_letter_topic',
                         default=_env('ENGAGEMENT_DEAD_LETTER_TOPIC', 'engagement.dead_letters'),
                         help='Kafka topic receiving dead letters as JSON. Env ENGAGEMENT_DEAD_LETTER_TOPIC; '
                              'default engagement.dead_letters.')

    def validate(self) -> 'EngagementOptions':
        """Raise InvalidOption naming the first bad flag; return self so it chains."""
        def bad(flag, value, why):
            raise InvalidOption(f'--{flag}={value!r}: {why}')

        if not self.kafka_bootstrap_servers or not all(re.fullmatch(r'[^\s:,]+:\d{1,5}', hp.strip())
                                                 for hp in self.kafka_bootstrap_servers.split(',')):
            bad('kafka_bootstrap_servers', self.kafka_bootstrap_servers, 'expected host:port[,host:port]')
        for flag in ('cdc_topic', 'consumer_group', 'dead_letter_topic', 'redis_prefix'):
            value = getattr(self, flag)
            if not value or not re.fullmatch(r'[A-Za-z0-9._-]+', value):
                bad(flag, value, 'expected a non-empty name of letters, digits, ".", "_" or "-"')
        if self.raw_topic and not re.fullmatch(r'[A-Za-z0-9._-]+', self.raw_topic):
            bad('raw_topic', self.raw_topic, 'expected a topic name (or empty to not read one)')
        if self.start_offset not in START_OFFSETS:
            bad('start_offset', self.start_offset, f'expected one of {", ".join(START_OFFSETS)}')
        if self.kafka_security_protocol not in KAFKA_SECURITY_PROTOCOLS:
            bad('kafka_security_protocol', self.kafka_security_protocol,
                f'expected one of {", ".join(KAFKA_SECURITY_PROTOCOLS)}')
        if self.kafka_security_protocol.startswith('SASL'):
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                bad('kafka_sasl_mechanism', self.kafka_sasl_mechanism,
                    f'{self.kafka_security_protocol} needs one of {", ".join(KAFKA_SASL_MECHANISMS)}')
            if self.kafka_sasl_mechanism != 'OAUTHBEARER' and not (self.kafka_sasl_username and
                                                                   self.kafka_sasl_password):
                raise InvalidOption(f'--kafka_sasl_username and --kafka_sasl_password (or KAFKA_SASL_PASSWORD) '
                                    f'are required with {self.kafka_sasl_mechanism}')
        for flag, low, high in (('window_seconds', 1, 86400), ('early_firing_seconds', 1, 3600),
                                ('allowed_lateness_seconds', 0, 7 * 86400), ('content_refresh_seconds', 1, 86400),
                                ('replay_margin_seconds', 0, 86400),
                                ('redis_ttl_seconds', 1, 365 * 86400)):
            value = getattr(self, flag)
            if not low <= value <= high:
                bad(flag, value, f'expected {low}..{high}')
        if 86400 % self.window_seconds:
            bad('window_seconds', self.window_seconds, 'must divide a day (86400) so windows align to UTC days')
        scheme = urlsplit(self.redis_url).scheme
        if scheme not in ('redis', 'rediss', 'unix'):
            bad('redis_url', '<redacted>', 'expected a redis://, rediss:// or unix:// URL')
        if not self.pg_dsn:
            bad('pg_dsn', self.pg_dsn, 'a libpq connection string is required')
        return self

    def kafka_consumer_config(self) -> dict:
        """kafka-python client settings from these options (secrets included: never log the result)."""
        config = {'bootstrap_servers': self.kafka_bootstrap_servers.split(','),
                  'security_protocol': self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            config['sasl_mechanism'] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            config['sasl_plain_username'] = self.kafka_sasl_username
            config['sasl_plain_password'] = self.kafka_sasl_password
        if self.kafka_ssl_cafile:
            config['ssl_cafile'] = self.kafka_ssl_cafile
        return config
