"""`ReadFromKafkaXlang`: Beam's cross-language `apache_beam.io.kafka.ReadFromKafka` (Java KafkaIO) emitting the same
`KafkaRecord`s as our own reader: the pipeline's `--kafka_reader=xlang`.

    with LocalExpansionService(launcher_jar) as service:          # or an existing service's 'host:port'
        records = p | ReadFromKafkaXlang({'bootstrap_servers': '127.0.0.1:19092'}, ['engagement.raw_events'],
                                         group_id='engagement-pipeline', expansion_service=service.address)

KafkaIO's own offset commits need stable input, which Prism refuses, so a Python DoFn right after the read commits
in bundle finalization, with the watermark as metadata in the format our reader writes, and the start position
is set by committing before the pipeline starts (`set_start_positions`). Each record's `watermark_ms` is its own
timestamp, an upper bound of the downstream watermark, so the too-late routing stays conservative. Details and
why: docs/runners.md, "The cross-language Kafka reader".
"""
from __future__ import annotations

import json
import threading

import apache_beam as beam
from apache_beam.io.kafka import ReadFromKafka as BeamReadFromKafka
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from connectors import metrics
from connectors.credentials import java_client_properties
from connectors.kafka.client import (
    COMMIT_TIMEOUT_MS,
    check_consumer_config,
    check_read_arguments,
    consumer_for,
    log_event,
)
from connectors.kafka.offsets import PlanRead, committed_positions
from connectors.kafka.records import KafkaRecord


def java_consumer_config(consumer_config: dict, group_id: str | None) -> dict[str, str]:
    """kafka-python settings -> the Java consumer properties KafkaIO takes (secrets included: never log it).
    SASL PLAIN/SCRAM become `sasl.jaas.config`; a PEM `ssl_cafile` becomes a PEM trust store."""
    config = dict(consumer_config)
    java = {'auto.offset.reset': 'earliest', 'enable.auto.commit': 'false'}
    if group_id:
        java['group.id'] = group_id
    java.update(java_client_properties(config))
    if config:
        raise ValueError(f'ReadFromKafkaXlang: no Java equivalent known for {", ".join(sorted(config))}')
    return java


def set_start_positions(consumer_config: dict, topics: list[str], group_id: str, start_offset: str,
                        start_timestamp_ms: int | None) -> dict:
    """Commit, for `group_id`, the offset each partition of `topics` must start from, chosen as
    `connectors.kafka.ReadFromKafka` chooses it; the Java reader starts at the committed offsets. Keeps each
    partition's committed watermark. Returns {(topic, partition): offset}. Driver side, before the pipeline runs."""
    config = check_consumer_config(consumer_config)
    previous = committed_positions(config, group_id, topics)
    plan = next(iter(PlanRead(config, topics, group_id, start_offset, start_timestamp_ms).process(None)))
    offsets = {}
    for (topic, partition), offset in zip(plan.partitions, plan.start_offsets):
        watermark = previous.get((topic, partition), (None, None))[1]
        offsets[TopicPartition(topic, partition)] = OffsetAndMetadata(
            offset, json.dumps({'watermark_ms': watermark}) if watermark is not None else '', -1)
    consumer = consumer_for(config, group_id)
    try:
        consumer.commit(offsets=offsets, timeout_ms=COMMIT_TIMEOUT_MS)
    finally:
        consumer.close()
    start = {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}
    log_event('kafka_xlang_start_positions_committed', group_id=group_id, start_offset=start_offset,
         start_timestamp_ms=start_timestamp_ms, start={f'{t}/{p}': o for (t, p), o in start.items()})
    return start


# (group_id, TopicPartition) -> offset committed last by this process. Per process, not per DoFn instance: a runner
# runs several instances of the stage at once, and a bundle of one may be finalized after a later bundle of another.
_committed_offsets: dict = {}
_committed_lock = threading.Lock()


class _ToKafkaRecord(beam.DoFn):
    """KafkaIO's metadata Row -> `KafkaRecord` (watermark_ms = the record timestamp, see the module docstring);
    commits the offsets of each bundle in its finalization."""

    def __init__(self, consumer_config: dict, group_id: str | None, commit_offsets: bool, max_delay_ms: int):
        self._config, self._group_id = consumer_config, group_id
        self._commit_offsets, self._max_delay_ms = commit_offsets, max_delay_ms

    def setup(self):
        self._committer = None
        self._lock = threading.Lock()
        self._newest = {}        # TopicPartition -> newest record timestamp seen by this instance
        self._torn_down = False

    def start_bundle(self):
        self._bundle = {}        # TopicPartition -> next offset
        self._registered = False

    def process(self, row, finalizer=beam.DoFn.BundleFinalizerParam):
        if not self._registered:
            bundle = self._bundle
            finalizer.register(lambda: self._commit(bundle))
            self._registered = True
        key, value, ts = row.key, row.value, row.timestamp
        tp = TopicPartition(row.topic, row.partition)
        if row.offset + 1 > self._bundle.get(tp, -1):
            self._bundle[tp] = row.offset + 1
        if ts > self._newest.get(tp, -1):
            self._newest[tp] = ts
        metrics.RECORDS_READ.inc(1, topic=row.topic, partition=row.partition)
        metrics.BYTES_READ.inc(len(key or b'') + len(value or b''), topic=row.topic, partition=row.partition)
        yield KafkaRecord(row.topic, row.partition, row.offset, key, value, ts, ts)

    def teardown(self):
        with self._lock:
            self._torn_down = True
            if self._committer is not None:
                self._committer.close(autocommit=False)
                self._committer = None

    def _commit(self, bundle: dict) -> None:
        """Bundle finalization: the runner holds this bundle's output durably; commit where it ended."""
        if not (self._commit_offsets and bundle):
            return
        with self._lock, _committed_lock:
            if self._torn_down:
                return
            offsets = {tp: OffsetAndMetadata(offset, json.dumps(
                           {'watermark_ms': self._newest[tp] - self._max_delay_ms}), -1)
                       for tp, offset in bundle.items()
                       if offset > _committed_offsets.get((self._group_id, tp), -1)}
            if not offsets:
                return  # an older bundle finalized late
            if self._committer is None:
                self._committer = consumer_for(self._config, self._group_id)
            # Bounded: kafka-python's commit otherwise retries forever while the broker is away. A failed commit
            # is logged by Beam; the next bundle commits.
            self._committer.commit(offsets=offsets, timeout_ms=COMMIT_TIMEOUT_MS)
            for tp, committed in offsets.items():
                _committed_offsets[(self._group_id, tp)] = committed.offset


class ReadFromKafkaXlang(beam.PTransform):
    """Unbounded read of `topics` with Java KafkaIO, as `KafkaRecord`s timestamped with the record timestamp.

    Args:
      consumer_config: kafka-python settings, as for `connectors.kafka.ReadFromKafka` (translated for Java by
        `java_consumer_config`).
      topics: topic names; all their partitions are read.
      group_id: consumer group whose committed offsets the read starts from and that offsets are committed for.
      start_offset: 'committed', 'earliest' or 'latest' (see `set_start_positions`).
      start_timestamp_ms: start each partition no later than its first record at or after this time (a replay).
      commit_offsets: commit offsets (with a watermark as metadata) on bundle finalization.
      max_delay_ms: subtracted from the newest record timestamp for the watermark written with a commit.
      expansion_service: 'host:port' of a running Java expansion service with KafkaIO, or None for Beam's default
        (`apache_beam.io.kafka.default_io_expansion_service`: downloads the version-matched jar and runs it with
        java; what Dataflow users normally have).
      set_positions: commit the start positions when applied (False: leave the group's offsets alone; the read
        then starts at the committed offsets whatever `start_offset` says).
    """

    def __init__(self, consumer_config: dict, topics: list[str], group_id: str | None = None,
                 start_offset: str = 'committed', start_timestamp_ms: int | None = None,
                 commit_offsets: bool = True, max_delay_ms: int = 1000, expansion_service: str | None = None,
                 consumer_polling_timeout_s: int = 1, set_positions: bool = True):
        super().__init__()
        self._config = check_consumer_config(consumer_config)
        check_read_arguments('ReadFromKafkaXlang', topics, start_offset, start_timestamp_ms)
        if not group_id and (start_offset != 'committed' or start_timestamp_ms is not None or commit_offsets):
            raise ValueError('ReadFromKafkaXlang: group_id is required: the Java reader starts at the group\'s '
                             'committed offsets, and offsets are committed for it.')
        self._java_config = java_consumer_config(self._config, group_id)
        self._topics, self._group_id = list(topics), group_id
        self._start_offset, self._start_timestamp_ms = start_offset, start_timestamp_ms
        self._set_positions = set_positions
        self._expansion_service = expansion_service
        self._polling_timeout_s = consumer_polling_timeout_s
        self._to_records = _ToKafkaRecord(self._config, group_id, commit_offsets, max_delay_ms)

    def expand(self, pbegin):
        if self._set_positions and (self._start_offset != 'committed' or self._start_timestamp_ms is not None):
            set_start_positions(self._config, self._topics, self._group_id, self._start_offset,
                                self._start_timestamp_ms)
        return (pbegin
                | 'KafkaIO' >> BeamReadFromKafka(
                    self._java_config, self._topics, with_metadata=True,
                    timestamp_policy=BeamReadFromKafka.create_time_policy, commit_offset_in_finalize=False,
                    consumer_polling_timeout=self._polling_timeout_s, expansion_service=self._expansion_service)
                | 'ToKafkaRecord' >> beam.ParDo(self._to_records).with_output_types(KafkaRecord))
