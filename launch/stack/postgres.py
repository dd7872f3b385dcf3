"""PostgreSQL 15 with logical decoding: its own cluster under the state directory (initdb on first start), the
database and seed schema of sql/seed.sql applied at every start (idempotent), `psql` for the other components.
"""
from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path

from launch.stack import secrets
from launch.stack.component import Component, StackError, wait_ready
from launch.stack.config import ConfigError

PG_BIN = Path('/usr/lib/postgresql/15/bin')
SEED_SQL = Path(__file__).resolve().parent / 'sql' / 'seed.sql'


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
        cmd = [str(PG_BIN / 'initdb'), '-D', str(data), '-U', 'postgres', '-E', 'UTF8', '--no-locale']
        pwfile = None
        if self.cfg.pg_auth == 'trust':
            cmd.append('--auth=trust')
        else:  # the role's password from a file initdb reads (readable by the server's user only), then removed
            pwfile = secrets.write_private(self.dir / 'initdb.pw', secrets.password(self.cfg.state_dir, 'postgres'))
            if user:
                os.chown(pwfile, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
            cmd += [f'--auth={self.cfg.pg_auth}', f'--pwfile={pwfile}']
        try:
            with open(self.proc.log_file, 'ab') as log:
                subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, user=user)
        finally:
            if pwfile:
                pwfile.unlink(missing_ok=True)
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
        if self.cfg.pg_auth != 'trust':  # libpq's password file, for psql here and every client (PGPASSFILE)
            password = secrets.read_password(self.cfg.state_dir, 'postgres')
            secrets.write_private(secrets.pgpass_file(self.cfg.state_dir),
                                  f'127.0.0.1:*:*:{secrets.PG_USER}:{password}\n')
        (data / 'postmaster.pid').unlink(missing_ok=True)  # left by a killed server; we know none of ours runs
        # Commits return before the WAL is flushed (synchronous_commit = off: throughput on a shared 2-core
        # machine), but logical decoding sends flushed WAL only: the WAL writer's default 200 ms flush interval was
        # the median insert -> Kafka delay; at 10 ms it is ~60 ms (docs/benchmarks.md). A flag, so that a data
        # directory made before it gets it too.
        self.proc.spawn([str(PG_BIN / 'postgres'), '-D', str(data), '-p', str(self.cfg.pg_port),
                         '-c', 'wal_writer_delay=10ms'], user=self._user())
        wait_ready('connections', self.proc, self._ready)
        self._seed()

    def psql(self, dbname: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(PG_BIN / 'psql'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1',
               '-p', str(self.cfg.pg_port), '-U', 'postgres', '-d', dbname, *args]
        env = {**os.environ, **self.cfg.credentials_env()}  # PGPASSFILE when the stack asks for passwords
        return subprocess.run(cmd, capture_output=True, text=True, check=check, env=env)

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
