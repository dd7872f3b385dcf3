"""The Kafka client settings both readers share, checked once: kafka-python consumers for planning and commits,
the arguments of a read, the partitions of topics.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Iterable

from kafka import KafkaConsumer, TopicPartition

_LOG = logging.getLogger('connectors.kafka')
START_OFFSETS = ('committed', 'earliest', 'latest')
# The reader owns these consumer settings: values stay bytes, offsets are committed on bundle finalization only.
_RESERVED_SETTINGS = ('group_id', 'enable_auto_commit', 'key_deserializer', 'value_deserializer')
COMMIT_TIMEOUT_MS = 10_000


def log_event(event: str, **fields) -> None:
    _LOG.info(json.dumps({'event': event, **fields}, default=str))


def now_ms() -> int:
    return int(time.time() * 1000)


def check_consumer_config(consumer_config: dict) -> dict:
    if not isinstance(consumer_config, dict) or not consumer_config.get('bootstrap_servers'):
        raise ValueError('ReadFromKafka: consumer_config must be a dict of kafka-python settings with at least '
                         "'bootstrap_servers', e.g. {'bootstrap_servers': '127.0.0.1:19092'}.")
    reserved = sorted(set(consumer_config) & set(_RESERVED_SETTINGS))
    if reserved:
        raise ValueError(f'ReadFromKafka: consumer_config must not set {", ".join(reserved)}: pass group_id as its '
                         'own argument; the reader emits bytes and commits offsets itself.')
    return dict(consumer_config)


def check_read_arguments(transform: str, topics, start_offset: str, start_timestamp_ms) -> None:
    """The arguments both Kafka readers take (this one and connectors.kafka.xlang's): ValueError naming them."""
    if isinstance(topics, str) or not topics or not all(isinstance(t, str) and t for t in topics):
        raise ValueError(f'{transform}: topics must be a non-empty list of topic names, got {topics!r}.')
    if start_offset not in START_OFFSETS:
        raise ValueError(f'{transform}: start_offset must be one of {", ".join(START_OFFSETS)}, '
                         f'got {start_offset!r}.')
    if start_timestamp_ms is not None and (not isinstance(start_timestamp_ms, int) or start_timestamp_ms < 0):
        raise ValueError(f'{transform}: start_timestamp_ms must be epoch milliseconds >= 0, '
                         f'got {start_timestamp_ms!r}.')


def consumer_for(consumer_config: dict, group_id: str | None = None):
    settings = {'auto_offset_reset': 'earliest', **consumer_config}
    return KafkaConsumer(**settings, group_id=group_id, enable_auto_commit=False)


def topic_partitions(consumer, topics: Iterable[str], timeout_s: float = 30.0) -> list:
    """Every partition of `topics`, sorted; waits for metadata, fails with one clear line if a topic is unknown."""
    out: list[TopicPartition] = []
    for topic in topics:
        deadline = time.monotonic() + timeout_s
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise RuntimeError(f'Kafka topic {topic!r} has no partitions after {timeout_s:.0f} s: does it exist on '
                               f'{consumer.config["bootstrap_servers"]}?')
        out.extend(TopicPartition(topic, p) for p in sorted(partitions))
    return out
