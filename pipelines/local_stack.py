"""The local stack's defaults, in one table: the stack (`launch.stack`) starts its components with them and the
pipeline's flags default to them, so both follow the same `ENGAGEMENT_*` variables. A user who starts the stack
with `ENGAGEMENT_KAFKA_PORT=29092` and then the pipeline in the same environment reaches that stack, not whatever
listens on the default port.

Standard library only: `launch.stack.install` and `launch.stack.config` run before the virtualenv exists.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

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
    'metrics_port': ('ENGAGEMENT_METRICS_PORT', 19100),
    'monitor_port': ('ENGAGEMENT_MONITOR_PORT', 18095),
    'prometheus_port': ('ENGAGEMENT_PROMETHEUS_PORT', 19090),
    # The Flink session cluster (`launch.stack up --with flink`): JobManager REST (web UI API, job submission),
    # RPC and blob server, and the Beam worker pool the TaskManagers start their Python SDK workers from.
    'flink_rest_port': ('ENGAGEMENT_FLINK_REST_PORT', 18081),
    'flink_rpc_port': ('ENGAGEMENT_FLINK_RPC_PORT', 16123),
    'flink_blob_port': ('ENGAGEMENT_FLINK_BLOB_PORT', 16124),
    'flink_worker_pool_port': ('ENGAGEMENT_FLINK_WORKER_POOL_PORT', 15100),
}
NAMES: dict[str, tuple[str, str]] = {
    'bq_project': ('ENGAGEMENT_BQ_PROJECT', 'engagement-local'),
    'bq_dataset': ('ENGAGEMENT_BQ_DATASET', 'engagement'),
    'topic_prefix': ('ENGAGEMENT_TOPIC_PREFIX', 'engagement'),
    'raw_topic': ('ENGAGEMENT_RAW_TOPIC', 'engagement.raw_events'),
    'dead_letter_topic': ('ENGAGEMENT_DEAD_LETTER_TOPIC', 'engagement.dead_letters'),
    'alert_topic': ('ENGAGEMENT_ALERT_TOPIC', 'engagement.alerts'),
    'pg_database': ('ENGAGEMENT_PG_DATABASE', 'engagement'),
}
# Data, logs and PID files of the running stack (launch.stack), and where a local Flink keeps its checkpoints.
STATE_DIR_ENV = 'ENGAGEMENT_STATE_DIR'
FLINK_CHECKPOINTS_DIR = 'flink-checkpoints'  # under the state directory
DEFAULT_STATE_DIR = Path(__file__).resolve().parents[1] / '.state'


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """$ENGAGEMENT_STATE_DIR, else `<repo>/.state`: the stack's state directory."""
    env = os.environ if environ is None else environ
    return Path(env[STATE_DIR_ENV]).expanduser() if env.get(STATE_DIR_ENV) else DEFAULT_STATE_DIR


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


# The addresses, from the settings (the stack passes its own; the pipeline's flag defaults pass `port(...)`).
def kafka_bootstrap(kafka_port: int) -> str:
    return f'{HOST}:{kafka_port}'


def redis_url(redis_port: int) -> str:
    return f'redis://{HOST}:{redis_port}/0'


def pg_dsn(pg_port: int, database: str) -> str:
    return f'host={HOST} port={pg_port} dbname={database} user=postgres'


def http_url(port: int) -> str:
    """The REST API receiver, the BigQuery and Cloud Storage emulators, Kafka Connect."""
    return f'http://{HOST}:{port}'


def bq_temp_location() -> str:
    return f'gs://{GCS_TEMP_BUCKET}/bigquery'


def cdc_topic(topic_prefix: str) -> str:
    return f'{topic_prefix}.public.engagement_events'


class Addresses(NamedTuple):
    """Where a client finds the local stack: the pipeline's flag defaults."""
    kafka_bootstrap: str
    cdc_topic: str
    raw_topic: str
    dead_letter_topic: str
    alert_topic: str
    pg_dsn: str
    redis_url: str
    api_url: str
    bq_endpoint: str
    gcs_endpoint: str
    bq_project: str
    bq_dataset: str


def addresses(environ: Mapping[str, str] | None = None) -> Addresses:
    """The local stack's addresses as the `ENGAGEMENT_*` variables of `environ` (default: this process's) set them."""
    return Addresses(
        kafka_bootstrap=kafka_bootstrap(port('kafka_port', environ)),
        cdc_topic=cdc_topic(name('topic_prefix', environ)), raw_topic=name('raw_topic', environ),
        dead_letter_topic=name('dead_letter_topic', environ), alert_topic=name('alert_topic', environ),
        pg_dsn=pg_dsn(port('pg_port', environ), name('pg_database', environ)),
        redis_url=redis_url(port('redis_port', environ)), api_url=http_url(port('api_port', environ)),
        bq_endpoint=http_url(port('bq_port', environ)), gcs_endpoint=http_url(port('gcs_port', environ)),
        bq_project=name('bq_project', environ), bq_dataset=name('bq_dataset', environ))
