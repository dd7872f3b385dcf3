"""Benchmark of connectors.kafka.ReadFromKafka: read N records from a prefilled topic through the reader and a
per-bundle count, in a streaming pipeline on Prism; print events/s and wall time. Not a test: it prints figures.

    .venv/bin/python -m tests.benchmarks.bench_kafka_reader --count 200000 [stack settings, e.g. --kafka-port 19092]

The topic (default engagement.bench_reader, on the stack's broker) is filled with JSON events of about 300 bytes
spread over its partitions when it holds fewer than N records. The pipeline reads from the earliest offset without
committing, so every run reads the same records. Figures:
  - startup: pipeline submitted -> first record counted (Prism start, planning, first poll);
  - read: first record -> N-th record counted, and N / that time in events/s;
  - wall: submitted -> N-th record; CPU: seconds of this process (driver + the in-process SDK worker).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from connectors.kafka import ReadFromKafka
from launch.stack import config as stack_config


class CountPerBundle(beam.DoFn):
    """Appends '<count> <unix time>' to a file at the end of every bundle (the SDK worker runs in this process)."""

    def __init__(self, path: str):
        self._path = path

    def start_bundle(self):
        self._n = 0

    def process(self, record):
        self._n += 1

    def finish_bundle(self):
        if self._n:
            with open(self._path, 'a') as out:
                out.write(f'{self._n} {time.time()}\n')


def prefill(bootstrap: str, topic: str, count: int, partitions: int) -> int:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        while not consumer.partitions_for_topic(topic):
            time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        have = sum(consumer.end_offsets(tps).values()) - sum(consumer.beginning_offsets(tps).values())
    finally:
        consumer.close()
    if have >= count:
        return have
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=256 * 1024)
    started = time.monotonic()
    for i in range(have, count):
        event = {'id': i, 'content_id': f'{i % 97:08d}-0000-4000-8000-000000000000',
                 'user_id': f'{i % 5000:08d}-0000-4000-8000-000000000000', 'event_type': 'play',
                 'event_ts': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'duration_ms': i % 300_000,
                 'device': 'web', 'raw_payload': {'session_id': f's-{i:012x}', 'app_version': '6.1.0'}}
        producer.send(topic, key=str(i).encode(), value=json.dumps(event).encode())
    producer.flush()
    producer.close()
    print(f'prefilled {count - have:,} records into {topic} in {time.monotonic() - started:.1f} s', flush=True)
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m tests.benchmarks.bench_kafka_reader', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--count', type=int, default=200_000, help='records to read (default 200000)')
    parser.add_argument('--topic', default='engagement.bench_reader', help='topic to fill and read')
    parser.add_argument('--max-bundle-records', type=int, default=10_000, help='ReadFromKafka max_bundle_records')
    parser.add_argument('--max-bundle-seconds', type=float, default=0.5, help='ReadFromKafka max_bundle_seconds')
    parser.add_argument('--timeout', type=float, default=300, help='give up after this many seconds')
    stack_config.add_arguments(parser)
    args = parser.parse_args(argv)
    cfg = stack_config.from_args(args)
    prefill(cfg.kafka_bootstrap, args.topic, args.count, cfg.kafka_partitions)

    counts = tempfile.NamedTemporaryFile(prefix='bench-kafka-reader-', suffix='.txt', delete=False).name
    pipeline = beam.Pipeline(options=PipelineOptions(['--streaming'], runner='PrismRunner'))
    (pipeline
     | 'Read' >> ReadFromKafka({'bootstrap_servers': cfg.kafka_bootstrap}, [args.topic], start_offset='earliest',
                               commit_offsets=False, max_bundle_records=args.max_bundle_records,
                               max_bundle_seconds=args.max_bundle_seconds)
     | 'Count' >> beam.ParDo(CountPerBundle(counts)))
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    submitted = time.time()
    result = pipeline.run()
    seen, first, last = 0, None, None
    try:
        deadline = time.monotonic() + args.timeout
        while seen < args.count and time.monotonic() < deadline:
            time.sleep(0.2)
            with open(counts) as f:
                rows = [line.split() for line in f]
            seen = sum(int(n) for n, _ in rows)
            if rows:
                first = first or float(rows[0][1])
                last = float(rows[-1][1])
    finally:
        result.cancel()
        try:
            result.wait_until_finish(duration=30_000)
        except Exception:  # a cancelled job "fails" in state CANCELLED
            pass
        os.unlink(counts)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if seen < args.count:
        print(f'timed out after {args.timeout:.0f} s with {seen:,} of {args.count:,} records', file=sys.stderr)
        return 1
    read_s = max(last - first, 1e-9)
    print(f'records {seen:,} (asked {args.count:,})  startup {first - submitted:.1f} s  read {read_s:.1f} s '
          f'= {seen / read_s:,.0f} events/s  wall {last - submitted:.1f} s = {seen / (last - submitted):,.0f} '
          f'events/s  CPU {cpu:.1f} s  load {os.getloadavg()[0]:.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
