"""connectors.kafka.ReadFromKafka in streaming pipelines on Prism against the real stack: every partition is read,
a restart resumes from the committed offsets without a gap, and the watermark waits for the slowest partition.

A streaming pipeline with an unbounded source never ends: each test runs it with `run()`, watches what it wrote to
the stack's Redis, then cancels it and stops the Prism process it started (by PID; STACK-NOTES pitfall 7).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import apache_beam as beam
import psycopg2
import pytest
import redis
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms import window
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

from connectors.kafka import KafkaRecord, ReadFromKafka, committed_positions
from connectors.kafka.offsets import PlanRead
from launch.scenarios import generate
from pipelines.runners import select_runner, stop_job_server_children

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 90


# ---------------------------------------------------------------------------------------------------------------
# Running a streaming pipeline for a while

def _prism_children() -> set[int]:
    """PIDs of Prism processes started by this (pytest) process."""
    pids = set()
    for children in Path('/proc/self/task').glob('*/children'):
        for pid in children.read_text().split():
            try:
                argv0 = Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0')[0]
            except OSError:
                continue
            if b'prism' in os.path.basename(argv0):
                pids.add(int(pid))
    return pids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return False
    return stat[stat.rindex(')') + 2] != 'Z'


def _stop(pid: int, timeout: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _alive(pid):
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def streaming_pipeline(runner: str = 'prism') -> beam.Pipeline:
    """On Prism: PrismRunner rather than DirectRunner, as the DirectRunner would silently fall back to the
    FnApiRunner, which emits streaming output only at the end; a job server per pipeline, so that each test can stop
    its own. On 'flink': embedded Flink with parallelism 2, presets as the pipeline's."""
    if runner == 'flink':
        options = PipelineOptions(['--streaming', '--runner=FlinkRunner', '--flink_master=[local]',
                                   '--parallelism=2'])
        return beam.Pipeline(runner=select_runner(options), options=options)
    return beam.Pipeline(options=PipelineOptions(
        ['--streaming', '--experiments=disable_prism_server_singleton'], runner='PrismRunner'))


class Run:
    def __init__(self, result):
        self.result = result

    def wait_for(self, condition, what: str, timeout: float = RUN_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            state = self.result.state
            if PipelineState.is_terminal(state):
                pytest.fail(f'the pipeline ended in state {state} while waiting for {what}')
            if time.monotonic() > deadline:
                pytest.fail(f'timed out after {timeout:.0f} s waiting for {what}')
            time.sleep(0.25)


@contextlib.contextmanager
def running(pipeline: beam.Pipeline):
    before = _prism_children()
    result = pipeline.run()
    try:
        yield Run(result)
    finally:
        try:
            result.cancel()
            result.wait_until_finish(duration=30_000)
        except Exception:  # a cancelled job reports itself as failed in state CANCELLED
            pass
        stop_job_server_children(pipeline.options)  # Flink's job server, if this pipeline ran on it
        started = _prism_children() - before
        for pid in started:
            _stop(pid)
        assert not any(_alive(pid) for pid in started), f'Prism still running: {started}'


# ---------------------------------------------------------------------------------------------------------------
# What the pipelines write to Redis

class RecordToRedis(beam.DoFn):
    """Per bundle: SADD the CDC event ids and the 'partition:offset' of every record, INCRBY the records read."""

    def __init__(self, url: str, key: str):
        self._url, self._key = url, key

    def setup(self):
        self._redis = redis.Redis.from_url(self._url)

    def start_bundle(self):
        self._ids, self._offsets = [], []

    def process(self, record: KafkaRecord):
        self._offsets.append(f'{record.partition}:{record.offset}')
        after = json.loads(record.value).get('after') if record.value else None
        if after:
            self._ids.append(after['id'])

    def finish_bundle(self):
        if not self._offsets:
            return
        pipe = self._redis.pipeline()
        if self._ids:
            pipe.sadd(f'{self._key}:ids', *self._ids)
        pipe.sadd(f'{self._key}:offsets', *self._offsets)
        pipe.incrby(f'{self._key}:reads', len(self._offsets))
        pipe.execute()

    def teardown(self):
        self._redis.close()


class Readout:
    def __init__(self, cfg, key: str):
        self.redis, self.key = redis.Redis.from_url(cfg.redis_url), key

    def ids(self) -> set[int]:
        return {int(i) for i in self.redis.smembers(f'{self.key}:ids')}

    def id_count(self) -> int:
        return self.redis.scard(f'{self.key}:ids')

    def offsets(self) -> dict[int, set[int]]:
        out: dict[int, set[int]] = {}
        for member in self.redis.smembers(f'{self.key}:offsets'):
            partition, offset = member.decode().split(':')
            out.setdefault(int(partition), set()).add(int(offset))
        return out

    def offset_count(self) -> int:
        return self.redis.scard(f'{self.key}:offsets')

    def reads(self) -> int:
        return int(self.redis.get(f'{self.key}:reads') or 0)


# ---------------------------------------------------------------------------------------------------------------
# Stack helpers



def postgres_ids(cfg) -> set[int]:
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        cur.execute('SELECT id FROM engagement_events')
        return {r[0] for r in cur.fetchall()}


def end_offsets(cfg, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka_bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def unique(name: str) -> str:
    return f'{name}-{uuid.uuid4().hex[:8]}'


def read_events(cfg, group: str, sink_key: str, start_offset: str, splits: int = 1) -> beam.Pipeline:
    pipeline = streaming_pipeline()
    (pipeline
     | 'Read' >> ReadFromKafka({'bootstrap_servers': cfg.kafka_bootstrap}, [cfg.events_topic], group_id=group,
                               start_offset=start_offset, splits=splits)
     | 'ToRedis' >> beam.ParDo(RecordToRedis(cfg.redis_url, sink_key)))
    return pipeline


# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('splits', [1, 2], ids=['one-element', 'two-partition-groups'])
def test_reads_every_partition_once(stack, splits):
    cfg = stack.cfg
    assert generate.main(['--rate', '5000', '--count', '10000', '--seed', '11', *cfg.cli_flags()]) == 0
    expected = postgres_ids(cfg)
    out = Readout(cfg, unique('read-all'))
    with running(read_events(cfg, unique('read-all'), out.key, 'earliest', splits)) as run:
        run.wait_for(lambda: out.id_count() >= len(expected), f'{len(expected):,} event ids')
        # Every id is in: Debezium has delivered; now every record of the topic must arrive, once.
        ends = end_offsets(cfg, cfg.events_topic)
        run.wait_for(lambda: out.offset_count() >= sum(ends.values()), f'{sum(ends.values()):,} records')
        time.sleep(1.0)  # a duplicate, if the reader emitted one, would land now
    assert out.ids() == expected
    offsets = out.offsets()
    assert {p: len(o) for p, o in offsets.items()} == ends, 'records per partition'
    assert all(o == set(range(ends[p])) for p, o in offsets.items()), 'every offset of every partition'
    assert out.reads() == sum(ends.values()), 'each record emitted exactly once'


def test_restart_resumes_from_committed_offsets_without_gap(stack):
    cfg = stack.cfg
    group = unique('resume')
    first, second = Readout(cfg, unique('resume-1')), Readout(cfg, unique('resume-2'))
    before = postgres_ids(cfg)
    producer = threading.Thread(target=generate.main, args=(
        ['--rate', '2500', '--count', '10000', '--seed', '12', *cfg.cli_flags()],))
    with running(read_events(cfg, group, first.key, 'committed')) as run:
        run.wait_for(lambda: first.id_count() >= len(before), 'the history of the topic')
        producer.start()
        run.wait_for(lambda: len(first.ids() - before) >= 2000, 'the first 2,000 new events')
    producer.join(timeout=60)
    assert not producer.is_alive()
    expected = postgres_ids(cfg)
    assert len(expected - first.ids()) > 0, 'the first run was stopped mid-stream'

    committed = committed_positions({'bootstrap_servers': cfg.kafka_bootstrap}, group, [cfg.events_topic])
    assert set(committed) == {(cfg.events_topic, p) for p in range(cfg.kafka_partitions)}
    assert all(mark is not None for _, mark in committed.values()), 'commits carry the partition watermark'
    with running(read_events(cfg, group, second.key, 'committed')) as run:
        run.wait_for(lambda: first.ids() | second.ids() >= expected, 'every id over both runs')
        ends = end_offsets(cfg, cfg.events_topic)
        resumed_at = {partition: offset for (_, partition), (offset, _) in committed.items()}
        run.wait_for(lambda: second.offset_count() >= sum(ends[p] - resumed_at[p] for p in ends),
                     'the second run to reach the end of every partition')

    assert first.ids() | second.ids() == expected
    read_first, read_second = first.offsets(), second.offsets()
    for partition, offset in resumed_at.items():
        assert offset <= max(read_first[partition]) + 1, 'nothing committed beyond what the first run emitted'
        assert read_second.get(partition, set()) == set(range(offset, ends[partition])), \
            f'partition {partition}: the second run reads from its committed offset on'
        assert read_first[partition] | read_second.get(partition, set()) == set(range(ends[partition])), \
            f'partition {partition}: no gap over both runs'


def test_start_offsets_follow_commits_and_start_timestamp(stack):
    """The plan the reader starts from: committed offsets (earliest where the group never committed), earliest,
    latest, and with start_timestamp_ms the earlier of that and the first record at or after the timestamp."""
    cfg = stack.cfg
    topic = create_topic(cfg, unique('reader-plan'), 3)
    t0 = (int(time.time()) - 3600) * 1000
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks='all')
    for partition in range(3):
        for i in range(10):
            producer.send(topic, value=b'v', partition=partition, timestamp_ms=t0 + i * 1000)
    producer.flush()
    producer.close()
    group = unique('reader-plan')
    committer = KafkaConsumer(bootstrap_servers=cfg.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    try:
        committer.commit({TopicPartition(topic, 0): OffsetAndMetadata(8, json.dumps({'watermark_ms': t0 + 7000}), -1),
                          TopicPartition(topic, 1): OffsetAndMetadata(3, '', -1)})
    finally:
        committer.close()
    config = {'bootstrap_servers': cfg.kafka_bootstrap}

    def plan(start_offset, start_timestamp_ms=None) -> list[int]:
        (planned,) = PlanRead(config, [topic], group, start_offset, start_timestamp_ms).process(None)
        assert planned.partitions == tuple((topic, p) for p in range(3))
        return list(planned.start_offsets)

    assert plan('committed') == [8, 3, 0]
    assert plan('committed', t0 + 5000) == [5, 3, 0]
    assert plan('earliest') == [0, 0, 0]
    assert plan('latest') == [10, 10, 10]
    assert plan('latest', t0 + 5000) == [5, 5, 5]
    assert plan('latest', t0 + 60_000) == [10, 10, 10], 'no record at or after the timestamp: nothing to replay'
    assert committed_positions(config, group, [topic]) == {(topic, 0): (8, t0 + 7000), (topic, 1): (3, None)}


class WindowCountToRedis(beam.DoFn):
    """HSET <key> <window start> <count>: the last pane of a window wins (absolute values, replays are harmless)."""

    def __init__(self, url: str, key: str):
        self._url, self._key = url, key

    def setup(self):
        self._redis = redis.Redis.from_url(self._url)

    def process(self, count: int, win=beam.DoFn.WindowParam):
        self._redis.hset(self._key, str(int(win.start)), count)

    def teardown(self):
        self._redis.close()


def create_topic(cfg, name: str, partitions: int) -> str:
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


@pytest.mark.parametrize('runner, splits', [('prism', 1), ('flink', 2)],
                         ids=['prism-one-element', 'flink-two-partition-groups'])
def test_watermark_waits_for_the_slowest_partition(stack, runner, splits):
    """Partitions 0 and 1 hold a minute of events and are read at once; partition 2 holds the same minute in many
    large records, read a few per bundle; partition 3 stays empty. Windows are counted with zero allowed lateness:
    were the watermark taken from the fast partitions (or wall clock once they are caught up), partition 2's records
    would arrive behind it and be dropped as late, and the window counts would fall short (measured: 10-20 of 270
    with max instead of min). Were the empty partition to hold the watermark, no window would ever fire.
    With two partition groups on embedded Flink (parallelism 2), the slow partition (2, with 0) and the empty one
    (3, with 1) are in different elements: the runner's watermark must be the minimum over the elements. (Prism
    2.77 keeps one estimate per stage, from the bundle that ran last: there, 60 of 270 records in a window were
    dropped, and the pipeline refuses --kafka_read_splits > 1.)"""
    cfg = stack.cfg
    topic = create_topic(cfg, unique('reader-watermark'), 4)
    window_s, minute_ms = 10, 60_000
    base_ms = (int(time.time()) - 600) // window_s * window_s * 1000
    expected: dict[str, int] = {}
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks='all', linger_ms=5)
    sends = [(p, base_ms + s * 1000, b'x' * 100) for p in (0, 1) for s in range(60)]
    slow_records = 1500
    sends += [(2, base_ms + i * minute_ms // slow_records, b'y' * 2000) for i in range(slow_records)]
    for partition, ts, value in sends:
        producer.send(topic, value=value, partition=partition, timestamp_ms=ts)
        start = str((ts // 1000) // window_s * window_s)
        expected[start] = expected.get(start, 0) + 1
    producer.flush()
    producer.close()

    key = unique('reader-watermark-counts')
    counts = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
    pipeline = streaming_pipeline(runner)
    (pipeline
     | 'Read' >> ReadFromKafka({'bootstrap_servers': cfg.kafka_bootstrap, 'max_partition_fetch_bytes': 64 * 1024},
                               [topic], start_offset='earliest', commit_offsets=False, max_bundle_records=100,
                               splits=splits)
     | 'Window' >> beam.WindowInto(window.FixedWindows(window_s), allowed_lateness=0)
     | 'One' >> beam.Map(lambda record: 1)
     | 'Count' >> beam.CombineGlobally(sum).without_defaults()
     | 'ToRedis' >> beam.ParDo(WindowCountToRedis(cfg.redis_url, key)))
    total = sum(expected.values())

    def window_counts() -> dict[str, int]:
        return {k: int(v) for k, v in counts.hgetall(key).items()}

    with running(pipeline) as run:
        # Once every window has fired, the watermark has passed them all; a record dropped as late never comes back.
        run.wait_for(lambda: set(window_counts()) >= set(expected), 'every window to fire')
        deadline = time.monotonic() + 10
        while sum(window_counts().values()) < total and time.monotonic() < deadline:
            time.sleep(0.25)
    assert window_counts() == expected
