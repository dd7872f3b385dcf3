"""What every component of the local stack is: a `Component` with its name, its port settings, `start` (returns once
the component answers), `stop` and `health` rows for `status`; and the helpers the components share to start
JVMs, write their settings and wait until they answer.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

from launch.stack import secrets
from launch.stack.config import StackConfig
from launch.stack.processes import ManagedProcess, port_answers, tree_rss_mb

START_TIMEOUT_S = 90


class StackError(Exception):
    """A component failed to start or answer; the message names it and its log."""


def wait_ready(what: str, proc: ManagedProcess, check, timeout: float = START_TIMEOUT_S) -> None:
    """Return once `check()` is true; StackError (with the log's last lines) if the process exits or time runs out."""
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


def http_json(url: str, method: str = 'GET', body: dict | None = None, timeout: float = 5.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b'null')


def java_binary() -> str:
    java_home = os.environ.get('JAVA_HOME')
    if java_home and (Path(java_home) / 'bin' / 'java').exists():
        return str(Path(java_home) / 'bin' / 'java')
    java = shutil.which('java')
    if not java:
        raise StackError('java not found: install JDK 17 (make install does) or set JAVA_HOME.')
    return java


def log4j2_config(path: Path, quiet_loggers: dict[str, str]) -> Path:
    lines = ['status = warn', 'appender.console.type = Console', 'appender.console.name = STDOUT',
             'appender.console.layout.type = PatternLayout',
             'appender.console.layout.pattern = [%d] %p %m (%c)%n',
             'rootLogger.level = INFO', 'rootLogger.appenderRef.stdout.ref = STDOUT']
    for i, (logger, level) in enumerate(quiet_loggers.items()):
        lines += [f'logger.q{i}.name = {logger}', f'logger.q{i}.level = {level}']
    path.write_text('\n'.join(lines) + '\n')
    return path


def write_properties(path: Path, props: dict[str, object], private: bool = False) -> Path:
    """A Java properties file; `private` (it holds a secret): readable by its owner only."""
    text = ''.join(f'{k}={v}\n' for k, v in props.items())
    if private:
        return secrets.write_private(path, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


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
