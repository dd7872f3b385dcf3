"""Shared fixtures. Integration tests start the real stack through the same code users run (`launch.stack`), on
free ports and in a private state directory, so they never touch a stack a developer has running."""
from __future__ import annotations

import contextlib
import shutil

import pytest

from launch import config as stack_config
from launch.stack import Stack

free_ports = stack_config.free_ports
private_config = stack_config.private_config


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
