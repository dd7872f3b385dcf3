"""The Kafka reader's fetch path on librdkafka (`confluent-kafka`): records are fetched and decoded in C.

Why a second Kafka client next to kafka-python. kafka-python decodes every record in Python: profiled in the running
pipeline it took a fifth of the SDK worker's CPU (its poll ~15%, its network thread ~5%), and one Python worker
is what bounds the pipeline's throughput on Prism. confluent-kafka (librdkafka) fetches, decompresses and checks
records in its own threads outside the GIL; 200k Debezium records cost 0.67 CPU-s to consume against 1.80 with
kafka-python (same broker and machine). It is used for the hot path only (assign, consume, end offsets of the last
fetch);
planning, committed offsets and commits with metadata stay on kafka-python (cold paths, per bundle at most).

    fetcher = Fetcher(consumer_config, [('topic', 0), ('topic', 1)], fetch_wait_ms=200)
    fetcher.position_at((120, 48))                 # next offsets, one per partition
    batches = fetcher.poll(0.2, 500)               # {partition index: [Message, ...]} in offset order
    fetcher.highwater(0)                           # end offset of the last fetch response, or None
    fetcher.close()

`consumer_config` holds kafka-python style settings (what `pipelines.options` and the reader's callers pass);
`librdkafka_settings` translates the ones a deployment sets and refuses any other with its name.
"""
from __future__ import annotations

import logging
import threading
from typing import cast

import confluent_kafka

# kafka-python setting -> librdkafka property.
_SETTINGS = {
    'bootstrap_servers': 'bootstrap.servers',
    'client_id': 'client.id',
    'security_protocol': 'security.protocol',
    'sasl_mechanism': 'sasl.mechanism',
    'sasl_plain_username': 'sasl.username',
    'sasl_plain_password': 'sasl.password',
    'ssl_cafile': 'ssl.ca.location',
    'ssl_certfile': 'ssl.certificate.location',
    'ssl_keyfile': 'ssl.key.location',
    'ssl_password': 'ssl.key.password',
    'ssl_check_hostname': 'ssl.endpoint.identification.algorithm',
    'check_crcs': 'check.crcs',
    'fetch_min_bytes': 'fetch.min.bytes',
    'fetch_max_bytes': 'fetch.max.bytes',
    'fetch_max_wait_ms': 'fetch.wait.max.ms',
    'max_partition_fetch_bytes': 'max.partition.fetch.bytes',
    'request_timeout_ms': 'socket.timeout.ms',
    'reconnect_backoff_ms': 'reconnect.backoff.ms',
    'reconnect_backoff_max_ms': 'reconnect.backoff.max.ms',
    'metadata_max_age_ms': 'metadata.max.age.ms',
    'isolation_level': 'isolation.level',
    'auto_offset_reset': 'auto.offset.reset',
}
# Settings kafka-python uses that have no meaning for a fetcher that is assigned partitions and never commits.
_IGNORED = frozenset({'api_version', 'consumer_timeout_ms', 'max_poll_records', 'max_poll_interval_ms',
                      'session_timeout_ms', 'heartbeat_interval_ms'})
# The group id is never used to join or commit (partitions are assigned; commits go through kafka-python), but
# librdkafka wants one for a consumer.
_UNJOINED_GROUP = 'engagement-reader-fetch-only'
# librdkafka prefetches into a local queue; bounded so a paused reader holds at most this much per partition set.
_QUEUE_KBYTES = 32 * 1024
_LIBRDKAFKA_LOG = logging.getLogger('connectors.kafka.fetch.librdkafka')


def librdkafka_settings(consumer_config: dict, fetch_wait_ms: int) -> dict:
    """librdkafka properties from kafka-python style `consumer_config`; ValueError names an unknown setting."""
    settings = {'group.id': _UNJOINED_GROUP, 'enable.auto.commit': False, 'enable.auto.offset.store': False,
                'enable.partition.eof': False, 'auto.offset.reset': 'earliest', 'fetch.wait.max.ms': fetch_wait_ms,
                'queued.max.messages.kbytes': _QUEUE_KBYTES,
                # librdkafka's own log lines (a broker that is away, say) go through Python logging, not stderr.
                'logger': _LIBRDKAFKA_LOG}
    for name, value in consumer_config.items():
        if name in _IGNORED:
            continue
        if name not in _SETTINGS:
            raise ValueError(f'Kafka reader: consumer setting {name!r} has no librdkafka equivalent here; known: '
                             f'{", ".join(sorted(_SETTINGS))}')
        if name == 'bootstrap_servers' and not isinstance(value, str):
            value = ','.join(value)
        elif name == 'ssl_check_hostname':
            value = 'https' if value else 'none'
        settings[_SETTINGS[name]] = value
    return settings


class Fetcher:
    """A librdkafka consumer assigned to fixed partitions, positioned by the caller, never committing."""

    def __init__(self, consumer_config: dict, partitions: list[tuple[str, int]], fetch_wait_ms: int):
        self.partitions = list(partitions)
        self._index = {tp: i for i, tp in enumerate(self.partitions)}
        self._consumer = confluent_kafka.Consumer(librdkafka_settings(consumer_config, fetch_wait_ms))
        # next offset per partition as this fetcher will deliver it, None before positioning
        self._next: list[int] | None = None

    def position_at(self, offsets) -> None:
        """Deliver each partition from `offsets` on (re-assigns only if the fetcher is elsewhere, so records
        prefetched for the expected offsets survive from one bundle to the next)."""
        offsets = list(offsets)
        if offsets != self._next:
            self._consumer.assign([confluent_kafka.TopicPartition(topic, partition, offset)
                                   for (topic, partition), offset in zip(self.partitions, offsets)])
            self._next = offsets

    def poll(self, timeout_s: float, max_records: int) -> dict[int, list]:
        """Up to `max_records` records, grouped by partition index, each group in offset order; {} if none came
        within `timeout_s`. A broker error that librdkafka reports per record is raised (it retries transport
        errors itself and does not report them here)."""
        batches: dict[int, list] = {}
        for message in self._consumer.consume(max_records, timeout_s):
            error = message.error()
            if error is not None:
                if error.fatal() or not error.retriable():
                    raise confluent_kafka.KafkaException(error)
                continue
            i = self._index[(cast(str, message.topic()), cast(int, message.partition()))]
            group = batches.get(i)
            if group is None:
                group = batches[i] = []
            group.append(message)
        assert self._next is not None, 'position_at() before poll()'
        for i, group in batches.items():
            self._next[i] = group[-1].offset() + 1
        return batches

    def highwater(self, i: int) -> int | None:
        """The partition's end offset as of the last fetch response (no broker call), None before one."""
        topic, partition = self.partitions[i]
        _, high = self._consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, partition),
                                                       cached=True)
        return high if high >= 0 else None

    def positions(self) -> list[int]:
        """The next offset of each partition: past the last record delivered, and past what librdkafka skipped
        without delivering (transaction markers, aborted records), as its consumer position says."""
        known = self._consumer.position([confluent_kafka.TopicPartition(topic, partition)
                                         for topic, partition in self.partitions])
        assert self._next is not None, 'position_at() before positions()'
        return [max(mine, theirs.offset) for mine, theirs in zip(self._next, known)]

    def close(self) -> None:
        self._consumer.close()


class FetcherPool:
    """Fetchers of one process, lent to one caller at a time; a returned fetcher is at the offsets its borrower
    read to, which is where the next bundle of the same restriction starts, so no re-positioning is needed."""

    _IDLE_PER_KEY = 2

    def __init__(self):
        self._lock = threading.Lock()
        self._idle: dict[tuple, list[Fetcher]] = {}

    @staticmethod
    def _key(consumer_config: dict, partitions, fetch_wait_ms: int) -> tuple:
        return (tuple(sorted((name, repr(value)) for name, value in consumer_config.items())), tuple(partitions),
                fetch_wait_ms)

    def take(self, consumer_config: dict, partitions, fetch_wait_ms: int, offsets) -> Fetcher:
        """A fetcher of `partitions` positioned at `offsets`: an idle one already there if any, else any idle one
        (re-positioned), else a new one."""
        key, offsets = self._key(consumer_config, partitions, fetch_wait_ms), list(offsets)
        with self._lock:
            idle = self._idle.get(key, [])
            fetcher = next((f for f in idle if f._next == offsets), idle[-1] if idle else None)
            if fetcher is not None:
                idle.remove(fetcher)
        if fetcher is None:
            fetcher = Fetcher(consumer_config, list(partitions), fetch_wait_ms)
        fetcher.position_at(offsets)
        return fetcher

    def give_back(self, fetcher: Fetcher, consumer_config: dict, fetch_wait_ms: int) -> None:
        key = self._key(consumer_config, fetcher.partitions, fetch_wait_ms)
        with self._lock:
            idle = self._idle.setdefault(key, [])
            idle.append(fetcher)
            surplus = idle[:-self._IDLE_PER_KEY]
            del idle[:-self._IDLE_PER_KEY]
        for extra in surplus:
            extra.close()


POOL = FetcherPool()
