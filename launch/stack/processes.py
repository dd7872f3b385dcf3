"""The processes the stack (and the commands and tests that start children) own: each one's PID is recorded with its
start time from /proc, so that a PID the kernel has given to another program since is never signalled.

The process tree below a PID comes from the shipped `pipelines.processes.descendants`; this module adds what only
the local tooling needs: PID files, stopping a whole tree, resident memory and port probes.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from launch.stack.config import StackConfig
from pipelines.processes import descendants


def proc_start_time(pid: int) -> str | None:
    """The start time of `pid` (clock ticks since boot, as /proc says it), or None when it is gone or a zombie."""
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
        if rec and proc_start_time(rec[0]) == rec[1]:
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
            started = proc_start_time(proc.pid)
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
        if proc_start_time(pid) is not None:
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
