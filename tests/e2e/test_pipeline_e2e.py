"""End to end on the real stack, DirectRunner (Prism), streaming: Redis must equal what SQL computes from
Postgres, exactly, after a `kill -9` of the pipeline and a SIGKILL of Kafka Connect mid-run; every bad record
sent to the raw topic must be in the dead-letter topic with its reason.

Runs `python -m pipelines.engagement` as a user would (a subprocess, flags for the private stack)."""
from __future__ import annotations

import collections
import json
import threading
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from launch import generate, verify
from tests.e2e.conftest import Pipeline

pytestmark = pytest.mark.integration

CAUGHT_UP_TIMEOUT_S = 600


def read_dead_letters(cfg) -> list[dict]:
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka_bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(cfg.dead_letter_topic, p)
                 for p in sorted(consumer.partitions_for_topic(cfg.dead_letter_topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out = []
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(json.loads(r.value) for r in batch)
        return out
    finally:
        consumer.close()


def wait_exact(cfg, pipeline: Pipeline, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    diffs = ['not checked']
    while time.monotonic() < deadline:
        assert pipeline.alive(), f'pipeline exited; see {pipeline.log}'
        diffs = verify.verify(cfg, 60, 'engagement')
        if not diffs:
            return []
        time.sleep(3)
    return diffs


def test_redis_equals_sql_after_pipeline_and_connect_crashes(e2e_stack):
    cfg = e2e_stack.cfg
    pipeline = Pipeline(cfg)
    summary_file = cfg.state_dir / 'direct.json'
    try:
        pipeline.start()
        inserts = threading.Thread(target=generate.main, args=(
            ['--rate', '110', '--duration', '190', '--seed', '21', '--late-share', '0.03', *cfg.cli_flags()],))
        bad = threading.Thread(target=generate.main, args=(
            ['--direct', '--rate', '4', '--count', '400', '--bad-share', '1', '--seed', '5',
             '--summary', str(summary_file), *cfg.cli_flags()],))
        inserts.start()
        bad.start()
        time.sleep(70)
        pipeline.kill9()
        time.sleep(2)
        pipeline.start()
        time.sleep(40)
        e2e_stack.kill('connect')
        time.sleep(1)
        e2e_stack.start('connect')
        inserts.join()
        bad.join()

        diffs = wait_exact(cfg, pipeline, CAUGHT_UP_TIMEOUT_S)
        truth = verify.ground_truth(cfg.pg_dsn, 60, 0)
        assert sum(r['events'] for r in truth.values()) >= 20_000
        assert diffs == [], f'{len(diffs)} differences between Redis and SQL, e.g. {diffs[:5]}'

        sent = json.loads(summary_file.read_text())
        assert sent['counts']['valid'] == 0 and sent['total'] == 400
        deadline = time.monotonic() + 60
        while True:
            letters = [d for d in read_dead_letters(cfg) if d.get('source_topic') == cfg.raw_topic]
            by_offset = {(d['source_partition'], d['source_offset']): d for d in letters}
            if len(by_offset) >= sent['total'] or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert len(by_offset) == sent['total'], 'every bad record is in the dead letters exactly by offset'
        got = collections.defaultdict(set)
        for d in by_offset.values():
            assert d['stage'] in ('parse', 'enrich') and d['payload'] and d['error']
            got[d['reason']].add(d['event_id'])
        for kind, ids in sent['bad_ids'].items():
            assert got[kind] == set(ids), f'dead letters with reason {kind} differ from what was sent'
    finally:
        pipeline.stop()
