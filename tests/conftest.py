"""Shared fixtures. Integration tests start the real stack through the same code users run (`launch.stack`), on
free ports and in a private state directory, so they never touch a stack a developer has running."""
from __future__ import annotations

import contextlib
import itertools
import shutil

import pytest

from launch.stack import config as stack_config
from launch.stack.stack import Stack

free_ports = stack_config.free_ports
private_config = stack_config.private_config


@contextlib.contextmanager
def private_stack(with_: tuple[str, ...] = (), **overrides):
    """A whole stack on free ports in a fresh state directory (with the optional parts named in `with_`), stopped
    and purged on exit."""
    s = Stack(private_config(**overrides), with_=with_)
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
    from launch.stack.redis import Redis
    cfg = private_config()
    server = Redis(cfg)
    try:
        server.start()
        yield cfg
    finally:
        server.stop()
        shutil.rmtree(cfg.state_dir, ignore_errors=True)


@pytest.fixture(scope='session')
def bigquery_emulators():
    """Only the Storage and BigQuery emulator components of a private stack; yields its StackConfig."""
    from launch.stack.bigquery import BigQuery, Storage
    cfg = private_config()
    started = []
    try:
        for component in (Storage(cfg), BigQuery(cfg)):
            component.start()
            started.append(component)
        yield cfg
    finally:
        for component in reversed(started):
            component.stop()
        shutil.rmtree(cfg.state_dir, ignore_errors=True)


_DATASETS = itertools.count(1)


def new_dataset_name() -> str:
    return f'test_{next(_DATASETS)}'


@pytest.fixture
def bigquery_dataset(bigquery_emulators):
    """A fresh dataset with the tables and views (ensure_tables) in the emulator, so tests do not see each other's
    rows."""
    from connectors.bigquery.tables import ensure_tables
    name = new_dataset_name()
    ensure_tables(bigquery_emulators.bq_project, name, bigquery_emulators.bq_endpoint)
    return name


@pytest.fixture(scope='module')
def receiver():
    """The local REST API receiver (`launch.standins.api_receiver`) on a free port, client secret
    `tests.api_support.RECEIVER_SECRET`, for the tests of one module."""
    from tests.api_support import RECEIVER_SECRET, ReceiverProcess
    with ReceiverProcess(secret=RECEIVER_SECRET) as r:
        yield r


@pytest.fixture
def fresh(receiver):
    """The module's receiver with no stored events and no faults."""
    receiver.call('POST', '/admin/reset', {})
    receiver.set_faults()
    yield receiver
    receiver.set_faults()
