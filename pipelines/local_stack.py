"""The local stack's defaults, in one table: the stack (`launch.config`) starts its components with them and the
pipeline's flags default to them, so both follow the same `ENGAGEMENT_*` variables. A user who starts the stack
with `ENGAGEMENT_KAFKA_PORT=29092` and then the pipeline in the same environment reaches that stack, not whatever
listens on the default port.

Standard library only: `launch.install` and `launch.config` run before the virtualenv exists.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

HOST = '127.0.0.1'

# setting -> (environment variable, default). Ports, then names.
PORTS: dict[str, tuple[str, int]] = {
    'pg_port': ('ENGAGEMENT_PG_PORT', 15432),
    'redis_port': ('ENGAGEMENT_REDIS_PORT', 16379),
    'kafka_port': ('ENGAGEMENT_KAFKA_PORT', 19092),
    'kafka_controller_port': ('ENGAGEMENT_KAFKA_CONTROLLER_PORT', 19093),
    'connect_port': ('ENGAGEMENT_CONNECT_PORT', 18083),
    'api_port': ('ENGAGEMENT_API_PORT', 18090),
    'bq_port': ('ENGAGEMENT_BQ_PORT', 19050),
    'gcs_port': ('ENGAGEMENT_GCS_PORT', 19023),
}
NAMES: dict[str, tuple[str, str]] = {
    'bq_project': ('ENGAGEMENT_BQ_PROJECT', 'engagement-local'),
    'bq_dataset': ('ENGAGEMENT_BQ_DATASET', 'engagement'),
    'topic_prefix': ('ENGAGEMENT_TOPIC_PREFIX', 'engagement'),
    'raw_topic': ('ENGAGEMENT_RAW_TOPIC', 'engagement.raw_events'),
    'dead_letter_topic': ('ENGAGEMENT_DEAD_LETTER_TOPIC', 'engagement.dead_letters'),
    'pg_database': ('ENGAGEMENT_PG_DATABASE', 'engagement'),
}
GCS_TEMP_BUCKET = 'engagement-temp'
# OAuth2 client of the local API receiver. The secret is for the local stack only (the receiver and the pipeline's
# defaults agree on it); anything reachable by others gets its own through ENGAGEMENT_API_CLIENT_SECRET.
API_CLIENT_ID = 'engagement-local'
API_CLIENT_SECRET_ENV = 'ENGAGEMENT_API_CLIENT_SECRET'
LOCAL_API_CLIENT_SECRET = 'engagement-local-secret'


def port(name: str, environ: Mapping[str, str] | None = None) -> int:
    """The port of setting `name` as the environment sets it (a value that is not a port counts as unset: the
    stack's own checks name it when it starts), else the default."""
    variable, default = PORTS[name]
    value = (os.environ if environ is None else environ).get(variable, '')
    return int(value) if value.isdigit() and 0 < int(value) < 65536 else default


def name(setting: str, environ: Mapping[str, str] | None = None) -> str:
    variable, default = NAMES[setting]
    return (os.environ if environ is None else environ).get(variable) or default


def kafka_bootstrap(environ: Mapping[str, str] | None = None) -> str:
    return f'{HOST}:{port("kafka_port", environ)}'


def redis_url(environ: Mapping[str, str] | None = None) -> str:
    return f'redis://{HOST}:{port("redis_port", environ)}/0'


def pg_dsn(environ: Mapping[str, str] | None = None) -> str:
    return f'host={HOST} port={port("pg_port", environ)} dbname={name("pg_database", environ)} user=postgres'


def api_url(environ: Mapping[str, str] | None = None) -> str:
    return f'http://{HOST}:{port("api_port", environ)}'


def bq_endpoint(environ: Mapping[str, str] | None = None) -> str:
    return f'http://{HOST}:{port("bq_port", environ)}'


def gcs_endpoint(environ: Mapping[str, str] | None = None) -> str:
    return f'http://{HOST}:{port("gcs_port", environ)}'


def bq_temp_location() -> str:
    return f'gs://{GCS_TEMP_BUCKET}/bigquery'


def cdc_topic(environ: Mapping[str, str] | None = None) -> str:
    return f'{name("topic_prefix", environ)}.public.engagement_events'
