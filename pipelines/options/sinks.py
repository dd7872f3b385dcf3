"""Where the pipeline writes: Redis, the REST API, BigQuery, the dead-letter topic."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import local_stack
from pipelines.options.common import NAME, InvalidOption, bad, check_names, check_ranges, env

BQ_WRITE_METHODS = ('streaming_inserts', 'file_loads', 'storage_write_api')
_TRUE, _FALSE = ('true', '1', 'yes', 'on'), ('false', '0', 'no', 'off')
# The local stack's Cloud Storage emulator, where file loads stage their files against the BigQuery emulator.
LOCAL_BQ_TEMP_LOCATION = local_stack.bq_temp_location()


class RedisOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        local = local_stack.addresses()  # the defaults follow the stack's ENGAGEMENT_* variables
        redis = parser.add_argument_group('Redis sink')
        redis.add_argument('--redis_url',
                           default=env('REDIS_URL', local.redis_url, 'ENGAGEMENT_REDIS_URL'),
                           help='redis:// or rediss:// URL (a password in it is never logged; better, give '
                                'the ACL user and password as the env REDIS_USERNAME and REDIS_PASSWORD or '
                                'REDIS_PASSWORD_FILE). Env REDIS_URL '
                                '(or ENGAGEMENT_REDIS_URL); default the local stack, '
                                'redis://127.0.0.1:$ENGAGEMENT_REDIS_PORT/0 (16379).')
        redis.add_argument('--redis_prefix', default='engagement',
                           help='Prefix of every Redis key (see docs/pipeline.md, Redis data model). Default '
                                'engagement.')
        redis.add_argument('--redis_ttl_seconds', type=int, default=86400,
                           help='Expiry of every Redis key, seconds. Default 86400.')
        redis.add_argument('--user_recent_contents', type=int, default=0,
                           help='Per user, keep in Redis the last this many contents engaged with and the '
                                'engagement seconds per content type (<prefix>:user:<user id>:recent and :ms; the '
                                'pseudonym with --pseudonymize_user_ids), idempotently; 0 (default) keeps none.')
        redis.add_argument('--user_ttl_seconds', type=int, default=7 * 86400,
                           help='With --user_recent_contents: forget a user after this many seconds without an '
                                'event. Default 604800 (7 days).')
        viral = parser.add_argument_group('viral-content alerts')
        viral.add_argument('--viral_multiple', type=float, default=3.0,
                           help='Alert when a content\'s events in a window exceed this multiple of its average '
                                'over the --viral_trailing_windows windows before (checked at every pane the Redis '
                                'sink writes; one alert per content and window); 0 turns alerts off. Default 3.')
        viral.add_argument('--viral_min_events', type=int, default=100,
                           help='...and reach at least this many events. Default 100.')
        viral.add_argument('--viral_trailing_windows', type=int, default=10,
                           help='Windows before the current one that make the trailing average (those the pipeline '
                                'observed; the content\'s events there, 0 if none). Default 10.')
        viral.add_argument('--alert_topic', default=local.alert_topic,
                           help='Kafka topic of the alerts (JSON, key content id), beside the Redis stream '
                                '<prefix>:alerts; empty for the stream only. Env ENGAGEMENT_ALERT_TOPIC; default '
                                'engagement.alerts.')

    def check(self) -> None:
        check_names(self, ('redis_prefix',))
        if urlsplit(self.redis_url).scheme not in ('redis', 'rediss', 'unix'):
            bad('redis_url', '<redacted>', 'expected a redis://, rediss:// or unix:// URL')
        check_ranges(self, (('redis_ttl_seconds', 1, 365 * 86400), ('user_recent_contents', 0, 10_000),
                            ('user_ttl_seconds', 1, 365 * 86400), ('viral_multiple', 0, 1e6),
                            ('viral_min_events', 1, 10**9), ('viral_trailing_windows', 1, 10_000)))
        if self.alert_topic and not NAME.fullmatch(self.alert_topic):
            bad('alert_topic', self.alert_topic, 'expected a topic name (or empty for the Redis stream only)')


class ApiOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        local = local_stack.addresses()  # the defaults follow the stack's ENGAGEMENT_* variables
        api = parser.add_argument_group('REST API sink')
        api.add_argument('--api_url', default=env('ENGAGEMENT_API_URL', local.api_url),
                         help='Base URL of the REST API receiving enriched events (POST <api_url>/v1/events); '
                              'empty to turn the sink off. Env ENGAGEMENT_API_URL; default '
                              'http://127.0.0.1:$ENGAGEMENT_API_PORT (18090), the local receiver.')
        api.add_argument('--api_token_url', default=env('ENGAGEMENT_API_TOKEN_URL', ''),
                         help='OAuth2 token endpoint (client credentials). Env ENGAGEMENT_API_TOKEN_URL; default '
                              '<api_url>/oauth/token.')
        api.add_argument('--api_client_id', default=env('ENGAGEMENT_API_CLIENT_ID', local_stack.API_CLIENT_ID),
                         help='OAuth2 client id. Env ENGAGEMENT_API_CLIENT_ID; default '
                              f'{local_stack.API_CLIENT_ID}.')
        api.add_argument('--api_client_secret',
                         default=env(local_stack.API_CLIENT_SECRET_ENV, local_stack.LOCAL_API_CLIENT_SECRET),
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

    def check(self) -> None:
        if not self.api_url:
            return  # the sink is off
        for flag in ('api_url', 'api_token_url'):
            parts = urlsplit(getattr(self, flag) or 'http://default')
            try:
                parts.port
            except ValueError:
                parts = parts._replace(netloc='')
            if parts.scheme not in ('http', 'https') or not parts.hostname or '@' in parts.netloc:
                bad(flag, '<redacted>' if '@' in parts.netloc else getattr(self, flag),
                    'expected an http:// or https:// URL without credentials (empty --api_url turns the sink off)')
        if not self.api_client_id:
            bad('api_client_id', self.api_client_id, 'required when --api_url is set')
        if not self.api_client_secret:
            raise InvalidOption('--api_client_secret (or ENGAGEMENT_API_CLIENT_SECRET) is required when '
                                '--api_url is set')
        check_ranges(self, (('api_batch_size', 1, 1000), ('api_max_attempts', 1, 10),
                            ('api_breaker_failures', 1, 1000), ('api_timeout_seconds', 0.1, 300),
                            ('api_breaker_cooldown_seconds', 0.1, 3600),
                            ('api_max_request_bytes', 10_000, 100_000_000)))


class BigQueryOptions(PipelineOptions):
    bq_temp_location: str | None  # check() fills it in for file loads against the emulators

    @classmethod
    def _add_argparse_args(cls, parser):
        local = local_stack.addresses()  # the defaults follow the stack's ENGAGEMENT_* variables
        bq = parser.add_argument_group('BigQuery sink')
        bq.add_argument('--bq_enabled', default=env('ENGAGEMENT_BQ_ENABLED', 'true'),
                        help='Write events, stats and dead letters to BigQuery: true or false. Env '
                             'ENGAGEMENT_BQ_ENABLED; default true.')
        bq.add_argument('--bq_project', default=local.bq_project,
                        help='BigQuery project of the tables. Env ENGAGEMENT_BQ_PROJECT; default engagement-local.')
        bq.add_argument('--bq_dataset', default=local.bq_dataset,
                        help='BigQuery dataset of the tables. Env ENGAGEMENT_BQ_DATASET; default engagement.')
        bq.add_argument('--bq_endpoint', default=env('ENGAGEMENT_BQ_ENDPOINT', local.bq_endpoint),
                        help='BigQuery API endpoint of an emulator, reached without credentials; empty '
                             '(--bq_endpoint=) for real BigQuery with Application Default Credentials. Env '
                             'ENGAGEMENT_BQ_ENDPOINT; default http://127.0.0.1:$ENGAGEMENT_BQ_PORT (19050), the local '
                             'stack.')
        bq.add_argument('--bq_write_method', default=env('ENGAGEMENT_BQ_WRITE_METHOD', 'streaming_inserts'),
                        help='streaming_inserts (insertAll, insertId per event/pane/dead letter; rejected rows '
                             'become dead letters), file_loads (load jobs every --bq_load_frequency_seconds), or '
                             'storage_write_api (Dataflow only, not with --bq_endpoint). Env '
                             'ENGAGEMENT_BQ_WRITE_METHOD; default streaming_inserts.')
        bq.add_argument('--bq_temp_location', default=env('ENGAGEMENT_BQ_TEMP_LOCATION'),
                        help='gs:// location for the files of file_loads. Env ENGAGEMENT_BQ_TEMP_LOCATION; default '
                             f'{LOCAL_BQ_TEMP_LOCATION} with --bq_endpoint (the local storage emulator), else '
                             'Beam\'s --temp_location.')
        bq.add_argument('--gcs_endpoint', default=env('ENGAGEMENT_GCS_ENDPOINT', local.gcs_endpoint),
                        help='Cloud Storage emulator that file_loads stage files in when --bq_endpoint is set. Env '
                             'ENGAGEMENT_GCS_ENDPOINT; default http://127.0.0.1:$ENGAGEMENT_GCS_PORT (19023), the '
                             'local stack.')
        bq.add_argument('--bq_load_frequency_seconds', type=int, default=60,
                        help='file_loads in a streaming pipeline: start load jobs this often (seconds). '
                             'Default 60.')

    @property
    def bigquery_enabled(self) -> bool:
        return str(self.bq_enabled).strip().lower() in _TRUE

    def check(self) -> None:
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


class DeadLetterOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        local = local_stack.addresses()  # the defaults follow the stack's ENGAGEMENT_* variables
        dlq = parser.add_argument_group('dead letters')
        dlq.add_argument('--dead_letter_topic',
                         default=local.dead_letter_topic,
                         help='Kafka topic receiving dead letters as JSON. Env ENGAGEMENT_DEAD_LETTER_TOPIC; '
                              'default engagement.dead_letters.')

    def check(self) -> None:
        check_names(self, ('dead_letter_topic',))
