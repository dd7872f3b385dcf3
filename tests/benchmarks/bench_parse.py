"""Benchmark: the parser alone, per record (`transforms.parse.parse_record` on a real Debezium record).

    .venv/bin/python -m tests.benchmarks.bench_parse [--records 50000] [--rounds 3]

Prints microseconds per record for each round. Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone

from schemas import KafkaRecord
from tests.schemas import samples
from transforms.parse import parse_record


def main() -> None:
    parser = argparse.ArgumentParser(prog='python -m tests.benchmarks.bench_parse', description=__doc__)
    parser.add_argument('--records', type=int, default=50_000)
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    record = KafkaRecord(samples.EVENTS_TOPIC, 0, 7, samples.CDC_EVENT_KEY, samples.CDC_EVENT_VALUE, 1795522213410)
    topics = frozenset([samples.EVENTS_TOPIC])
    now = datetime.now(timezone.utc)
    for n in range(1, args.rounds + 1):
        started = time.perf_counter()
        for _ in range(args.records):
            parse_record(record, topics, now)
        print(f'round {n}: {(time.perf_counter() - started) / args.records * 1e6:.2f} µs per record')


if __name__ == '__main__':
    main()
