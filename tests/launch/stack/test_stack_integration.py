"""The real stack, started through `launch.stack` as users start it: CDC from Postgres to Kafka loses nothing,
also when Kafka Connect is killed mid-stream; `up` is idempotent and `down` leaves nothing behind."""
from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time

import psycopg2
import pytest
from kafka import KafkaConsumer, TopicPartition

from launch.scenarios import generate
from launch.stack.processes import port_answers
from launch.stack.stack import Stack
from tests.conftest import private_config

pytestmark = pytest.mark.integration




def postgres_ids(cfg) -> set[int]:
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        cur.execute('SELECT id FROM engagement_events')
        return {r[0] for r in cur.fetchall()}


def read_topic(cfg, topic: str, until, timeout: float = 120.0) -> list:
    """Every record of `topic` from the beginning, read until `until(records)` holds (or the timeout)."""
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka_bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if until(records):
                break
        return records
    finally:
        consumer.close()


def event_ids(records) -> collections.Counter:
    return collections.Counter(json.loads(r.value)['after']['id'] for r in records if r.value)


def test_status_reports_every_component_healthy(stack, capsys):
    assert stack.status() is True
    out = capsys.readouterr().out
    for line in ('postgres  database', 'kafka     topic end offsets',
                 'connect   connector engagement-cdc task RUNNING'):
        assert line in out
    assert 'DOWN' not in out


def test_ten_thousand_inserted_rows_all_arrive_on_kafka(stack):
    cfg = stack.cfg
    before = postgres_ids(cfg)
    assert generate.main(['--rate', '5000', '--count', '10000', '--seed', '7', *cfg.cli_flags()]) == 0
    inserted = postgres_ids(cfg) - before
    assert len(inserted) == 10_000
    records = read_topic(cfg, cfg.events_topic, lambda rs: inserted <= set(event_ids(rs)))
    seen = event_ids(records)
    assert inserted - set(seen) == set(), 'ids inserted into Postgres but missing on Kafka'
    assert set(seen) - postgres_ids(cfg) == set(), 'ids on Kafka that Postgres does not have'
    partitions = {r.partition for r in records}
    assert partitions == set(range(cfg.kafka_partitions)), 'Debezium keys by id: every partition gets rows'


def test_content_update_arrives(stack):
    cfg = stack.cfg
    new_title = f'Renamed at {time.time():.0f}'
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE content SET title = %s WHERE slug = 'content-42' RETURNING id::text", (new_title,))
        content_id = cur.fetchone()[0]

    def has_update(records):
        return any(json.loads(r.value)['op'] == 'u' and json.loads(r.value)['after']['title'] == new_title
                   for r in records if r.value)

    records = read_topic(cfg, cfg.content_topic, has_update, timeout=30)
    updates = [json.loads(r.value) for r in records if r.value and json.loads(r.value)['op'] == 'u']
    assert [u['after']['id'] for u in updates if u['after']['title'] == new_title] == [content_id]
    assert len([r for r in records if r.value and json.loads(r.value)['op'] == 'r']) >= 600  # the snapshot


def test_connect_killed_mid_stream_loses_no_id(stack):
    cfg = stack.cfg
    before = postgres_ids(cfg)
    gen = threading.Thread(target=generate.main,
                           args=(['--rate', '2000', '--duration', '12', '--seed', '11', *cfg.cli_flags()],))
    gen.start()
    time.sleep(4)
    killed = stack.kill('connect')
    time.sleep(1)
    stack.start('connect')
    assert stack.component('connect').proc.pid() != killed
    gen.join(60)
    inserted = postgres_ids(cfg) - before
    assert len(inserted) > 10_000
    records = read_topic(cfg, cfg.events_topic, lambda rs: inserted <= set(event_ids(rs)), timeout=180)
    seen = event_ids(records)
    missing = inserted - set(seen)
    duplicates = sum(n - 1 for i, n in seen.items() if i in inserted and n > 1)
    print(f'Connect SIGKILL: {len(inserted)} rows inserted, {len(missing)} lost, {duplicates} duplicates')
    assert missing == set()


def test_up_is_idempotent_and_down_leaves_nothing_behind():
    cfg = private_config(kafka_partitions=1)
    stack = Stack(cfg)
    try:
        stack.up()
        pids = {c.name: c.proc.pid() for c in stack.components}
        assert all(pids.values())
        started = time.monotonic()
        stack.up()
        assert time.monotonic() - started < 5
        assert {c.name: c.proc.pid() for c in stack.components} == pids

        status = subprocess.run([sys.executable, '-m', 'launch.stack', 'status', *cfg.cli_flags()],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr

        stack.down()
        for name, pid in pids.items():
            assert not _alive(pid), f'{name} (pid {pid}) still running after down'
        ports = (cfg.pg_port, cfg.redis_port, cfg.kafka_port, cfg.kafka_controller_port, cfg.connect_port)
        assert [p for p in ports if port_answers(p)] == []
        status = subprocess.run([sys.executable, '-m', 'launch.stack', 'status', *cfg.cli_flags()],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 1 and 'stack NOT healthy' in status.stdout

        assert (cfg.state_dir / 'postgres' / 'data' / 'PG_VERSION').exists(), 'down keeps the data'
        stack.up()
        with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
            cur.execute('SELECT count(*) FROM content')
            assert cur.fetchone()[0] == 600
    finally:
        stack.down(purge=True)
    assert not cfg.state_dir.exists()


def _alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(') ')[1][0] != 'Z'
    except OSError:
        return False
