"""Benchmark: the parser alone, per record, on a real Debezium record and a direct event: `parse_record`
(pydantic), the fast path (`transforms.fast_parse.fast_fields`: orjson and checks), and a whole `KafkaBatch`
through `ParseEventsFn` (what the pipeline runs with `--event_batches`: the fast path plus the IngestedEvent).

    .venv/bin/python -m tests.benchmarks.bench_parse [--records 50000] [--rounds 3] [--batch 500]

Prints microseconds per record for each round. Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone

import orjson

from schemas import KafkaRecord
from schemas.kafka import KafkaBatch
from tests.schemas import samples
from transforms.fast_parse import fast_fields
from transforms.parse import ParseEventsFn, parse_record


def _timed(label: str, records: int, rounds: int, run) -> None:
    for n in range(1, rounds + 1):
        started = time.perf_counter()
        run()
        print(f'{label:<44} round {n}: {(time.perf_counter() - started) / records * 1e6:6.2f} µs per record')


def main() -> None:
    parser = argparse.ArgumentParser(prog='python -m tests.benchmarks.bench_parse', description=__doc__)
    parser.add_argument('--records', type=int, default=50_000)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--batch', type=int, default=500, help='records per KafkaBatch (the reader polls 500)')
    args = parser.parse_args()
    now = datetime.now(timezone.utc)
    stamp = int(now.timestamp() * 1000)
    topics = frozenset([samples.EVENTS_TOPIC])
    direct_value = json.dumps(samples.DIRECT_EVENT).encode()
    n = args.records
    for label, topic, key, value in (('CDC', samples.EVENTS_TOPIC, samples.CDC_EVENT_KEY, samples.CDC_EVENT_VALUE),
                                     ('direct', samples.RAW_TOPIC, b'1', direct_value)):
        record = KafkaRecord(topic, 0, 7, key, value, stamp)
        cdc = topic in topics
        _timed(f'{label} parse_record (pydantic)', n, args.rounds,
               lambda: [parse_record(record, topics, now) for _ in range(n)])
        _timed(f'{label} orjson.loads alone', n, args.rounds, lambda: [orjson.loads(value) for _ in range(n)])
        _timed(f'{label} fast_fields', n, args.rounds,
               lambda: [fast_fields(value, cdc, stamp, 300e6) for _ in range(n)])
        size = args.batch
        batch = KafkaBatch(topic, 0, list(range(size)), [key] * size, [value] * size, [stamp] * size, stamp - 2000)
        fn = ParseEventsFn(topics)
        fn.start_bundle()

        def batches():
            for _ in range(n // size):
                for _ in fn.process(batch):
                    pass
        _timed(f'{label} ParseEventsFn, batches of {size}', n // size * size, args.rounds, batches)


if __name__ == '__main__':
    main()
