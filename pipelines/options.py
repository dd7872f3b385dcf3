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

from pipelines import local_stack
from transforms.parse import DEFAULT_MAX_FUTURE_SECONDS, DEFAULT_MAX_RECORD_BYTES, ParseLimits, parse_skip_offsets

START_OFFSETS = ('committed', 'earliest', 'latest')
KAFKA_READERS = ('python', 'xlang')
KAFKA_SECURITY_PROTOCOLS = ('PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL')
KAFKA_SASL_MECHANISMS = ('PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512', 'OAUTHBEARER')
BQ_WRITE_METHODS = ('streaming_inserts', 'file_loads', 'storage_write_api')
_TRUE, _FALSE = ('true', '1', 'yes', 'on'), ('false', '0', 'no', 'off')
# The local stack's BigQuery and Cloud Storage emulators (launch.config bq_port / gcs_port / gcs_temp_bucket).
LOCAL_BQ_TEMP_LOCATION = local_stack.bq_temp_location()


class InvalidOption(ValueError):
    """A flag has a value the pipeline cannot run with; the message names the flag."""


def _env(name: str, default: str | None = None, *more: str) -> str | None:
    for var in (name, *more):
        if os.environ.get(var):
            return os.environ[var]
    return default


class EngagementOptions(PipelineOptions):
    bq_temp_location: str | None  # validate() fills it in for file loads against the emulators
    @classmethod
    def _add_argparse_args(cls, parser):
        local = local_stack.addresses()  # the defaults follow the stack's ENGAGEMENT_* variables
        kafka = parser.add_argument_group('Kafka source')
        kafka.add_argument('--kafka_bootstrap_servers',
                           default=_env('KAFKA_BOOTSTRAP_SERVERS', local.kafka_bootstrap,
                                        'ENGAGEMENT_KAFKA_BOOTSTRAP'),
                           help='Kafka bootstrap servers, host:port[,host:port]. Env KAFKA_BOOTSTRAP_SERVERS '
                                '(or ENGAGEMENT_KAFKA_BOOTSTRAP); default the local stack, '
                                '127.0.0.1:$ENGAGEMENT_KAFKA_PORT (19092).')
        kafka.add_argument('--cdc_topic',
                           default=_env('ENGAGEMENT_CDC_TOPIC', local.cdc_topic),
                           help='Debezium topic of the engagement_events table. Env ENGAGEMENT_CDC_TOPIC; '
                                'default $ENGAGEMENT_TOPIC_PREFIX.public.engagement_events (engagement.public.'
                                'engagement_events), the local stack\'s.')
        kafka.add_argument('--raw_topic', default=local.raw_topic,
                           help='Topic of plain JSON events from producers that bypass Postgres; empty to not '
                                'read one. Env ENGAGEMENT_RAW_TOPIC; default engagement.raw_events.')
        kafka.add_argument('--consumer_group', default=_env('ENGAGEMENT_CONSUMER_GROUP', 'engagement-pipeline'),
                           help='Kafka consumer group whose committed offsets the reader resumes from. '
                                'Env ENGAGEMENT_CONSUMER_GROUP; default engagement-pipeline.')
        kafka.add_argument('--start_offset', default='committed',
                           help='Where to start reading: committed (the group\'s commits, rewound to replay every '
                                'window that was not final; earliest when the group has none), earliest, or '
                                'latest. Default committed.')
        kafka.add_argument('--kafka_reader', default='python',
                           help='python: our splittable DoFn (connectors/kafka/reader.py, librdkafka fetch), on every '
                                'runner; '
                                'xlang: Beam\'s cross-language ReadFromKafka (Java KafkaIO 2.73, '
                                'connectors/kafka/xlang.py) through a Java expansion service (see docs/runners.md, '
                                '"The cross-language Kafka reader"). Default python.')
        kafka.add_argument('--kafka_expansion_service', default='',
                           help='With --kafka_reader=xlang: host:port of a running Java expansion service with '
                                'KafkaIO. Default: on DataflowRunner Beam\'s own (downloaded by Beam), on other '
                                'runners the one make install assembles, started on a free 127.0.0.1 port for the '
                                'run.')
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

        limits = parser.add_argument_group('input limits')
        limits.add_argument('--max_record_bytes', type=int,
                            default=int(_env('ENGAGEMENT_MAX_RECORD_BYTES', str(DEFAULT_MAX_RECORD_BYTES))),
                            help='Largest record accepted (key + value, bytes), checked before parsing; a larger '
                                 'one goes to the dead letters as payload_too_large. Keep it below the broker\'s '
                                 'message.max.bytes. Env ENGAGEMENT_MAX_RECORD_BYTES; default '
                                 f'{DEFAULT_MAX_RECORD_BYTES} (512 KiB).')
        limits.add_argument('--max_future_seconds', type=float, default=DEFAULT_MAX_FUTURE_SECONDS,
                            help='An event stamped more than this many seconds ahead of the reader\'s clock (the '
                                 'record\'s Kafka timestamp, at most the wall clock) goes to the dead letters as '
                                 f'future_event. Default {DEFAULT_MAX_FUTURE_SECONDS}.')
        limits.add_argument('--skip_offsets', default=_env('ENGAGEMENT_SKIP_OFFSETS', ''),
                            help='topic:partition:offset[,...]: records the pipeline must not process (a record that '
                                 'stops the job); each goes to the dead letters as skipped_by_operator. Env '
                                 'ENGAGEMENT_SKIP_OFFSETS; default none.')

        content = parser.add_argument_group('content enrichment')
        content.add_argument('--pg_dsn',
                             default=_env('ENGAGEMENT_PG_DSN',
                                          local.pg_dsn),
                             help='libpq connection string of the database holding the content table. '
                                  'Env ENGAGEMENT_PG_DSN; default the local stack (ENGAGEMENT_PG_PORT, '
                                  'ENGAGEMENT_PG_DATABASE).')
        content.add_argument('--content_refresh_seconds', type=int, default=30,
                             help='Reload the content catalogue this often (seconds); an event whose content is '
                                  'unknown triggers one early reload before it is dead-lettered. Default 30.')

        windows = parser.add_argument_group('windows')
        windows.add_argument('--window_seconds', type=int, default=60,
                             help='Event-time fixed window length in seconds. Default 60.')
        windows.add_argument('--early_firing_seconds', type=float, default=1,
                             help='Emit an early (speculative) pane every this many seconds of processing time, '
                                  'to the millisecond, on one grid for all contents (a live event waits up to this '
                                  'long, half on average, for its pane; each pane costs a Redis write per content '
                                  'touched; 0.5 halves the wait). On Dataflow: whole seconds, counted from the '
                                  'first event of each pane. Default 1.')
        windows.add_argument('--allowed_lateness_seconds', type=int, default=600,
                             help='Accept events this late (event time behind the watermark); later ones go to '
                                  'the dead letters as too_late. Default 600.')
        windows.add_argument('--window_shards', type=int, default=8,
                             help='Keys of the windows\' GroupByKey: contents are counted in this many groups '
                                  '(a hash of the content id), so the runner holds one partial count per group, '
                                  'window and bundle instead of one per content (on Prism, its cost grows with '
                                  'what it holds). It bounds the parallelism of the aggregation on a cluster: '
                                  'raise it there. Default 8.')

        windows.add_argument('--replay_margin_seconds', type=int, default=60,
                             help='On a restart from committed offsets, replay this much event time beyond the '
                                  'allowed lateness, so that panes computed but not yet written when the pipeline '
                                  'stopped are recomputed. Default 60.')

        redis = parser.add_argument_group('Redis sink')
        redis.add_argument('--redis_url',
                           default=_env('REDIS_URL', local.redis_url, 'ENGAGEMENT_REDIS_URL'),
                           help='redis:// or rediss:// URL (a password in it is never logged). Env REDIS_URL '
                                '(or ENGAGEMENT_REDIS_URL); default the local stack, '
                                'redis://127.0.0.1:$ENGAGEMENT_REDIS_PORT/0 (16379).')
        redis.add_argument('--redis_prefix', default='engagement',
                           help='Prefix of every Redis key (see docs/pipeline.md, Redis data model). Default '
                                'engagement.')
        redis.add_argument('--redis_ttl_seconds', type=int, default=86400,
                           help='Expiry of every Redis key, seconds. Default 86400.')

        api = parser.add_argument_group('REST API sink')
        api.add_argument('--api_url', default=_env('ENGAGEMENT_API_URL', local.api_url),
                         help='Base URL of the REST API receiving enriched events (POST <api_url>/v1/events); '
                              'empty to turn the sink off. Env ENGAGEMENT_API_URL; default '
                              'http://127.0.0.1:$ENGAGEMENT_API_PORT (18090), the local receiver.')
        api.add_argument('--api_token_url', default=_env('ENGAGEMENT_API_TOKEN_URL', ''),
                         help='OAuth2 token endpoint (client credentials). Env ENGAGEMENT_API_TOKEN_URL; default '
                              '<api_url>/oauth/token.')
        api.add_argument('--api_client_id', default=_env('ENGAGEMENT_API_CLIENT_ID', local_stack.API_CLIENT_ID),
                         help='OAuth2 client id. Env ENGAGEMENT_API_CLIENT_ID; default '
                              f'{local_stack.API_CLIENT_ID}.')
        api.add_argument('--api_client_secret',
                         default=_env(local_stack.API_CLIENT_SECRET_ENV, local_stack.LOCAL_API_CLIENT_SECRET),
                         help='OAuth2 client secret; prefer the env ENGAGEMENT_API_CLIENT_SECRET (a flag shows '
                              'up in process lists). Default: the local receiver\'s documented secret. Never '
                              'logged.')
        api.add_argument('--api_batch_size', type=int, default=100,
                         help='Events per request; a batch is also sent at the end of every bundle. Default 100.')
        api.add_argument('--api_max_request_bytes', type=int, default=5_000_000,
                         help='Largest request body (bytes): a batch is split to stay below it, and an event '
                              'larger on its own goes to the dead letters as payload_too_large. Default 5000000.')
        api.add_argument('--api_timeout_seconds', type=float, default=10.0,
                         help='Timeout of each HTTP call (token and events), seconds. Default 10.')
        api.add_argument('--api_max_attempts', type=int, default=3,
                         help='HTTP calls per request at most (429, 5xx, timeouts and connection errors are '
                              'retried with exponential backoff and jitter, Retry-After honoured); then the '
                              'batch\'s events go to the dead letters. Default 3.')
        api.add_argument('--api_breaker_failures', type=int, default=5,
                         help='Open the circuit breaker after this many consecutive failed requests; while open, '
                              'events go to the dead letters as circuit_open without being sent. Default 5.')
        api.add_argument('--api_breaker_cooldown_seconds', type=float, default=30.0,
                         help='Seconds the breaker stays open before one probe request may close it. Default 30.')

        bq = parser.add_argument_group('BigQuery sink')
        bq.add_argument('--bq_enabled', default=_env('ENGAGEMENT_BQ_ENABLED', 'true'),
                        help='Write events, stats and dead letters to BigQuery: true or false. Env '
                             'ENGAGEMENT_BQ_ENABLED; default true.')
        bq.add_argument('--bq_project', default=local.bq_project,
                        help='BigQuery project of the tables. Env ENGAGEMENT_BQ_PROJECT; default engagement-local.')
        bq.add_argument('--bq_dataset', default=local.bq_dataset,
                        help='BigQuery dataset of the tables. Env ENGAGEMENT_BQ_DATASET; default engagement.')
        bq.add_argument('--bq_endpoint', default=_env('ENGAGEMENT_BQ_ENDPOINT', local.bq_endpoint),
                        help='BigQuery API endpoint of an emulator, reached without credentials; empty '
                             '(--bq_endpoint=) for real BigQuery with Application Default Credentials. Env '
                             'ENGAGEMENT_BQ_ENDPOINT; default http://127.0.0.1:$ENGAGEMENT_BQ_PORT (19050), the local '
                             'stack.')
        bq.add_argument('--bq_write_method', default=_env('ENGAGEMENT_BQ_WRITE_METHOD', 'streaming_inserts'),
                        help='streaming_inserts (insertAll, insertId per event/pane/dead letter; rejected rows '
                             'become dead letters), file_loads (load jobs every --bq_load_frequency_seconds), or '
                             'storage_write_api (Dataflow only, not with --bq_endpoint). Env '
                             'ENGAGEMENT_BQ_WRITE_METHOD; default streaming_inserts.')
        bq.add_argument('--bq_temp_location', default=_env('ENGAGEMENT_BQ_TEMP_LOCATION'),
                        help='gs:// location for the files of file_loads. Env ENGAGEMENT_BQ_TEMP_LOCATION; default '
                             f'{LOCAL_BQ_TEMP_LOCATION} with --bq_endpoint (the local storage emulator), else '
                             'Beam\'s --temp_location.')
        bq.add_argument('--gcs_endpoint', default=_env('ENGAGEMENT_GCS_ENDPOINT', local.gcs_endpoint),
                        help='Cloud Storage emulator that file_loads stage files in when --bq_endpoint is set. Env '
                             'ENGAGEMENT_GCS_ENDPOINT; default http://127.0.0.1:$ENGAGEMENT_GCS_PORT (19023), the '
                             'local stack.')
        bq.add_argument('--bq_load_frequency_seconds', type=int, default=60,
                        help='file_loads in a streaming pipeline: start load jobs this often (seconds). '
                             'Default 60.')

        dlq = parser.add_argument_group('dead letters')
        dlq.add_argument('--dead_letter_topic',
                         default=local.dead_letter_topic,
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
        if self.kafka_reader not in KAFKA_READERS:
            bad('kafka_reader', self.kafka_reader, f'expected one of {", ".join(KAFKA_READERS)}')
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
                                                                   self.kafka_sasl_password):
                raise InvalidOption(f'--kafka_sasl_username and --kafka_sasl_password (or KAFKA_SASL_PASSWORD) '
                                    f'are required with {self.kafka_sasl_mechanism}')
        for flag, low, high in (('window_seconds', 1, 86400), ('early_firing_seconds', 0.05, 3600),
                                ('allowed_lateness_seconds', 0, 7 * 86400), ('content_refresh_seconds', 1, 86400),
                                ('replay_margin_seconds', 0, 86400), ('window_shards', 1, 4096),
                                ('redis_ttl_seconds', 1, 365 * 86400), ('max_record_bytes', 1024, 100 * 2**20),
                                ('max_future_seconds', 0, 366 * 86400)):
            value = getattr(self, flag)
            if not low <= value <= high:
                bad(flag, value, f'expected {low}..{high}')
        if 86400 % self.window_seconds:
            bad('window_seconds', self.window_seconds, 'must divide a day (86400) so windows align to UTC days')
        try:
            parse_skip_offsets(self.skip_offsets or '')
        except ValueError as exc:
            bad('skip_offsets', self.skip_offsets, str(exc))
        scheme = urlsplit(self.redis_url).scheme
        if scheme not in ('redis', 'rediss', 'unix'):
            bad('redis_url', '<redacted>', 'expected a redis://, rediss:// or unix:// URL')
        if self.api_url:
            for flag in ('api_url', 'api_token_url'):
                parts = urlsplit(getattr(self, flag) or 'http://default')
                try:
                    parts.port
                except ValueError:
                    parts = parts._replace(netloc='')
                if parts.scheme not in ('http', 'https') or not parts.hostname or '@' in parts.netloc:
                    bad(flag, '<redacted>' if '@' in parts.netloc else getattr(self, flag),
                        'expected an http:// or https:// URL without credentials (empty --api_url turns the sink '
                        'off)')
            if not self.api_client_id:
                bad('api_client_id', self.api_client_id, 'required when --api_url is set')
            if not self.api_client_secret:
                raise InvalidOption('--api_client_secret (or ENGAGEMENT_API_CLIENT_SECRET) is required when '
                                    '--api_url is set')
            for flag, low, high in (('api_batch_size', 1, 1000), ('api_max_attempts', 1, 10),
                                    ('api_breaker_failures', 1, 1000), ('api_timeout_seconds', 0.1, 300),
                                    ('api_breaker_cooldown_seconds', 0.1, 3600),
                                    ('api_max_request_bytes', 10_000, 100_000_000)):
                value = getattr(self, flag)
                if not low <= value <= high:
                    bad(flag, value, f'expected {low}..{high}')
        self._validate_bigquery(bad)
        if not self.pg_dsn:
            bad('pg_dsn', self.pg_dsn, 'a libpq connection string is required')
        return self

    @property
    def bigquery_enabled(self) -> bool:
        return str(self.bq_enabled).strip().lower() in _TRUE

    def _validate_bigquery(self, bad) -> None:
        if str(self.bq_enabled).strip().lower() not in _TRUE + _FALSE:
            bad('bq_enabled', self.bq_enabled, 'expected true or false')
        if not self.bigquery_enabled:
            return
        if not re.fullmatch(r'[a-z][a-z0-9-]{4,28}[a-z0-9]|[a-z0-9.:-]+\.[a-z0-9.:-]+', self.bq_project or ''):
            bad('bq_project', self.bq_project, 'expected a BigQuery project id (6-30 lower-case letters, digits, -)')
        if not re.fullmatch(r'[A-Za-z0-9_]{1,1024}', self.bq_dataset or ''):
            bad('bq_dataset', self.bq_dataset, 'expected a dataset name of letters, digits and _')
        if self.bq_write_method not in BQ_WRITE_METHODS:
            bad('bq_write_method', self.bq_write_method, f'expected one of {", ".join(BQ_WRITE_METHODS)}')
        for flag in ('bq_endpoint', 'gcs_endpoint'):
            value = getattr(self, flag)
            if value and (urlsplit(value).scheme not in ('http', 'https') or not urlsplit(value).hostname):
                bad(flag, value, 'expected an http:// or https:// URL (or empty for the real service)')
        if self.bq_endpoint and self.bq_write_method == 'storage_write_api':
            bad('bq_write_method', self.bq_write_method,
                'the Storage Write API cannot run locally (Beam\'s Python path needs a Java expansion service); '
                'use streaming_inserts or file_loads with --bq_endpoint, or --bq_endpoint= (real BigQuery) on '
                'Dataflow')
        if self.bq_write_method == 'file_loads':
            if self.bq_endpoint and not self.bq_temp_location:
                self.bq_temp_location = LOCAL_BQ_TEMP_LOCATION
            if self.bq_temp_location and not self.bq_temp_location.startswith('gs://'):
                bad('bq_temp_location', self.bq_temp_location, 'expected a gs:// location')
        if not 1 <= self.bq_load_frequency_seconds <= 86400:
            bad('bq_load_frequency_seconds', self.bq_load_frequency_seconds, 'expected 1..86400')

    def parse_limits(self) -> ParseLimits:
        """What ParseEvents accepts (validated options)."""
        return ParseLimits(self.max_record_bytes, self.max_future_seconds, parse_skip_offsets(self.skip_offsets or ''))

    def topics(self) -> list[str]:
        """The topics the pipeline reads: the CDC topic and the raw topic, either of which may be empty."""
        return [t for t in (self.cdc_topic, self.raw_topic) if t]

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
