"""The local stack: PostgreSQL 15 (logical decoding), Redis, Kafka (KRaft, one node), Kafka Connect with Debezium's
Postgres connector, the BigQuery and GCS emulators, the REST API receiver and Prometheus, started from what
`make install` put under $ENGAGEMENT_HOME; one module per component beside this one.

    python -m launch.stack up|down|status|logs [component] [settings]

Everything binds to 127.0.0.1; data, logs and PID files live under the state directory. `up` on a running stack
is a no-op; `down` stops exactly the processes `up` recorded (by PID, checked against the process start time so a
recycled PID is never signalled) and keeps the data unless `--purge`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

from launch.stack import config as stack_config
from launch.stack.api_receiver import ApiReceiver
from launch.stack.bigquery import BigQuery, Storage
from launch.stack.component import Component, StackError
from launch.stack.config import ConfigError, StackConfig
from launch.stack.connect import Connect
from launch.stack.flink import cluster_components
from launch.stack.kafka import Kafka
from launch.stack.postgres import Postgres
from launch.stack.processes import ManagedProcess
from launch.stack.prometheus import Prometheus
from launch.stack.redis import Redis

COMPONENTS = ('postgres', 'redis', 'storage', 'bigquery', 'kafka', 'connect', 'api', 'prometheus')
OPTIONAL = {'flink': 'a Flink session cluster: Beam worker pool, JobManager, --flink-taskmanagers TaskManagers'}
COMPONENT_CLASSES = {'postgres': Postgres, 'redis': Redis, 'storage': Storage, 'bigquery': BigQuery, 'kafka': Kafka,
                     'connect': Connect, 'api': ApiReceiver, 'prometheus': Prometheus}


class Stack:
    def __init__(self, cfg: StackConfig, out=None, with_: tuple[str, ...] = ()):
        self.cfg = cfg
        self.out = out  # None: whatever sys.stdout is when a line is printed
        self.components = [COMPONENT_CLASSES[name](cfg) for name in COMPONENTS]
        # Optional parts: started by `up` when asked for (`with_`); stopped and shown whenever they run.
        started_tms = len(list((cfg.state_dir / 'pids').glob('flink-tm*.pid')))
        flink_cfg = cfg if started_tms <= cfg.flink_taskmanagers else dataclasses.replace(
            cfg, flink_taskmanagers=started_tms)
        cluster = cluster_components(flink_cfg)
        if 'flink' in with_:
            self.components += cluster_components(cfg)
        else:
            self.components += [c for c in cluster if c.running()]

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
        stack_config.record_authentication(self.cfg)
        to_start = [c for c in self.components if not c.running()]
        self.check_ports(to_start)
        for comp in self.components:
            if comp not in to_start:
                self._say(f'  {comp.name:<9} already running (pid {comp.proc.pid()})')
                continue
            t0 = time.monotonic()
            comp.start()
            ports = ''.join(f', port {p}' for p in comp.ports.values())
            self._say(f'  {comp.name:<9} up in {time.monotonic() - t0:4.1f} s  (pid {comp.proc.pid()}{ports})')
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
    parser.add_argument('command', choices=['up', 'down', 'status', 'logs', 'env'],
                        help='env: print the variables a client (the pipeline, the tools) reads this stack\'s '
                             'addresses and credentials from, as `export` lines: `eval "$(python -m launch.stack '
                             'env)"`. They name the secret files; no secret is printed.')
    parser.add_argument('component', nargs='?', help='logs: only this component (' + ', '.join(COMPONENTS)
                        + ', flink-workers, flink-jm, flink-tm1, ...)')
    parser.add_argument('--with', dest='with_', action='append', default=[], choices=sorted(OPTIONAL),
                        help='up, status: also ' + '; '.join(f'{k}: {v}' for k, v in OPTIONAL.items())
                             + ' (docs/runners.md, "Flink session cluster"). down stops them whenever they run.')
    parser.add_argument('--purge', action='store_true', help='down: also delete the state directory (all data)')
    parser.add_argument('--lines', type=int, default=40, help='logs: lines per component (default 40)')
    parser.add_argument('--follow', '-f', action='store_true', help='logs: keep following')
    stack_config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = stack_config.from_args(args)
        stack = Stack(cfg, with_=tuple(args.with_))
        if args.command == 'up':
            stack.up()
        elif args.command == 'down':
            stack.down(purge=args.purge)
        elif args.command == 'status':
            return 0 if stack.status() else 1
        elif args.command == 'env':
            variables = {**cfg.env(), **cfg.credentials_env()}
            variables.pop(stack_config.API_CLIENT_SECRET_ENV, None)  # a secret value, not a file name
            for name, value in sorted(variables.items()):
                print(f'export {name}={shlex.quote(value)}')
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
