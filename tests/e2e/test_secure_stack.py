"""Authentication and encryption that run, on the real stack: `launch.stack` with Kafka on SASL_SSL only (SCRAM-SHA-512
and PLAIN; a certificate keytool made), PostgreSQL with scram-sha-256 passwords and Redis with an ACL user. Every
client goes through them with credentials read from files the stack wrote (never from a flag): Kafka Connect and
Debezium, the generator (Postgres), the hostile corpus (Kafka producer), the pipeline with both Kafka readers (python
with SCRAM-SHA-512, xlang with PLAIN) and its dead-letter writer, the dashboard, the dead-letter listing (PLAIN) and
the redelivery tool. Redis equals SQL; every hostile record has its dead letter. A wrong password is one `error:`
line and a quick exit for the pipeline and the tools. No password appears in anything the run wrote (logs, the
tools' output, dead letters, Redis, the pipeline's metrics, files of the state directory other than the 0600 files
that must hold one) nor in the process list.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from launch.scenarios import generate, verify
from launch.stack import secrets
from pipelines.processes import descendants
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline
from tests.e2e.test_clean_stops import LOOPBACK, listeners
from tests.e2e.test_hostile_input import check_dead_letters, send_corpus
from tests.e2e.test_pipeline_e2e import read_dead_letters, wait_exact

pytestmark = pytest.mark.integration

PASSWORDS = ('kafka-client', 'kafka-broker', 'kafka-keystore', 'postgres', 'redis')
# The files that must hold a secret (each readable by its owner only): the secrets themselves and the configuration
# files of the servers that check them.
HOLDERS = {'kafka/server.properties', 'connect/worker.properties', 'connect/connector.properties', 'redis/redis.conf',
           'kafka/broker.p12'}
WRONG = 'not-the-password-123'


@pytest.fixture(scope='module')
def secure_stack():
    with private_stack(kafka_security='sasl_ssl', pg_auth='scram-sha-256', redis_auth='password') as stack:
        yield stack


class ProcessWatch(threading.Thread):
    """Reads every process's command line (`/proc/*/cmdline`) twice a second while the test runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen: set[bytes] = set()
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            for cmdline in Path('/proc').glob('[0-9]*/cmdline'):
                try:
                    self.seen.add(cmdline.read_bytes())
                except OSError:
                    pass
            self.stopped.wait(0.5)


def tool(cfg, *argv: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **cfg.env(), **(env or {})})


def one_error_line(result, *expected: str) -> str:
    """The run failed with exit code 2 and said so in one `error:` line naming `expected`, without a traceback."""
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith('error:')]
    assert result.returncode == 2 and len(errors) == 1, f'exit {result.returncode}, output:\n{output[-3000:]}'
    assert 'Traceback' not in output, output[-3000:]
    assert all(word in errors[0] for word in expected), errors[0]
    return errors[0]


def pipeline_refusal(cfg, env: dict) -> subprocess.CompletedProcess:
    pipeline = Pipeline(cfg, name='refused', env=env)
    started = time.monotonic()
    pipeline.start()
    try:
        pipeline.proc.wait(90)
    finally:
        pipeline.stop()
    text = pipeline.log.read_text()
    assert time.monotonic() - started < 90
    return subprocess.CompletedProcess(pipeline.proc.args, pipeline.proc.returncode, text, '')


def test_every_client_goes_through_sasl_ssl_and_passwords_and_no_secret_leaks(secure_stack):
    cfg = secure_stack.cfg
    state = cfg.state_dir
    passwords = {name: secrets.read_password(state, name) for name in PASSWORDS}
    watch = ProcessWatch()
    watch.start()
    outputs: list[str] = []

    # Nothing answers without credentials: Kafka's client port speaks TLS+SASL only, Redis's default user is off,
    # Postgres asks for a password.
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError
    with pytest.raises(KafkaError):  # a plaintext client gets no answer it understands
        KafkaAdminClient(bootstrap_servers=cfg.kafka_bootstrap, request_timeout_ms=3000,
                         api_version_auto_timeout_ms=3000)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(cfg.redis_url).ping()
    no_pass = subprocess.run(['/usr/lib/postgresql/15/bin/psql', '-h', '127.0.0.1', '-p', str(cfg.pg_port), '-U',
                              'postgres', '-w', '-c', 'SELECT 1'], capture_output=True, text=True)
    assert no_pass.returncode != 0 and 'password' in no_pass.stderr

    metrics_port = cfg.metrics_port
    pipeline = Pipeline(cfg, f'--metrics_port={metrics_port}', name='secure-python')
    try:
        backlog = send_corpus(cfg)           # Kafka producer, SCRAM-SHA-512
        pipeline.start()                     # python reader: kafka-python and librdkafka, SCRAM-SHA-512
        inserts = threading.Thread(target=generate.main, args=(
            ['--rate', '100', '--duration', '30', '--seed', '41', *cfg.cli_flags()],))
        inserts.start()
        time.sleep(15)
        live = send_corpus(cfg)
        inserts.join()
        diffs = wait_exact(cfg, pipeline, 240)
        assert diffs == [], f'{len(diffs)} differences between Redis and SQL, e.g. {diffs[:5]}; see {pipeline.log}'
        assert sum(r['events'] for r in verify.ground_truth(cfg.pg_dsn, 60, 0).values()) >= 2500
        check_dead_letters(cfg, {'backlog': backlog, 'live': live}, once=set())
        with urllib.request.urlopen(f'http://127.0.0.1:{metrics_port}/metrics', timeout=10) as answer:
            outputs.append(answer.read().decode())

        dashboard = tool(cfg, 'launch.scenarios.dashboard', '--seconds', '3', *cfg.cli_flags())
        assert dashboard.returncode == 0 and 'engagement now' in dashboard.stdout, dashboard.stderr[-2000:]
        assert 'cannot read' not in dashboard.stdout, dashboard.stdout[-2000:]
        listing = tool(cfg, 'launch.tools.dead_letters', env={'KAFKA_SASL_MECHANISM': 'PLAIN'})
        assert listing.returncode == 0 and 'parse' in listing.stdout, listing.stdout[-2000:] + listing.stderr
        redelivery = tool(cfg, 'launch.tools.dead_letters', 'redeliver', '--dry-run')
        assert redelivery.returncode == 0, redelivery.stdout[-2000:] + redelivery.stderr[-2000:]
        outputs += [r.stdout + r.stderr for r in (dashboard, listing, redelivery)]
    finally:
        pipeline.stop()

    # The cross-language reader (Java KafkaIO) through the same listener with PLAIN, in its own consumer group: it
    # reads everything again and Redis stays equal to SQL with the new events too.
    xlang = Pipeline(cfg, '--kafka_reader=xlang', '--consumer_group=secure-xlang', name='secure-xlang',
                     env={'KAFKA_SASL_MECHANISM': 'PLAIN'})
    try:
        xlang.start()
        assert generate.main(['--rate', '100', '--duration', '15', '--seed', '42', *cfg.cli_flags()]) == 0
        diffs = wait_exact(cfg, xlang, 240)
        assert diffs == [], f'{len(diffs)} differences between Redis and SQL, e.g. {diffs[:5]}; see {xlang.log}'
        # Loopback only for this run's own listeners too: Prism, the driver's worker pool, the expansion service
        # and the Java SDK harness it runs.
        ours = {xlang.proc.pid, *descendants(xlang.proc.pid)}
        mine = [(address, pid) for address, pid in listeners() if pid in ours]
        assert len(mine) >= 3 and all(LOOPBACK.match(address) for address, _ in mine), mine
    finally:
        xlang.stop()

    # A wrong password: one line, a quick exit, for the pipeline and the tools.
    outputs.append(one_error_line(pipeline_refusal(cfg, {'KAFKA_SASL_PASSWORD': WRONG}), 'Kafka', 'SCRAM-SHA-512',
                                  'authentication failed'))
    outputs.append(one_error_line(pipeline_refusal(cfg, {'PGPASSWORD': WRONG}), 'PostgreSQL', 'authentication'))
    outputs.append(one_error_line(pipeline_refusal(cfg, {'REDIS_PASSWORD': WRONG}), 'Redis', 'authentication'))
    for argv, env in ((('launch.tools.dead_letters',), {'KAFKA_SASL_PASSWORD': WRONG}),
                      (('launch.tools.dead_letters', 'redeliver', '--dry-run'), {'KAFKA_SASL_PASSWORD': WRONG})):
        outputs.append(one_error_line(tool(cfg, *argv, env=env), 'Kafka', 'authentication failed'))
    wrong_file = cfg.state_dir / 'wrong.password'
    wrong_file.write_text(WRONG)
    for name in ('kafka-client', 'redis'):  # the stack's own clients read the files: swap one in, then restore
        path = secrets.password_file(state, name)
        path.rename(path.with_suffix('.kept'))
        wrong_file.rename(path)
        try:
            if name == 'kafka-client':
                result = tool(cfg, 'launch.scenarios.generate', '--direct', '--count', '10', *cfg.cli_flags())
                outputs.append(one_error_line(result, 'Kafka', 'authentication failed'))
            else:
                result = tool(cfg, 'launch.scenarios.dashboard', '--seconds', '2', *cfg.cli_flags())
                outputs.append(one_error_line(result, 'Redis', 'authentication failed'))
        finally:
            path.rename(wrong_file)
            path.with_suffix('.kept').rename(path)

    watch.stopped.set()
    watch.join()
    leaks = []
    for name, password in passwords.items():
        needle = password.encode()
        leaks += [f'{name} in a command line' for cmdline in watch.seen if needle in cmdline]
        leaks += [f'{name} in a tool output or metrics' for text in outputs if password in text]
        for path in state.rglob('*'):
            relative = path.relative_to(state).as_posix()
            if not path.is_file() or relative.startswith('secrets/') or path == wrong_file:
                continue
            if needle in path.read_bytes():
                if relative in HOLDERS:
                    assert stat.S_IMODE(path.stat().st_mode) == 0o600, f'{relative} holds a secret and is not 0600'
                else:
                    leaks.append(f'{name} in {relative}')
        client = redis.Redis.from_url(cfg.redis_url, **cfg.redis_credentials())
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            values = client.hgetall(key).values() if kind == b'hash' else []
            if any(needle in v for v in values):
                leaks.append(f'{name} in Redis key {key!r}')
    letters = [str(d) for d in read_dead_letters(cfg)]
    leaks += [f'{name} in a dead letter' for name, password in passwords.items() for d in letters if password in d]
    assert not leaks, leaks
    for relative in ('secrets', 'secrets/kafka-client.password', 'secrets/pgpass', 'secrets/redis.password'):
        mode = stat.S_IMODE((state / relative).stat().st_mode)
        assert mode in (0o700, 0o600), f'{relative} has mode {oct(mode)}'
