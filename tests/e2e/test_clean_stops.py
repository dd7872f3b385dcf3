"""`make demo` on each local runner: every listener of every process it started is on the loopback interface, and
Ctrl-C, SIGHUP (a closed terminal) and SIGTERM stop everything it started, also when its output pipe closed
first (`make demo | tee demo.log`, then Ctrl-C: tee dies with the same signal)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from launch.stack.config import private_config
from launch.stack.processes import proc_start_time
from launch.stack.stack import Stack
from pipelines.processes import descendants
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.integration

LOOPBACK = re.compile(r'^(127\.\d+\.\d+\.\d+|\[::1\]|\[::ffff:127\.\d+\.\d+\.\d+\]):\d+$')


def listeners() -> list[tuple[str, int]]:
    """(local address, pid) of every listening TCP socket, from `ss -ltnp`."""
    out = subprocess.run(['ss', '-ltnpH'], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        for pid in re.findall(r'pid=(\d+)', line):
            found.append((fields[3], int(pid)))
    return found


def default_terminal_signals() -> None:
    """As in a terminal: SIGHUP and SIGINT at their default actions, also when the tests run under `nohup` (which
    ignores SIGHUP, and the ignored disposition is inherited: tee then outlived the 'closed terminal')."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Demo:
    """`python -m launch.scenarios.demo` in a process group of its own (as a terminal's foreground job), its
    output piped into `tee`, on a private stack."""

    def __init__(self, runner: str):
        self.cfg = private_config()
        self.log = self.cfg.state_dir / 'demo-output.log'
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'launch.scenarios.demo', f'--runner={runner}', '--rate', '100', '--bad-rate', '1'],
            env={**os.environ, **self.cfg.env()}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=default_terminal_signals)
        self.tee = subprocess.Popen(['tee', str(self.log)], stdin=self.proc.stdout, stdout=subprocess.DEVNULL,
                                    preexec_fn=default_terminal_signals)
        self.proc.stdout.close()

    def terminal_signal(self, sig: int) -> None:
        """What a terminal does on Ctrl-C or when it closes: `sig` to every process of the foreground job, tee
        first (the demo's group and tee's are apart here only because setpgid cannot join another session)."""
        self.tee.send_signal(sig)
        self.tee.wait(10)
        os.killpg(self.proc.pid, sig)

    def output(self) -> str:
        return self.log.read_text(errors='replace') if self.log.exists() else ''

    def diagnosis(self) -> str:
        """The demo's output and the end of every component's log."""
        logs = sorted((self.cfg.state_dir / 'logs').glob('*.log'))
        tails = [f'--- {log.name}:\n' + log.read_text(errors='replace')[-1500:] for log in logs]
        return '\n'.join([f'--- demo output:\n{self.output()[-3000:]}', *tails])

    def wait_counting(self, timeout: float) -> None:
        """Until the live view shows events counted into Redis."""
        def counting():
            assert self.proc.poll() is None, f'the demo exited early ({self.proc.returncode}):\n{self.diagnosis()}'
            return re.search(r'counted +[1-9][\d,]* ev/s', self.output())
        assert wait_for(counting, timeout), f'no events counted within {timeout:.0f} s:\n{self.output()[-3000:]}'

    def processes(self) -> dict[int, str]:
        """pid -> command of the demo, everything below it and every stack component (some daemonise)."""
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        pids += [c.proc.pid() for c in Stack(self.cfg).components if c.proc.pid() is not None]
        found = {}
        for pid in pids:
            try:
                found[pid] = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\0', b' ').decode()[:160]
            except OSError:
                pass
        return found

    def cleanup(self) -> None:
        """Whatever a failed test left: stopped by PID."""
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        Stack(self.cfg).down(purge=True)
        self.tee.kill()


def assert_all_stopped(demo: Demo, before: dict[int, str], timeout: float = 120) -> None:
    try:
        rc = demo.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f'the demo did not exit within {timeout:.0f} s of the signal:\n{demo.output()[-3000:]}')
    assert rc == 0, demo.output()[-3000:]
    def alive():
        return {pid: cmd for pid, cmd in before.items() if proc_start_time(pid) is not None}
    wait_for(lambda: not alive(), 15, 0.5)
    assert not alive(), f'left running after the demo exited: {alive()}'
    running = [c.name for c in Stack(demo.cfg).components if c.running()]
    assert not running, f'stack components left running: {running}'


def assert_loopback_only(demo: Demo) -> int:
    ours = demo.processes()
    mine = [(address, pid) for address, pid in listeners() if pid in ours]
    outside = [(address, ours[pid]) for address, pid in mine if not LOOPBACK.match(address)]
    assert not outside, f'listening beyond loopback: {outside}'
    return len(mine)


@pytest.mark.parametrize('runner, stop', [
    ('DirectRunner', 'ctrl-c with tee'),
    ('FlinkRunner', 'closed terminal'),
    ('DirectRunner', 'sigterm'),
    ('flink-cluster', 'sigterm'),
])
def test_the_demo_listens_on_loopback_only_and_stops_everything_it_started(runner, stop):
    demo = Demo(runner)
    try:
        demo.wait_counting(150 if runner == 'DirectRunner' else 240)
        listening = assert_loopback_only(demo)
        # the stack (postgres, redis, kafka x2, connect, api, bigquery, storage, prometheus), the pipeline's
        # metrics and its runner's ports, the monitor
        assert listening >= 12, listening
        before = demo.processes()
        if stop == 'ctrl-c with tee':
            demo.terminal_signal(signal.SIGINT)
        elif stop == 'closed terminal':
            demo.terminal_signal(signal.SIGHUP)
        else:
            demo.proc.send_signal(signal.SIGTERM)
        assert_all_stopped(demo, before)
        if stop == 'sigterm':  # its output still open: the cleanup said what it stopped
            assert re.search(r'pipeline +stopped', demo.output()) and re.search(r'postgres +stopped', demo.output())
    finally:
        demo.cleanup()
