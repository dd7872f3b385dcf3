"""Shared fixtures. Integration tests start the real stack through the same code users run (`launch.stack`), on
free ports and in a private state directory, so they never touch a stack a developer has running."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from launch import config as stack_config
from launch.stack import Stack


def free_ports(n: int) -> list[int]:
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


def private_config(**overrides) -> stack_config.StackConfig:
    """A stack configuration on free ports with a fresh state directory that the `postgres` user can reach."""
    state = Path(tempfile.mkdtemp(prefix='engagement-test-', dir='/var/tmp'))
    os.chmod(state, 0o755)
    pg, redis, kafka, controller, connect, api, bq, gcs = free_ports(8)
    values = dict(state_dir=str(state), pg_port=pg, redis_port=redis, kafka_port=kafka,
                  kafka_controller_port=controller, connect_port=connect, api_port=api, bq_port=bq,
                  gcs_port=gcs)
    values.update(overrides)
    return stack_config.load(values)


@contextlib.contextmanager
def private_stack(**overrides):
    """A whole stack on free ports in a fresh state directory, stopped and purged on exit."""
    s = Stack(private_config(**overrides))
    try:
        s.up()
        yield s
    finally:
        s.down(purge=True)


@pytest.fixture(scope='session')
def stack():
    """The whole local stack (Postgres, Redis, Kafka, Connect + Debezium), up for the test session."""
    with private_stack() as s:
        yield s


@pytest.fixture
def stack_config_tmp():
    cfg = private_config()
    yield cfg
    shutil.rmtree(cfg.state_dir, ignore_errors=True)


@pytest.fixture(scope='session')
def redis_only():
    """Just a Redis server of the stack (for sink tests that need nothing else); yields its StackConfig."""
    from launch.stack import Redis
    cfg = private_config()
    server = Redis(cfg)
    try:
        server.start()
        yield cfg
    finally:
        server.stop()
        shutil.rmtree(cfg.state_dir, ignore_errors=True)
