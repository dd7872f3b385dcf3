"""Where a read starts and what it commits: the plan (each partition's first offset, picked at run time by
`PlanRead`) and the committed positions (each partition's committed offset with the reader's watermark as commit
metadata).

Offsets
  `start_offset` picks each partition's first offset: 'committed' (the group's committed offset; a partition the
  group never committed falls back to 'earliest'), 'earliest' or 'latest'. With `start_timestamp_ms` the start is
  min(that offset, the first offset whose timestamp is >= start_timestamp_ms): the pipeline uses this to replay from
  a window-aligned point after a restart (see `committed_positions`). Offsets before the log start (deleted by
  retention) are clamped to the log start.
  With `commit_offsets=True` every bundle registers a finalization callback; when the runner calls it (the bundle's
  output is durable), the next offset of each partition is committed for `group_id` with
  `OffsetAndMetadata(offset, '{"watermark_ms": <partition watermark>}', leader_epoch)`. Nothing is committed anywhere
  else, so a crash replays at most what was read since the last finalized bundle (at-least-once; sinks are
  idempotent). Runners that never finalize bundles (Flink without checkpointing) never commit: restart from a
  replay point then. The reader never joins the consumer group (partitions are assigned, not subscribed). A run
  that replays from `start_timestamp_ms` commits its own positions, so the group's offsets may move back meanwhile.
"""
from __future__ import annotations

import json
from typing import Iterable, NamedTuple

import apache_beam as beam

from connectors.kafka.client import check_consumer_config, consumer_for, log_event, topic_partitions


def watermark_of(metadata: str | None) -> int | None:
    try:
        value = json.loads(metadata or '{}').get('watermark_ms')
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, (int, float)) else None


def committed_positions(consumer_config: dict, group_id: str, topics: Iterable[str]) -> dict:
    """{(topic, partition): (committed offset, watermark_ms or None)} of `group_id`, for every partition of
    `topics` the group has committed. Driver-side: the pipeline derives `start_timestamp_ms` for a replay from the
    minimum watermark (aligned down to a window start)."""
    consumer = consumer_for(check_consumer_config(consumer_config), group_id)
    try:
        positions = {}
        for tp in topic_partitions(consumer, topics):
            committed = consumer.committed(tp, metadata=True)
            if committed is not None and committed.offset >= 0:
                positions[(tp.topic, tp.partition)] = (committed.offset, watermark_of(committed.metadata))
        return positions
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------------------------
# Planning: which partitions, from which offsets.

class ReadPlan(NamedTuple):
    """The SDF's input element: the partitions one reader element owns and the offsets it starts from."""
    partitions: tuple          # ((topic, partition), ...)
    start_offsets: tuple       # (offset, ...), same order


def partition_groups(plan: ReadPlan, splits: int) -> list[ReadPlan]:
    """`plan` dealt round-robin into at most `splits` plans, none empty: partition i goes to group i % splits, so
    that each topic's partitions spread over the groups."""
    if splits < 1:
        raise ValueError(f'splits must be >= 1, got {splits!r}')
    groups = []
    for g in range(min(splits, len(plan.partitions)) or 1):
        slots = range(g, len(plan.partitions), splits)
        groups.append(ReadPlan(tuple(plan.partitions[i] for i in slots), tuple(plan.start_offsets[i] for i in slots)))
    return groups


class PlanRead(beam.DoFn):
    """Impulse -> the `ReadPlan`s of the topics' partitions, start offsets resolved against the broker: one plan for
    all of them, or with `splits` > 1 that many (`partition_groups`), each read by its own element."""

    def __init__(self, consumer_config, topics, group_id, start_offset, start_timestamp_ms, splits: int = 1):
        self._config, self._topics, self._group_id = consumer_config, tuple(topics), group_id
        self._start_offset, self._start_timestamp_ms = start_offset, start_timestamp_ms
        self._splits = splits

    def process(self, unused_impulse):
        consumer = consumer_for(self._config, self._group_id)
        try:
            tps = topic_partitions(consumer, self._topics)
            earliest = consumer.beginning_offsets(tps)
            latest = consumer.end_offsets(tps)
            start = {}
            for tp in tps:
                committed = consumer.committed(tp) if self._start_offset == 'committed' else None
                if self._start_offset == 'latest':
                    start[tp] = latest[tp]
                elif committed is not None and committed >= 0:
                    start[tp] = committed
                else:
                    start[tp] = earliest[tp]
            if self._start_timestamp_ms is not None:
                by_time = consumer.offsets_for_times({tp: self._start_timestamp_ms for tp in tps})
                for tp, found in by_time.items():
                    if found is not None:
                        start[tp] = min(start[tp], found.offset)
            for tp in tps:
                start[tp] = min(max(start[tp], earliest[tp]), latest[tp])
        finally:
            consumer.close()
        log_event('kafka_read_planned', group_id=self._group_id, start_offset=self._start_offset, splits=self._splits,
             start_timestamp_ms=self._start_timestamp_ms,
             start={f'{tp.topic}/{tp.partition}': start[tp] for tp in tps},
             end={f'{tp.topic}/{tp.partition}': latest[tp] for tp in tps})
        yield from partition_groups(ReadPlan(tuple((tp.topic, tp.partition) for tp in tps),
                                             tuple(start[tp] for tp in tps)), self._splits)
