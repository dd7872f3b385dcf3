"""`ReadFromKafka`: Kafka topics into Beam with an unbounded splittable DoFn that runs on every runner
(librdkafka fetches the records, kafka-python plans the read and commits).

    records = p | ReadFromKafka({'bootstrap_servers': '127.0.0.1:19092'}, ['engagement.public.engagement_events'],
                                group_id='engagement-pipeline', start_offset='committed')

Each element is a `KafkaRecord` whose Beam timestamp is the Kafka record timestamp and whose `watermark_ms` is the
reader's output watermark as of that record. One element owns every partition (its restriction holds each
partition's next offset and watermark), or with `splits` > 1 each of that many elements owns a group of them,
shuffled so that a parallel runner reads the groups in parallel; an element's watermark is the minimum over its
partitions, and the runner's is the minimum over the elements; idle partitions follow the wall clock; offsets are
committed, with the watermark as metadata, when the runner finalizes a bundle. How and why in full (watermark,
bundle sizes, the grid of early panes, partition groups): docs/pipeline.md, "How the Kafka reader works".
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

import schemas.coders  # noqa: F401 - the coder of KafkaBatch
from connectors import metrics
from connectors.kafka.client import (
    COMMIT_TIMEOUT_MS,
    check_consumer_config,
    check_read_arguments,
    consumer_for,
    now_ms,
)
from connectors.kafka.fetch import POOL, Fetcher
from connectors.kafka.offsets import PlanRead, ReadPlan, watermark_of
from connectors.kafka.records import KafkaRecord
from connectors.kafka.restriction import (
    Advance,
    MinWatermarkProvider,
    Partitions,
    PartitionsProvider,
    Progress,
    min_watermark,
)
from schemas.kafka import KafkaBatch

_LOG = logging.getLogger('connectors.kafka')
# Records taken from one poll: the time bound of a process() call is checked between polls.
_RECORDS_PER_POLL = 500
# A live call on a grid ends this long before the grid point, so that the bundle completes and its output reaches
# the runner before the firing (a margin, not a measured bound: from a record's emission to the end of its
# bundle took 45-150 ms at p99 on the loaded 2-core machine).
_GRID_LEAD_S = 0.2
# Watermark-only commits (an idle partition's watermark moves, its offset does not) at most this often.
_WATERMARK_COMMIT_INTERVAL_S = 1.0
_GLOBAL_WINDOW = (GlobalWindow(),)
# The watermark of each element (group of partitions) read in this process and when it moved: the gauges show the
# minimum over those that moved in the last _ELEMENT_WATERMARK_TTL_S (an idle element's follows the wall clock).
_ELEMENT_WATERMARKS: dict[tuple, tuple[int, float]] = {}
_ELEMENT_WATERMARK_TTL_S = 60.0


def live_call_seconds(now_s: float, live_bundle_seconds: float, grid_seconds: float | None) -> float:
    """How long a live call lasts from `now_s` (epoch seconds): `live_bundle_seconds`, or with a grid, until
    `_GRID_LEAD_S` before the first grid point (a multiple of `grid_seconds`) that leaves at least
    `live_bundle_seconds` of reading."""
    if grid_seconds is None:
        return live_bundle_seconds
    point = math.ceil((now_s + live_bundle_seconds + _GRID_LEAD_S) / grid_seconds) * grid_seconds
    return point - _GRID_LEAD_S - now_s


# ---------------------------------------------------------------------------------------------------------------
# The reader.

class _ReadPartitionsFn(beam.DoFn):
    def __init__(self, consumer_config, group_id, commit_offsets, max_bundle_records, max_bundle_seconds,
                 live_bundle_seconds, poll_timeout_ms, idle_resume_delay_ms, max_delay_ms, live_grid_seconds=None,
                 batched=False):
        self._config, self._group_id, self._commit_offsets = consumer_config, group_id, commit_offsets
        self._batched = batched
        self._max_records, self._max_seconds = max_bundle_records, max_bundle_seconds
        self._live_seconds = live_bundle_seconds
        self._live_grid = live_grid_seconds
        self._poll_timeout_ms, self._idle_delay = poll_timeout_ms, Duration(micros=idle_resume_delay_ms * 1000)
        self._max_delay_ms = max_delay_ms

    def setup(self):
        self._committer = None             # KafkaConsumer with group_id, used by finalization callbacks only
        self._commit_lock = threading.Lock()
        self._torn_down = False
        self._committed = {}               # TopicPartition -> (offset, watermark_ms, monotonic time of commit)
        self._busy = threading.Lock()      # held by process(): a worker shutting down calls teardown concurrently

    def teardown(self):
        # Wait for a running process() (bounded by max_bundle_seconds + one poll) before closing the committer.
        # The fetchers belong to the process (fetch.POOL), not to this instance.
        acquired = self._busy.acquire(timeout=self._max_seconds + self._poll_timeout_ms / 1000 + 5)
        try:
            self._close_consumers()
        finally:
            if acquired:
                self._busy.release()

    def _close_consumers(self):
        with self._commit_lock:
            self._torn_down = True         # a finalization arriving later only means a longer replay
            if self._committer is not None:
                self._committer.close(autocommit=False)
                self._committer = None

    @beam.DoFn.unbounded_per_element()
    def process(self, plan: ReadPlan,
                finalizer=beam.DoFn.BundleFinalizerParam,
                tracker=beam.DoFn.RestrictionParam(PartitionsProvider()),
                watermark=beam.DoFn.WatermarkEstimatorParam(MinWatermarkProvider())):
        restriction = tracker.current_restriction()
        with self._busy:
            # A poll waits for the broker's fetch (fetch.wait.max.ms) whatever its own timeout.
            fetcher = POOL.take(self._config, restriction.partitions, self._poll_timeout_ms, restriction.offsets)
            try:
                yield from self._read(restriction, fetcher, finalizer, tracker, watermark)
            finally:
                POOL.give_back(fetcher, self._config, self._poll_timeout_ms)

    def _read(self, restriction: Partitions, fetcher: Fetcher, finalizer, tracker, watermark):
        progress = Progress(restriction)
        # Registered first and always: Prism finalizes every bundle and fails one that registered no callback.
        finalizer.register(lambda: self._commit(restriction.partitions, progress))
        partitions = restriction.partitions
        poll_timeout_s = self._poll_timeout_ms / 1000
        # The first consume waits at most the live bundle time: with a backlog it returns full at once.
        live_s = live_call_seconds(time.time(), self._live_seconds, self._live_grid)
        started, read, polls, wait_s = time.monotonic(), 0, 0, min(poll_timeout_s, live_s)
        while read < self._max_records and time.monotonic() - started < self._max_seconds:
            # librdkafka's consume() waits for its record count or the timeout, whichever comes first; a live
            # stream rarely fills it, so once live the wait is what remains of the live call.
            batches = fetcher.poll(wait_s, min(_RECORDS_PER_POLL, self._max_records - read))
            polls += 1
            if not batches:
                break
            for i, records in batches.items():
                topic, partition = partitions[i]
                # A record without a timestamp (message format < 0.10) is stamped with the time it is read, and
                # one stamped ahead of that time (a producer's clock or a hostile CreateTime) with that time: it
                # would move the watermark ahead and make every later event late.
                read_at_ms = now_ms()
                stamps = [stamp if 0 <= (stamp := r.timestamp()[1]) <= read_at_ms else read_at_ms for r in records]
                mark = max(stamps) - self._max_delay_ms
                if progress.watermarks[i] is not None:
                    mark = max(mark, progress.watermarks[i])
                last = records[-1]
                if not tracker.try_claim(Advance(i, last.offset() + 1, mark)):
                    return
                progress.offsets[i], progress.watermarks[i] = last.offset() + 1, mark
                epoch = last.leader_epoch()
                progress.leader_epochs[i] = -1 if epoch is None else epoch
                size = 0
                emitted_at = min_watermark(progress.watermarks)
                if self._batched:
                    keys, values = [r.key() for r in records], [r.value() for r in records]
                    size = sum(len(v) for v in values if v is not None) + sum(len(k) for k in keys if k is not None)
                    yield WindowedValue(KafkaBatch(topic, partition, [r.offset() for r in records], keys, values,
                                                   stamps, emitted_at),
                                        Timestamp(micros=min(stamps) * 1000), _GLOBAL_WINDOW)
                for r, ts in zip(() if self._batched else records, stamps):
                    key, value = r.key(), r.value()
                    size += len(key or b'') + len(value or b'')
                    # A WindowedValue rather than a TimestampedValue: the read element lives in the global window
                    # (Impulse), and Beam would otherwise assign the global window anew for every record.
                    yield WindowedValue(KafkaRecord(topic, partition, r.offset(), key, value, ts, emitted_at),
                                        Timestamp(micros=ts * 1000), _GLOBAL_WINDOW)
                read += len(records)
                metrics.RECORDS_READ.inc(len(records), topic=topic, partition=partition)
                metrics.LAST_FETCH.set(read_at_ms / 1000, topic=topic, partition=partition)
                metrics.BYTES_READ.inc(size, topic=topic, partition=partition)
            self._advance_watermark(watermark, progress.watermarks, partitions)
            if all((end := fetcher.highwater(i)) is not None and progress.offsets[i] >= end - _RECORDS_PER_POLL
                   for i in range(len(partitions))):
                elapsed = time.monotonic() - started
                if elapsed >= live_s:
                    break  # live: everything the broker had at its last fetch response is out; hand it on
                wait_s = min(poll_timeout_s, max(0.001, live_s - elapsed))
            else:
                wait_s = poll_timeout_s
        if not self._mark_caught_up(fetcher, tracker, progress):
            return
        self._advance_watermark(watermark, progress.watermarks, partitions)
        if _LOG.isEnabledFor(logging.DEBUG):
            _LOG.debug(json.dumps({'event': 'kafka_read_call', 'records': read, 'polls': polls,
                                   'seconds': round(time.monotonic() - started, 3), 'offsets': progress.offsets,
                                   'watermark_lag_ms': [None if w is None else now_ms() - w
                                                        for w in progress.watermarks]}))
        tracker.defer_remainder(None if read else self._idle_delay)

    def _mark_caught_up(self, fetcher: Fetcher, tracker, progress: Progress) -> bool:
        """Move the watermark of every caught-up partition to wall clock; False if a claim was refused.

        The end offsets are those of librdkafka's last fetch response (it long-polls every assigned partition in
        the background, so they are at most `poll_timeout_ms` old); asking the broker instead took ~0.2 s per
        partition, per call. A record appended since that response has a timestamp after it, so the watermark
        moves to the wall clock minus that age bound minus `max_delay_ms`."""
        asked_at = now_ms() - self._poll_timeout_ms
        positions = fetcher.positions()
        for i, (topic, partition) in enumerate(fetcher.partitions):
            end = fetcher.highwater(i)
            if end is None:
                continue  # no fetch response yet: not known to be caught up
            position = max(progress.offsets[i], positions[i])
            metrics.PARTITION_LAG.set(max(0, end - position), topic=topic, partition=partition)
            if position < end:
                continue
            mark = asked_at - self._max_delay_ms
            if progress.watermarks[i] is not None:
                mark = max(mark, progress.watermarks[i])
            if (position, mark) == (progress.offsets[i], progress.watermarks[i]):
                continue
            # `position` may pass the last record read (transaction markers): claim it so the restriction follows.
            if not tracker.try_claim(Advance(i, position, mark)):
                return False
            progress.offsets[i], progress.watermarks[i] = position, mark
        return True

    @staticmethod
    def _advance_watermark(estimator, watermarks, partitions) -> None:
        known = min_watermark(watermarks)
        if known is None:
            return
        new = Timestamp(micros=known // 1000 * 1_000_000)     # whole seconds: see "Watermark" above
        current = estimator.current_watermark()
        if current is None or new > current:
            estimator.set_watermark(new)
            now = time.monotonic()
            _ELEMENT_WATERMARKS[partitions] = (known, now)
            lowest = min(mark for mark, at in _ELEMENT_WATERMARKS.values() if now - at < _ELEMENT_WATERMARK_TTL_S)
            metrics.WATERMARK.set(lowest / 1000)
            metrics.WATERMARK_LAG.set(max(0.0, time.time() - lowest / 1000))

    def _commit(self, partitions, progress: Progress) -> None:
        """Bundle finalization: the runner holds this bundle's output durably; commit where it ended."""
        if not self._commit_offsets:
            return
        with self._commit_lock:
            if self._torn_down:
                return
            now = time.monotonic()
            offsets = {}
            for (topic, partition), offset, mark, epoch in zip(partitions, progress.offsets, progress.watermarks,
                                                                progress.leader_epochs):
                tp = TopicPartition(topic, partition)
                last = self._committed.get(tp)
                if last is not None:
                    if offset < last[0] or (offset, mark) == last[:2]:
                        continue  # an older bundle finalized late, or nothing new
                    if offset == last[0] and now - last[2] < _WATERMARK_COMMIT_INTERVAL_S:
                        continue
                offsets[tp] = OffsetAndMetadata(offset, json.dumps({'watermark_ms': mark}), epoch)
            if not offsets:
                return
            if self._committer is None:
                self._committer = consumer_for(self._config, self._group_id)
            # Bounded: kafka-python's commit otherwise retries forever while the broker is away, and a finalization
            # that never returns stalls the runner. A failed commit is logged by Beam; the next bundle commits.
            self._committer.commit(offsets=offsets, timeout_ms=COMMIT_TIMEOUT_MS)
            for tp, committed in offsets.items():
                self._committed[tp] = (committed.offset, watermark_of(committed.metadata), now)


# ---------------------------------------------------------------------------------------------------------------

class ReadFromKafka(beam.PTransform):
    """Unbounded read of `topics` as `KafkaRecord`s, timestamped with the Kafka record timestamp.

    Args:
      consumer_config: kafka-python `KafkaConsumer` settings, passed through (bootstrap_servers, security_protocol,
        sasl_*, ssl_* as file paths, client_id, fetch sizes...). Must be picklable. group_id, enable_auto_commit and
        deserializers are the reader's own.
      topics: topic names; all their partitions are read.
      group_id: consumer group whose offsets are read ('committed') and committed (`commit_offsets`).
      start_offset: 'committed' (falls back to 'earliest' for a partition without a commit), 'earliest', 'latest'.
      start_timestamp_ms: if set, each partition starts no later than its first record at or after this time.
      commit_offsets: commit offsets (with the partition watermark as metadata) on bundle finalization.
      max_bundle_records, max_bundle_seconds: work per process() call before a checkpoint.
      live_bundle_seconds: once every partition is within one poll of the end offset of the broker's last fetch
        response, a call ends after this long instead (default: max_bundle_seconds). So a backlog can be read in
        large bundles (fewer, larger outputs per bundle: cheaper downstream) while a live stream is handed on
        promptly.
      live_grid_seconds: end live calls just before each multiple of this period instead (at least
        live_bundle_seconds long): the early-firing period of aligned panes downstream (see "Throughput").
      poll_timeout_ms: how long one poll waits for records.
      idle_resume_delay_ms: after a call that read nothing, resume after this delay.
      splits: read the partitions as this many elements (groups dealt round-robin, `offsets.partition_groups`),
        redistributed by a Reshuffle so that a runner with parallelism reads them on several workers. A record's
        `watermark_ms` is then its group's watermark, which is ahead of the runner's (the minimum over the groups)
        or equal to it.
      batched: hand on one `KafkaBatch` per partition and poll (up to 500 records, as columns) instead of one
        `KafkaRecord` per record, stamped with its earliest record's timestamp: a step that handles a batch at
        once saves Beam's per-element work (`ParseEvents` does, and the steps after it: see `--event_batches`).
      max_delay_ms: how far a record's timestamp may lie behind the newest timestamp read from its partition (or
        behind wall clock once the partition is caught up) and still be on time.
    """

    def __init__(self, consumer_config: dict, topics: list[str], group_id: str | None = None,
                 start_offset: str = 'committed', start_timestamp_ms: int | None = None,
                 commit_offsets: bool = True, max_bundle_records: int = 10_000, max_bundle_seconds: float = 0.5,
                 live_bundle_seconds: float | None = None,
                 poll_timeout_ms: int = 200, idle_resume_delay_ms: int = 100, max_delay_ms: int = 1000,
                 live_grid_seconds: float | None = None, splits: int = 1, batched: bool = False):
        super().__init__()
        self._config = check_consumer_config(consumer_config)
        check_read_arguments('ReadFromKafka', topics, start_offset, start_timestamp_ms)
        if not group_id and (start_offset == 'committed' or commit_offsets):
            raise ValueError("ReadFromKafka: group_id is required with start_offset='committed' or "
                             'commit_offsets=True.')
        if not isinstance(max_bundle_records, int):
            raise ValueError(f'ReadFromKafka: max_bundle_records must be a whole number, got {max_bundle_records!r}.')
        if live_bundle_seconds is None:
            live_bundle_seconds = max_bundle_seconds
        for name, value in (('max_bundle_records', max_bundle_records), ('max_bundle_seconds', max_bundle_seconds),
                            ('live_bundle_seconds', live_bundle_seconds),
                            ('poll_timeout_ms', poll_timeout_ms),
                            ('live_grid_seconds', 1 if live_grid_seconds is None else live_grid_seconds)):
            if not value > 0:
                raise ValueError(f'ReadFromKafka: {name} must be > 0, got {value!r}.')
        if not (isinstance(splits, int) and splits >= 1):
            raise ValueError(f'ReadFromKafka: splits must be a whole number >= 1, got {splits!r}.')
        self._splits = splits
        for name, value in (('idle_resume_delay_ms', idle_resume_delay_ms), ('max_delay_ms', max_delay_ms)):
            if not value >= 0:
                raise ValueError(f'ReadFromKafka: {name} must be >= 0, got {value!r}.')
        self._topics, self._group_id = list(topics), group_id
        self._start_offset, self._start_timestamp_ms = start_offset, start_timestamp_ms
        self._read_fn = _ReadPartitionsFn(self._config, group_id, commit_offsets, max_bundle_records,
                                          max_bundle_seconds, live_bundle_seconds, poll_timeout_ms,
                                          idle_resume_delay_ms, max_delay_ms, live_grid_seconds, batched)
        self._batched = batched

    def expand(self, pbegin):
        plans = (pbegin
                 | 'Impulse' >> beam.Impulse()
                 | 'PlanPartitions' >> beam.ParDo(PlanRead(self._config, self._topics, self._group_id,
                                                            self._start_offset, self._start_timestamp_ms,
                                                            self._splits)))
        if self._splits > 1:
            # Without a shuffle every plan stays in the (single) worker that ran the impulse.
            plans = plans | 'DistributeReaders' >> beam.Reshuffle()
        return plans | 'ReadPartitions' >> beam.ParDo(self._read_fn).with_output_types(
            KafkaBatch if self._batched else KafkaRecord)

