"""Configuration of the local stack: ports, directories, topic names.

Every setting has a documented default, an environment variable and a command-line flag (the flag wins over the
variable, the variable over the default). Values are checked once, here, and a bad one raises `ConfigError` with a
message that names the flag and the variable to change. Standard library only: the installer uses this module
before the virtualenv exists.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
from pathlib import Path

from launch.stack import secrets
from pipelines import local_stack
from pipelines.artifacts import engagement_home
from pipelines.local_stack import API_CLIENT_ID, API_CLIENT_SECRET_ENV, LOCAL_API_CLIENT_SECRET

REPO_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(Exception):
    """A setting a user gave (or left at a default that cannot work here) is wrong; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str          # attribute name, e.g. pg_port
    env: str           # environment variable
    default: object
    kind: str          # 'port' | 'int' | 'path' | 'str' | 'choice'
    help: str
    minimum: int = 1
    maximum: int = 65535
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return '--' + self.name.replace('_', '-')


def _default_home() -> str:
    return str(engagement_home({'XDG_CACHE_HOME': os.environ.get('XDG_CACHE_HOME', '')}))


SETTINGS: tuple[Setting, ...] = (
    Setting('home', 'ENGAGEMENT_HOME', None, 'path',
            'Downloads and builds (Kafka, Connect, Debezium jars; the Prism binary). Default ~/.cache/engagement.'),
    Setting('state_dir', local_stack.STATE_DIR_ENV, str(local_stack.DEFAULT_STATE_DIR), 'path',
            'Data, logs and PID files of the running stack. Default <repo>/.state.'),
    Setting('pg_port', *local_stack.PORTS['pg_port'], 'port', 'PostgreSQL port.'),
    Setting('redis_port', *local_stack.PORTS['redis_port'], 'port', 'Redis port.'),
    Setting('kafka_port', *local_stack.PORTS['kafka_port'], 'port', 'Kafka broker (PLAINTEXT listener) port.'),
    Setting('kafka_controller_port', *local_stack.PORTS['kafka_controller_port'], 'port',
            'Kafka KRaft controller port.'),
    Setting('connect_port', *local_stack.PORTS['connect_port'], 'port', 'Kafka Connect REST port.'),
    Setting('api_port', *local_stack.PORTS['api_port'], 'port',
            'Port of the local REST API receiver (launch.standins.api_receiver), the target of the pipeline\'s API '
            'sink.'),
    Setting('bq_port', *local_stack.PORTS['bq_port'], 'port', 'BigQuery emulator (bqemulator) REST port.'),
    Setting('gcs_port', *local_stack.PORTS['gcs_port'], 'port',
            'Cloud Storage emulator port (temporary files of BigQuery file loads).'),
    Setting('metrics_port', *local_stack.PORTS['metrics_port'], 'port',
            'Where the pipeline the demo starts serves its Prometheus metrics (--metrics_port), read by the '
            'monitoring service.'),
    Setting('monitor_port', *local_stack.PORTS['monitor_port'], 'port',
            'The monitoring and query service (python -m launch.monitor): health, metrics, query API, web page.'),
    Setting('prometheus_port', *local_stack.PORTS['prometheus_port'], 'port',
            'Prometheus (component prometheus), scraping the monitoring service and evaluating the alert rules.'),
    Setting('flink_rest_port', *local_stack.PORTS['flink_rest_port'], 'port',
            'Flink session cluster (--with flink): the JobManager\'s REST API (web UI, job submission).'),
    Setting('flink_rpc_port', *local_stack.PORTS['flink_rpc_port'], 'port',
            'Flink session cluster: the JobManager\'s RPC port (TaskManagers register there).'),
    Setting('flink_blob_port', *local_stack.PORTS['flink_blob_port'], 'port',
            'Flink session cluster: the JobManager\'s blob server (job jars and artifacts).'),
    Setting('flink_worker_pool_port', *local_stack.PORTS['flink_worker_pool_port'], 'port',
            'Flink session cluster: the Beam Python worker pool (environment EXTERNAL) that starts one SDK worker '
            'process per TaskManager slot environment.'),
    Setting('flink_taskmanagers', 'ENGAGEMENT_FLINK_TASKMANAGERS', 2, 'int',
            'Flink session cluster: TaskManager processes (their RPC and data ports are picked by Flink, on '
            '127.0.0.1).', 1, 8),
    Setting('flink_slots', 'ENGAGEMENT_FLINK_SLOTS', 1, 'int', 'Flink session cluster: task slots per TaskManager.',
            1, 8),
    Setting('bq_project', *local_stack.NAMES['bq_project'], 'str',
            'BigQuery project of the tables (the emulator accepts any).'),
    Setting('bq_dataset', *local_stack.NAMES['bq_dataset'], 'str', 'BigQuery dataset of the tables.'),
    Setting('kafka_partitions', 'ENGAGEMENT_KAFKA_PARTITIONS', 3, 'int',
            'Partitions of every topic the stack creates.', 1, 64),
    Setting('topic_prefix', *local_stack.NAMES['topic_prefix'], 'str',
            'Debezium topic.prefix: CDC topics are <prefix>.public.engagement_events and <prefix>.public.content.'),
    Setting('raw_topic', *local_stack.NAMES['raw_topic'], 'str',
            'Topic for producers that write JSON events directly (launch.scenarios.generate --direct).'),
    Setting('dead_letter_topic', *local_stack.NAMES['dead_letter_topic'], 'str',
            'Topic for dead letters.'),
    Setting('alert_topic', *local_stack.NAMES['alert_topic'], 'str',
            'Topic for viral-content alerts (the pipeline\'s --alert_topic).'),
    Setting('pg_database', *local_stack.NAMES['pg_database'], 'str', 'PostgreSQL database name.'),
    Setting('kafka_security', 'ENGAGEMENT_KAFKA_SECURITY', 'plaintext', 'choice',
            'plaintext, or sasl_ssl: the broker\'s client listener (--kafka-port) takes TLS with SASL SCRAM-SHA-512 '
            'or PLAIN only (user engagement), with a certificate and passwords the stack generates under '
            '<state dir>/secrets/ (docs/operations.md, "Authentication").', choices=('plaintext', 'sasl_ssl')),
    Setting('pg_auth', 'ENGAGEMENT_PG_AUTH', 'trust', 'choice',
            'trust, or scram-sha-256: PostgreSQL asks for the postgres role\'s password (clients read it from '
            '<state dir>/secrets/pgpass).', choices=('trust', 'scram-sha-256')),
    Setting('redis_auth', 'ENGAGEMENT_REDIS_AUTH', 'none', 'choice',
            'none, or password: Redis accepts only the ACL user engagement with its password (the default user '
            'is off).', choices=('none', 'password')),
)
_BY_NAME = {s.name: s for s in SETTINGS}


PORT_SETTINGS = tuple(s for s in SETTINGS if s.kind == 'port')


@dataclasses.dataclass(frozen=True)
class StackConfig:
    home: Path
    state_dir: Path
    pg_port: int
    redis_port: int
    kafka_port: int
    kafka_controller_port: int
    connect_port: int
    bq_port: int
    gcs_port: int
    metrics_port: int
    monitor_port: int
    prometheus_port: int
    flink_rest_port: int
    flink_rpc_port: int
    flink_blob_port: int
    flink_worker_pool_port: int
    flink_taskmanagers: int
    flink_slots: int
    bq_project: str
    bq_dataset: str
    api_port: int
    kafka_partitions: int
    topic_prefix: str
    raw_topic: str
    dead_letter_topic: str
    alert_topic: str
    pg_database: str
    kafka_security: str = 'plaintext'
    pg_auth: str = 'trust'
    redis_auth: str = 'none'

    # Derived values: one place for every name and address the components and clients share.
    @property
    def kafka_bootstrap(self) -> str:
        return local_stack.kafka_bootstrap(self.kafka_port)

    @property
    def redis_url(self) -> str:
        return local_stack.redis_url(self.redis_port)

    @property
    def pg_dsn(self) -> str:
        dsn = local_stack.pg_dsn(self.pg_port, self.pg_database)
        # libpq reads the password from this file (a path, not the secret: fine in a flag)
        return f'{dsn} passfile={secrets.pgpass_file(self.state_dir)}' if self.pg_auth != 'trust' else dsn

    def kafka_client_config(self, mechanism: str = 'SCRAM-SHA-512') -> dict:
        """kafka-python settings for a client of this stack's broker (with the password: never log the result)."""
        config: dict = {'bootstrap_servers': self.kafka_bootstrap}
        if self.kafka_security == 'sasl_ssl':
            config.update({'security_protocol': 'SASL_SSL', 'sasl_mechanism': mechanism,
                           'sasl_plain_username': secrets.KAFKA_CLIENT_USER,
                           'sasl_plain_password': secrets.read_password(self.state_dir, 'kafka-client'),
                           'ssl_cafile': str(secrets.kafka_ca_file(self.state_dir))})
        return config

    def redis_credentials(self) -> dict:
        """username/password arguments of `redis.Redis` for this stack's Redis (empty without authentication)."""
        if self.redis_auth == 'none':
            return {}
        return {'username': secrets.REDIS_USER, 'password': secrets.read_password(self.state_dir, 'redis')}

    def credentials_env(self) -> dict[str, str]:
        """The variables a client process reads its credentials from: file paths, never the secrets."""
        out = {}
        if self.kafka_security == 'sasl_ssl':
            out.update({'KAFKA_SECURITY_PROTOCOL': 'SASL_SSL', 'KAFKA_SASL_MECHANISM': 'SCRAM-SHA-512',
                        'KAFKA_SASL_USERNAME': secrets.KAFKA_CLIENT_USER,
                        'KAFKA_SASL_PASSWORD_FILE': str(secrets.password_file(self.state_dir, 'kafka-client')),
                        'KAFKA_SSL_CAFILE': str(secrets.kafka_ca_file(self.state_dir))})
        if self.pg_auth != 'trust':
            out['PGPASSFILE'] = str(secrets.pgpass_file(self.state_dir))
        if self.redis_auth != 'none':
            out.update({'REDIS_USERNAME': secrets.REDIS_USER,
                        'REDIS_PASSWORD_FILE': str(secrets.password_file(self.state_dir, 'redis'))})
        return out

    @property
    def connect_url(self) -> str:
        return local_stack.http_url(self.connect_port)

    @property
    def api_url(self) -> str:
        return local_stack.http_url(self.api_port)

    @property
    def api_client_secret(self) -> str:
        """The local receiver's client secret: $ENGAGEMENT_API_CLIENT_SECRET, else the documented local default.
        Read from the environment, never a flag (flags show up in process lists)."""
        return os.environ.get(API_CLIENT_SECRET_ENV) or LOCAL_API_CLIENT_SECRET

    @property
    def bq_endpoint(self) -> str:
        return local_stack.http_url(self.bq_port)

    @property
    def gcs_endpoint(self) -> str:
        return local_stack.http_url(self.gcs_port)

    @property
    def pipeline_metrics_url(self) -> str:
        return local_stack.http_url(self.metrics_port) + '/metrics'

    @property
    def monitor_url(self) -> str:
        return local_stack.http_url(self.monitor_port)

    @property
    def gcs_temp_bucket(self) -> str:
        """The Cloud Storage emulator's bucket for the temporary files of BigQuery file loads."""
        return local_stack.GCS_TEMP_BUCKET

    @property
    def bq_temp_location(self) -> str:
        return local_stack.bq_temp_location()

    @property
    def events_topic(self) -> str:
        return local_stack.cdc_topic(self.topic_prefix)

    @property
    def content_topic(self) -> str:
        return f'{self.topic_prefix}.public.content'

    @property
    def topics(self) -> tuple[str, ...]:
        return (self.events_topic, self.content_topic, self.raw_topic, self.dead_letter_topic, self.alert_topic)

    def component_dir(self, component: str) -> Path:
        return self.state_dir / component

    def log_file(self, component: str) -> Path:
        return self.state_dir / 'logs' / f'{component}.log'

    def pid_file(self, component: str) -> Path:
        return self.state_dir / 'pids' / f'{component}.pid'

    def cli_flags(self) -> list[str]:
        """These settings as command-line flags, for the commands of launch/ run as child processes."""
        return [arg for s in SETTINGS for arg in (s.flag, str(getattr(self, s.name)))]

    def env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes (generator, pipeline, tests)."""
        out = {}
        for s in SETTINGS:
            out[s.env] = str(getattr(self, s.name))
        out['ENGAGEMENT_KAFKA_BOOTSTRAP'] = self.kafka_bootstrap
        out['ENGAGEMENT_REDIS_URL'] = self.redis_url
        out['ENGAGEMENT_PG_DSN'] = self.pg_dsn
        out['ENGAGEMENT_BQ_ENDPOINT'] = self.bq_endpoint
        out['ENGAGEMENT_GCS_ENDPOINT'] = self.gcs_endpoint
        out['ENGAGEMENT_BQ_TEMP_LOCATION'] = self.bq_temp_location
        out['ENGAGEMENT_API_URL'] = self.api_url
        out['ENGAGEMENT_API_CLIENT_ID'] = API_CLIENT_ID
        out[API_CLIENT_SECRET_ENV] = self.api_client_secret
        out.update(self.credentials_env())
        return out


def _convert(setting: Setting, raw: object, source: str) -> object:
    where = f'{setting.flag} / {setting.env}'
    if setting.kind in ('port', 'int'):
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ConfigError(f'{where}: {raw!r} ({source}) is not a whole number.') from None
        low = 1024 if setting.kind == 'port' else setting.minimum
        if not low <= value <= setting.maximum:
            raise ConfigError(f'{where}: {value} ({source}) is out of range; use {low}..{setting.maximum}.')
        return value
    if setting.kind == 'path':
        return Path(str(raw)).expanduser().resolve()
    if setting.kind == 'choice':
        if str(raw).strip() not in setting.choices:
            raise ConfigError(f'{where}: {raw!r} ({source}) is not one of {", ".join(setting.choices)}.')
        return str(raw).strip()
    value = str(raw).strip()
    if not value or any(c.isspace() for c in value):
        raise ConfigError(f'{where}: {raw!r} ({source}) must be a non-empty name without spaces.')
    return value


def load(overrides: dict | None = None, environ: dict | None = None) -> StackConfig:
    """Build the configuration from flags (`overrides`, None = not given), the environment, then defaults."""
    overrides = overrides or {}
    environ = os.environ if environ is None else environ
    values = {}
    for s in SETTINGS:
        if overrides.get(s.name) is not None:
            raw, source = overrides[s.name], f'from {s.flag}'
        elif environ.get(s.env, '') != '':
            raw, source = environ[s.env], f'from {s.env}'
        else:
            raw = _default_home() if s.name == 'home' else s.default
            source = 'default'
        values[s.name] = _convert(s, raw, source)
    _keep_authentication(values, given={s.name for s in SETTINGS if overrides.get(s.name) is not None
                                        or environ.get(s.env, '') != ''})
    ports = {}
    for s in PORT_SETTINGS:
        other = ports.setdefault(values[s.name], s)
        if other is not s:
            raise ConfigError(f'{s.flag} / {s.env} and {other.flag} / {other.env} are both {values[s.name]}; '
                              'every component needs its own port.')
    return StackConfig(**values)


AUTH_SETTINGS = ('kafka_security', 'pg_auth', 'redis_auth')


def _keep_authentication(values: dict, given: set[str]) -> None:
    """A state directory keeps the authentication it was made with (its data and secrets depend on it): settings
    not given take the recorded values; a given one that differs is a ConfigError."""
    recorded_file = secrets.settings_file(values['state_dir'])
    try:
        recorded = json.loads(recorded_file.read_text())
    except (OSError, ValueError):
        return
    for name in AUTH_SETTINGS:
        if name not in recorded:
            continue
        if name in given and values[name] != recorded[name]:
            s = _BY_NAME[name]
            raise ConfigError(f'{s.flag} / {s.env}: {values[name]} differs from {recorded[name]}, which the stack in '
                              f'{values["state_dir"]} was made with; use that, or `down --purge` first.')
        values[name] = recorded[name]


def record_authentication(cfg: 'StackConfig') -> None:
    """Remember the authentication settings of a stack that uses any (see _keep_authentication)."""
    if any(getattr(cfg, name) != _BY_NAME[name].default for name in AUTH_SETTINGS):
        made = cfg.state_dir / 'postgres' / 'data' / 'PG_VERSION'
        if cfg.pg_auth != 'trust' and made.exists() and not secrets.settings_file(cfg.state_dir).exists():
            raise ConfigError(f'--pg-auth / ENGAGEMENT_PG_AUTH: the database in {cfg.state_dir} was made without '
                              'passwords; use another --state-dir, or `down --purge` first.')
        secrets.write_private(secrets.settings_file(cfg.state_dir),
                              json.dumps({name: getattr(cfg, name) for name in AUTH_SETTINGS}))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; its help names the variable and the default."""
    group = parser.add_argument_group('stack settings (flag > environment variable > default)')
    for s in SETTINGS:
        default = '~/.cache/engagement' if s.name == 'home' else s.default
        group.add_argument(s.flag, dest=s.name, default=None, metavar=s.env,
                           help=f'{s.help} Env {s.env}; default {default}.')


def from_args(args: argparse.Namespace) -> StackConfig:
    return load({s.name: getattr(args, s.name, None) for s in SETTINGS})


def port_is_free(port: int, host: str = '127.0.0.1') -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def busy_port_message(setting_name: str, port: int) -> str:
    s = _BY_NAME[setting_name]
    return (f'port {port} on 127.0.0.1 is already in use by another program: '
            f'set {s.env} (or {s.flag}) to a free port.')


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports that are free on 127.0.0.1 right now (>= 1024)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(('127.0.0.1', 0))
            socks.append(s)
            if s.getsockname()[1] >= 1024:
                ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def private_config(prefix: str = 'engagement-test-', **overrides) -> 'StackConfig':
    """A configuration on free ports (every port setting) with a fresh state directory under /var/tmp that the
    `postgres` user can reach: for tests, benchmarks and `launch.scenarios.golden`, never touching a developer's
    stack."""
    import tempfile
    state = Path(tempfile.mkdtemp(prefix=prefix, dir='/var/tmp'))
    os.chmod(state, 0o755)
    port_settings = [st.name for st in SETTINGS if st.kind == 'port']
    values = {'state_dir': str(state), **dict(zip(port_settings, free_ports(len(port_settings))))}
    values.update(overrides)
    return load(values)
