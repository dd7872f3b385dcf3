"""The local stack: PostgreSQL 15 (logical decoding), Redis, Kafka (KRaft, one node) and Kafka Connect with
Debezium's Postgres connector, started from what `make install` put under $ENGAGEMENT_HOME.

    python -m launch.stack up|down|status|logs [component] [settings]

Everything binds to 127.0.0.1; data, logs and PID files live under the state directory. `up` on a running stack
is a no-op; `down` stops exactly the processes `up` recorded (by PID, checked against the process start time so a
recycled PID is never signalled) and keeps the data unless `--purge`.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from launch import config as stack_config
from launch.config import ConfigError, StackConfig
from pipelines.processes import descendants

PG_BIN = Path('/usr/lib/postgresql/15/bin')
SEED_SQL = Path(__file__).resolve().parent / 'sql' / 'seed.sql'
CONNECTOR_NAME = 'engagement-cdc'
COMPONENTS = ('postgres', 'redis', 'storage', 'bigquery', 'kafka', 'connect', 'api')
START_TIMEOUT_S = 90


class StackError(Exception):
    """A component failed to start or answer; the message names it and its log."""


# ---------------------------------------------------------------------------------------------------------------
# Processes we started: PID + start time (from /proc) so that a PID reused by another program is never signalled.

def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(')') + 2:].split()
    if fields[0] == 'Z':
        return None
    return fields[19]


class ManagedProcess:
    def __init__(self, cfg: StackConfig, name: str):
        self.cfg, self.name = cfg, name
        self.pid_file = cfg.pid_file(name)
        self.log_file = cfg.log_file(name)

    def recorded(self) -> tuple[int, str] | None:
        try:
            pid, started = self.pid_file.read_text().split()
            return int(pid), started
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        """The PID of our running process, or None."""
        rec = self.recorded()
        if rec and _proc_start_time(rec[0]) == rec[1]:
            return rec[0]
        return None

    def spawn(self, argv: list[str], user: str | None = None, env: dict | None = None) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, 'ab') as log:
            log.write(f'\n--- {time.strftime("%Y-%m-%dT%H:%M:%S")} starting: {" ".join(argv)}\n'.encode())
            log.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, user=user, env=env, close_fds=True)
        started = None
        for _ in range(100):
            started = _proc_start_time(proc.pid)
            if started:
                break
            time.sleep(0.01)
        self.pid_file.write_text(f'{proc.pid} {started}\n')
        self._popen = proc
        return proc.pid

    def exited_early(self) -> bool:
        proc = getattr(self, '_popen', None)
        return proc is not None and proc.poll() is not None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> str:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return 'not running'
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.1)
        outcome = 'stopped'
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
            outcome = f'killed (no exit within {timeout:.0f} s of {signal.Signals(sig).name})'
        self.pid_file.unlink(missing_ok=True)
        return outcome

    def tail(self, lines: int = 20) -> str:
        try:
            return '\n'.join(self.log_file.read_text(errors='replace').splitlines()[-lines:])
        except OSError:
            return '(no log)'


def rss_mb(pid: int) -> float:
    """Resident memory of one process (0 once it is gone)."""
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (PostgreSQL forks a backend per connection)."""
    return sum(rss_mb(current) for current in [pid, *descendants(pid)])


def stop_tree(proc: subprocess.Popen, timeout: float = 20.0) -> str:
    """Stop a child we started and everything it started (a Beam driver leaves Prism behind when killed):
    SIGTERM to the child, then SIGKILL to whatever of the tree is left after `timeout`."""
    if proc.poll() is not None:
        return 'not running'
    tree = descendants(proc.pid)
    proc.terminate()
    try:
        proc.wait(timeout)
        outcome = 'stopped'
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        outcome = f'killed (no exit within {timeout:.0f} s of SIGTERM)'
    for pid in tree:
        if _proc_start_time(pid) is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return outcome


def port_answers(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait(what: str, proc: ManagedProcess, check, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.exited_early():
            raise StackError(f'{proc.name} exited while starting; last lines of {proc.log_file}:\n{proc.tail()}')
        try:
            if check():
                return
        except Exception:  # the component is still coming up; anything it answers before ready is retried
            pass
        time.sleep(0.1)
    raise StackError(f'{proc.name}: {what} not ready after {timeout:.0f} s; see {proc.log_file}:\n{proc.tail()}')


def _http_json(url: str, method: str = 'GET', body: dict | None = None, timeout: float = 5.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b'null')


def _java() -> str:
    java_home = os.environ.get('JAVA_HOME')
    if java_home and (Path(java_home) / 'bin' / 'java').exists():
        return str(Path(java_home) / 'bin' / 'java')
    java = shutil.which('java')
    if not java:
        raise StackError('java not found: install JDK 17 (make install does) or set JAVA_HOME.')
    return java


def _log4j2_config(path: Path, quiet_loggers: dict[str, str]) -> Path:
    lines = ['status = warn', 'appender.console.type = Console', 'appender.console.name = STDOUT',
             'appender.console.layout.type = PatternLayout',
             'appender.console.layout.pattern = [%d] %p %m (%c)%n',
             'rootLogger.level = INFO', 'rootLogger.appenderRef.stdout.ref = STDOUT']
    for i, (logger, level) in enumerate(quiet_loggers.items()):
        lines += [f'logger.q{i}.name = {logger}', f'logger.q{i}.level = {level}']
    path.write_text('\n'.join(lines) + '\n')
    return path


def _write_properties(path: Path, props: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(f'{k}={v}\n' for k, v in props.items()))
    return path


# ---------------------------------------------------------------------------------------------------------------
# Components

class Component:
    name: str
    port_settings: tuple[str, ...]

    def __init__(self, cfg: StackConfig):
        self.cfg = cfg
        self.proc = ManagedProcess(cfg, self.name)
        self.dir = cfg.component_dir(self.name)

    @property
    def ports(self) -> dict[str, int]:
        return {s: getattr(self.cfg, s) for s in self.port_settings}

    def running(self) -> bool:
        return self.proc.pid() is not None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> str:
        return self.proc.stop()

    def health(self) -> list[tuple[str, bool, str]]:
        """(check, ok, detail) rows for `status`."""
        pid = self.proc.pid()
        rows = [('process', pid is not None, f'pid {pid}, RSS {tree_rss_mb(pid):.0f} MB' if pid else 'not running')]
        for setting, port in self.ports.items():
            rows.append((f'port {port}', port_answers(port), 'answering' if port_answers(port) else 'closed'))
        return rows


class Postgres(Component):
    name = 'postgres'
    port_settings = ('pg_port',)

    def _user(self) -> str | None:
        # initdb and postgres refuse to run as root; the Debian package's `postgres` user owns the cluster then.
        return 'postgres' if os.geteuid() == 0 else None

    def _initdb(self, data: Path) -> None:
        user = self._user()
        data.mkdir(parents=True, exist_ok=True)
        if user:
            entry = pwd.getpwnam(user)
            for path in (data, self.cfg.state_dir / 'run'):
                path.mkdir(parents=True, exist_ok=True)
                os.chown(path, entry.pw_uid, entry.pw_gid)
            probe = subprocess.run(['runuser', '-u', user, '--', 'test', '-w', str(data)])
            if probe.returncode != 0:
                raise ConfigError(f'the state directory {self.cfg.state_dir} is not reachable by the {user} user '
                                  f'that runs PostgreSQL when you are root; set ENGAGEMENT_STATE_DIR (or '
                                  f'--state-dir) to a directory outside a private home, e.g. /var/tmp/engagement.')
        cmd = [str(PG_BIN / 'initdb'), '-D', str(data), '-U', 'postgres', '--auth=trust', '-E', 'UTF8',
               '--no-locale']
        with open(self.proc.log_file, 'ab') as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, user=user)
        with open(data / 'postgresql.conf', 'a') as conf:
            conf.write('\n# engagement stack\n'
                       "listen_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.cfg.state_dir / 'run'}'\n"
                       'wal_level = logical\nmax_replication_slots = 8\nmax_wal_senders = 8\n'
                       'synchronous_commit = off\nfsync = on\nmax_connections = 100\n')

    def start(self) -> None:
        data = self.dir / 'data'
        self.proc.log_file.parent.mkdir(parents=True, exist_ok=True)
        if not (data / 'PG_VERSION').exists():
            self._initdb(data)
        (data / 'postmaster.pid').unlink(missing_ok=True)  # left by a killed server; we know none of ours runs
        # Commits return before the WAL is flushed (synchronous_commit = off: throughput on a shared 2-core
        # machine), but logical decoding sends flushed WAL only: the WAL writer's default 200 ms flush interval was
        # the median insert -> Kafka delay; at 10 ms it is ~60 ms (docs/benchmarks.md). A flag, so that a data
        # directory made before it gets it too.
        self.proc.spawn([str(PG_BIN / 'postgres'), '-D', str(data), '-p', str(self.cfg.pg_port),
                         '-c', 'wal_writer_delay=10ms'], user=self._user())
        _wait('connections', self.proc, self._ready)
        self._seed()

    def psql(self, dbname: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(PG_BIN / 'psql'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1',
               '-p', str(self.cfg.pg_port), '-U', 'postgres', '-d', dbname, *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=check)

    def _ready(self) -> bool:
        return subprocess.run([str(PG_BIN / 'pg_isready'), '-q', '-h', '127.0.0.1', '-p', str(self.cfg.pg_port)]
                              ).returncode == 0

    def _seed(self) -> None:
        db = self.cfg.pg_database
        exists = self.psql('postgres', '-tAc', f"SELECT 1 FROM pg_database WHERE datname = '{db}'").stdout.strip()
        if not exists:
            self.psql('postgres', '-c', f'CREATE DATABASE "{db}"')
        result = self.psql(db, '-f', str(SEED_SQL), check=False)
        if result.returncode != 0:
            raise StackError(f'postgres: applying {SEED_SQL} failed: {result.stderr.strip()}')

    def stop(self) -> str:
        return self.proc.stop(signal.SIGINT)  # "fast" shutdown: does not wait for clients to disconnect

    def health(self):
        rows = super().health()
        if rows[0][1]:
            result = self.psql(self.cfg.pg_database, '-tAc',
                                "SELECT (SELECT count(*) FROM content) || ' contents, ' || "
                                "(SELECT count(*) FROM engagement_events) || ' events, slot ' || "
                                "COALESCE((SELECT active::text FROM pg_replication_slots LIMIT 1), 'none')",
                                check=False)
            rows.append(('database', result.returncode == 0, result.stdout.strip() or result.stderr.strip()))
        return rows


class Redis(Component):
    name = 'redis'
    port_settings = ('redis_port',)

    def start(self) -> None:
        binary = shutil.which('redis-server')
        if not binary:
            raise StackError('redis-server not found: run `make install` (it installs the Debian package).')
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / 'redis.conf'
        # Durable like a production Redis: the pipeline resumes from committed Kafka offsets and does not rewrite
        # windows that were final, so a Redis that came back empty (a restart, `stack down` + `up`) would stay
        # wrong. The append-only file is synced at every write (the sink writes in pipelined batches, one sync each),
        # so not even a SIGKILL loses an acknowledged write.
        conf.write_text(f'bind 127.0.0.1\nport {self.cfg.redis_port}\ndaemonize no\ndir {self.dir}\n'
                        'save ""\nappendonly yes\nappendfsync always\nprotected-mode yes\n')
        self.proc.spawn([binary, str(conf)])
        _wait('PING', self.proc, self._ping)

    def _ping(self) -> bool:
        with socket.create_connection(('127.0.0.1', self.cfg.redis_port), timeout=1) as sock:
            sock.sendall(b'PING\r\n')
            return sock.recv(16).startswith(b'+PONG')


class Kafka(Component):
    name = 'kafka'
    port_settings = ('kafka_port', 'kafka_controller_port')

    def _classpath(self) -> str:
        lib = self.cfg.home / 'kafka' / 'lib'
        if not any(lib.glob('kafka_2.13-*.jar')):
            raise StackError(f'Kafka jars not found in {lib}: run `make install`.')
        return f'{lib}/*'

    def _java_cmd(self, main: str, *args: str, heap: str = '-Xmx1g') -> list[str]:
        log4j = _log4j2_config(self.dir / 'log4j2.properties', {'kafka.coordinator': 'WARN'})
        return [_java(), heap, '-XX:+UseG1GC', f'-Dlog4j2.configurationFile={log4j}',
                f'-Dkafka.logs.dir={self.dir / "logs"}', '-cp', self._classpath(), main, *args]

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        c = self.cfg
        props = _write_properties(self.dir / 'server.properties', {
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
        _wait('broker', self.proc, self._create_topics)

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

    def start(self) -> None:
        lib = self.cfg.home / 'connect' / 'lib'
        plugins = self.cfg.home / 'connect' / 'plugins'
        if not any(lib.glob('connect-runtime-*.jar')) or not (plugins / 'debezium-postgres').is_dir():
            raise StackError(f'Kafka Connect / Debezium jars not found under {self.cfg.home / "connect"}: '
                             'run `make install`.')
        self.dir.mkdir(parents=True, exist_ok=True)
        worker = _write_properties(self.dir / 'worker.properties', {
            'bootstrap.servers': self.cfg.kafka_bootstrap,
            'key.converter': 'org.apache.kafka.connect.json.JsonConverter', 'key.converter.schemas.enable': 'false',
            'value.converter': 'org.apache.kafka.connect.json.JsonConverter',
            'value.converter.schemas.enable': 'false',
            'offset.storage.file.filename': self.dir / 'offsets.dat',
            # A short flush interval bounds the re-sent changes after a crash (Debezium is at-least-once).
            'offset.flush.interval.ms': 1000,
            'plugin.path': plugins, 'plugin.discovery': 'service_load',
            'listeners': f'http://127.0.0.1:{self.cfg.connect_port}',
            'rest.advertised.host.name': '127.0.0.1', 'rest.advertised.port': self.cfg.connect_port,
            'producer.linger.ms': 5,
        })
        connector = _write_properties(self.dir / 'connector.properties',
                                      {'name': CONNECTOR_NAME, **self.connector_config()})
        log4j = _log4j2_config(self.dir / 'log4j2.properties', {
            'io.debezium.connector.postgresql.connection.MeasurementCollector': 'ERROR',
            'io.debezium.converters.CloudEventsConverter': 'OFF',
            'org.apache.kafka.connect.runtime.isolation': 'WARN',
            'org.apache.kafka.clients': 'WARN',
        })
        self.proc.spawn([_java(), '-Xmx1g', '-XX:+UseG1GC', f'-Dlog4j2.configurationFile={log4j}',
                         '-cp', f'{lib}/*', 'org.apache.kafka.connect.cli.ConnectStandalone',
                         str(worker), str(connector)])
        _wait('connector task RUNNING', self.proc, lambda: self.task_state() == 'RUNNING')
        # RUNNING comes before the replication slot streams; wait for it so that rows inserted right after `up`
        # returns are captured by the stream rather than racing the snapshot.
        _wait('replication slot active', self.proc, self.slot_active)

    def slot_active(self) -> bool:
        result = Postgres(self.cfg).psql(self.cfg.pg_database, '-tAc',
                                         'SELECT active FROM pg_replication_slots WHERE slot_name = '
                                         f"'{self.connector_config()['slot.name']}'", check=False)
        return result.stdout.strip() == 't'

    def task_state(self) -> str:
        status = _http_json(f'{self.cfg.connect_url}/connectors/{CONNECTOR_NAME}/status')
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


class ApiReceiver(Component):
    """The local REST API receiver (launch/api_receiver.py): the target of the pipeline's API sink."""
    name = 'api'
    port_settings = ('api_port',)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, 'PYTHONPATH': str(stack_config.REPO_ROOT),
               stack_config.API_CLIENT_SECRET_ENV: self.cfg.api_client_secret}
        self.proc.spawn([sys.executable, '-m', 'launch.api_receiver', '--host', '127.0.0.1',
                         '--port', str(self.cfg.api_port), '--state-dir', str(self.dir),
                         '--client-id', stack_config.API_CLIENT_ID,
                         '--client-secret-env', stack_config.API_CLIENT_SECRET_ENV], env=env)
        _wait('GET /health', self.proc,
              lambda: _http_json(f'{self.cfg.api_url}/health', timeout=1)['status'] == 'ok')

    def health(self):
        rows = super().health()
        if rows[0][1]:
            try:
                stats = _http_json(f'{self.cfg.api_url}/v1/stats', timeout=2)
                injected = stats['injected']['total']
                rows.append(('events received', True, f"{stats['accepted_events']} accepted (unique keys), "
                                                      f"{stats['duplicates']} duplicates, {stats['requests']} "
                                                      f"requests, {injected} injected failures"))
            except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                rows.append(('events received', False, f'{type(exc).__name__}: {exc}'))
        return rows


def _bq_venv_bin(cfg: StackConfig, program: str) -> str:
    from launch.install import bq_venv
    path = bq_venv(cfg.home) / 'bin' / program
    if not path.exists():
        raise StackError(f'{path} not found: run `make install` (it installs the BigQuery and GCS emulators).')
    return str(path)


class Storage(Component):
    """Cloud Storage emulator (PyPI gcp-storage-emulator): where BigQuery file loads stage their files. Its files
    live under <dir>/.cloudstorage/<bucket>/..., which the BigQuery emulator reads gs:// URIs from."""
    name = 'storage'
    port_settings = ('gcs_port',)

    @property
    def root(self) -> Path:
        return self.dir / '.cloudstorage'

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc.spawn([_bq_venv_bin(self.cfg, 'gcp-storage-emulator'), '--data-dir', str(self.dir), 'start',
                         '--host', '127.0.0.1', '--port', str(self.cfg.gcs_port),
                         '--default-bucket', self.cfg.gcs_temp_bucket, '--quiet'])
        _wait(f'bucket {self.cfg.gcs_temp_bucket}', self.proc, self._bucket)

    def _bucket(self) -> bool:
        return _http_json(f'{self.cfg.gcs_endpoint}/storage/v1/b/{self.cfg.gcs_temp_bucket}',
                          timeout=1)['name'] == self.cfg.gcs_temp_bucket

    def health(self):
        rows = super().health()
        if rows[0][1]:
            try:
                rows.append((f'bucket {self.cfg.gcs_temp_bucket}', self._bucket(), 'present'))
            except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                rows.append((f'bucket {self.cfg.gcs_temp_bucket}', False, f'{type(exc).__name__}: {exc}'))
        return rows


class BigQuery(Component):
    """BigQuery emulator (PyPI bqemulator, launch/bigquery_emulator.py); on start, the dataset, tables and views
    of connectors/bigquery.py are created where missing."""
    name = 'bigquery'
    port_settings = ('bq_port',)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        launcher = Path(__file__).resolve().parent / 'bigquery_emulator.py'
        self.proc.spawn([_bq_venv_bin(self.cfg, 'python'), str(launcher),
                         '--port', str(self.cfg.bq_port), '--data-dir', str(self.dir / 'data'),
                         '--project', self.cfg.bq_project, '--gcs-root', str(Storage(self.cfg).root)])
        _wait('GET /readyz', self.proc,
              lambda: _http_json(f'{self.cfg.bq_endpoint}/readyz', timeout=1)['status'] == 'ok')
        from connectors.bigquery import ensure_tables
        try:
            ensure_tables(self.cfg.bq_project, self.cfg.bq_dataset, self.cfg.bq_endpoint)
        except Exception as exc:  # the emulator answered but refused the DDL: say which and where its log is
            raise StackError(f'bigquery: creating the tables failed ({type(exc).__name__}: {exc}); '
                             f'see {self.proc.log_file}') from None

    def table_rows(self) -> dict[str, int]:
        """numRows of every table and view of the dataset, from the emulator's catalog."""
        base = f'{self.cfg.bq_endpoint}/bigquery/v2/projects/{self.cfg.bq_project}/datasets/{self.cfg.bq_dataset}'
        listed = _http_json(f'{base}/tables', timeout=2).get('tables') or []
        out = {}
        for entry in listed:
            name = entry['tableReference']['tableId']
            if entry.get('type') == 'VIEW':
                continue
            out[name] = int(_http_json(f'{base}/tables/{name}', timeout=2).get('numRows') or 0)
        return out

    def health(self):
        rows = super().health()
        if rows[0][1]:
            try:
                counts = self.table_rows()
                rows.append((f'dataset {self.cfg.bq_dataset}', bool(counts),
                             ', '.join(f'{t}={n} rows' for t, n in counts.items()) or 'no tables'))
            except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                rows.append((f'dataset {self.cfg.bq_dataset}', False, f'{type(exc).__name__}: {exc}'))
        return rows


COMPONENT_CLASSES = {'postgres': Postgres, 'redis': Redis, 'storage': Storage, 'bigquery': BigQuery, 'kafka': Kafka,
                     'connect': Connect, 'api': ApiReceiver}


# ---------------------------------------------------------------------------------------------------------------
# The stack

class Stack:
    def __init__(self, cfg: StackConfig, out=None):
        self.cfg = cfg
        self.out = out  # None: whatever sys.stdout is when a line is printed
        self.components = [COMPONENT_CLASSES[name](cfg) for name in COMPONENTS]

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def _say(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)

    def check_ports(self, to_start: list[Component]) -> None:
        for comp in to_start:
            for setting, port in comp.ports.items():
                if not stack_config.port_is_free(port):
                    raise ConfigError(f'{comp.name}: ' + stack_config.busy_port_message(setting, port))

    def up(self) -> float:
        started = time.monotonic()
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        to_start = [c for c in self.components if not c.running()]
        self.check_ports(to_start)
        for comp in self.components:
            if comp not in to_start:
                self._say(f'  {comp.name:<9} already running (pid {comp.proc.pid()})')
                continue
            t0 = time.monotonic()
            comp.start()
            self._say(f'  {comp.name:<9} up in {time.monotonic() - t0:4.1f} s  (pid {comp.proc.pid()}, '
                      + ', '.join(f'port {p}' for p in comp.ports.values()) + ')')
        elapsed = time.monotonic() - started
        self._say(f'stack up in {elapsed:.1f} s; state in {self.cfg.state_dir}')
        return elapsed

    def down(self, purge: bool = False) -> None:
        for comp in reversed(self.components):
            self._say(f'  {comp.name:<9} {comp.stop()}')
        if purge:
            shutil.rmtree(self.cfg.state_dir, ignore_errors=True)
            self._say(f'purged {self.cfg.state_dir}')

    def status(self) -> bool:
        healthy = True
        for comp in self.components:
            for check, ok, detail in comp.health():
                healthy &= ok
                self._say(f'  {"ok  " if ok else "DOWN"} {comp.name:<9} {check:<24} {detail}')
        self._say('stack healthy' if healthy else 'stack NOT healthy')
        return healthy

    def kill(self, name: str) -> int:
        """SIGKILL one component (fault tests); returns the PID killed."""
        comp = self.component(name)
        pid = comp.proc.pid()
        if pid is None:
            raise StackError(f'{name} is not running')
        os.kill(pid, signal.SIGKILL)
        while comp.proc.pid() is not None:
            time.sleep(0.05)
        # A multi-threaded process is a zombie before its last thread has closed the listening socket.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(stack_config.port_is_free(p) for p in comp.ports.values()):
            time.sleep(0.05)
        return pid

    def start(self, name: str) -> None:
        comp = self.component(name)
        if not comp.running():
            self.check_ports([comp])
            comp.start()


def _logs(cfg: StackConfig, component: str | None, lines: int, follow: bool) -> None:
    names = [component] if component else list(COMPONENTS)
    for name in names:
        proc = ManagedProcess(cfg, name)
        print(f'==> {proc.log_file} <==')
        print(proc.tail(lines))
    if follow:
        os.execvp('tail', ['tail', '-n', '0', '-F', *(str(cfg.log_file(n)) for n in names)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.stack', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('command', choices=['up', 'down', 'status', 'logs'])
    parser.add_argument('component', nargs='?', choices=COMPONENTS, help='logs: only this component')
    parser.add_argument('--purge', action='store_true', help='down: also delete the state directory (all data)')
    parser.add_argument('--lines', type=int, default=40, help='logs: lines per component (default 40)')
    parser.add_argument('--follow', '-f', action='store_true', help='logs: keep following')
    stack_config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = stack_config.from_args(args)
        stack = Stack(cfg)
        if args.command == 'up':
            stack.up()
        elif args.command == 'down':
            stack.down(purge=args.purge)
        elif args.command == 'status':
            return 0 if stack.status() else 1
        else:
            _logs(cfg, args.component, args.lines, args.follow)
    except (ConfigError, StackError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f'error: {" ".join(map(str, exc.cmd))} failed with exit code {exc.returncode}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
