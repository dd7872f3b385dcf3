"""The local expansion service of the cross-language Kafka reader (`connectors.kafka.xlang`): the Java process
`make install` assembles, started on a free 127.0.0.1 port for as long as the pipeline needs it."""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from connectors.kafka.client import log_event


class ExpansionServiceUnavailable(RuntimeError):
    """The local expansion service could not be started; the message says why and what to do."""


class LocalExpansionService:
    """`java -jar <launcher jar> <port>`: the expansion service `make install` assembles (see
    launch/stack/java/LoopbackExpansionService.java), on a free port of 127.0.0.1, with its loopback Java worker.

    It must outlive the pipeline's expansion: on Prism the Java read runs in it. `start()` waits until the port
    answers; `stop()` (also at interpreter exit, and when used as a context manager) sends SIGTERM, SIGKILL after
    `stop_timeout_s`. The JVM runs under `setpriv --pdeathsig TERM`, so it also stops when the process that
    started it dies by SIGKILL."""

    def __init__(self, launcher_jar: str | os.PathLike, java: str | None = None, jvm_args: tuple = ('-Xmx512m',),
                 startup_timeout_s: float = 60.0, stop_timeout_s: float = 10.0, log_path: str | None = None):
        self.launcher_jar = Path(launcher_jar)
        self._java = java or (str(Path(os.environ['JAVA_HOME']) / 'bin' / 'java') if os.environ.get('JAVA_HOME')
                              else 'java')
        self._jvm_args = tuple(jvm_args)
        self._startup_timeout_s, self._stop_timeout_s = startup_timeout_s, stop_timeout_s
        self._log_path = log_path
        self._proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def address(self) -> str:
        if self.port is None:
            raise ExpansionServiceUnavailable('the expansion service is not started')
        return f'127.0.0.1:{self.port}'

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> str:
        if self._proc is not None:
            return self.address
        if not self.launcher_jar.is_file():
            raise ExpansionServiceUnavailable(f'the Kafka expansion service is not installed at {self.launcher_jar}; '
                                              'run `make install`')
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            self.port = s.getsockname()[1]
        cmd = [self._java, *self._jvm_args, '-jar', str(self.launcher_jar), str(self.port)]
        if shutil.which('setpriv'):
            cmd = ['setpriv', '--pdeathsig', 'TERM', '--', *cmd]
        out = open(self._log_path, 'ab') if self._log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if self._log_path else None,
                                      stdin=subprocess.DEVNULL)
        atexit.register(self.stop)
        deadline = time.monotonic() + self._startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise ExpansionServiceUnavailable(f'the Kafka expansion service ({self.launcher_jar}) exited with '
                                                  f'code {code} at start')
            assert self.port is not None  # chosen above
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=1).close()
                log_event('kafka_expansion_service_started', address=self.address, pid=self._proc.pid)
                return self.address
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise ExpansionServiceUnavailable(f'the Kafka expansion service did not listen on 127.0.0.1:{self.port} '
                                          f'within {self._startup_timeout_s:.0f} s')

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_event('kafka_expansion_service_stopped', pid=proc.pid)

    def __enter__(self) -> 'LocalExpansionService':
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
