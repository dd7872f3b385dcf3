"""Benchmark (not a test): how many stats panes per second UpsertContentStatsFn writes to a private Redis.

N panes (1000 contents x N/1000 windows) go through setup/start_bundle/process/finish_bundle as a runner would
drive them, in bundles of 5000 and pipelines of 500 EVALSHAs; then the same panes again (a full re-fire, delta 0).

    .venv/bin/python -m tests.benchmarks.bench_redis_sink [N]
"""
from __future__ import annotations

import os
import shutil
import sys
import time

from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PANE_INFO_UNKNOWN

from connectors.redis import UpsertContentStatsFn
from launch.stack.redis import Redis
from tests.conftest import private_config
from tests.connectors.test_redis_sink import Stats


def write(fn: UpsertContentStatsFn, panes: list[Stats], bundle_size: int = 5000) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(panes), bundle_size):
        fn.start_bundle()
        for stats in panes[start:start + bundle_size]:
            for _ in fn.process(stats, Timestamp(0), GlobalWindow(), PANE_INFO_UNKNOWN):
                pass
        for _ in fn.finish_bundle():
            pass
    return time.perf_counter() - wall, time.process_time() - cpu


def main(n: int) -> None:
    types = ('video', 'podcast', 'newsletter')
    panes = [Stats(1_764_000_000 + 60 * (i // 1000), 1_764_000_060 + 60 * (i // 1000), f'content-{i % 1000:04d}',
                   types[i % 3], 'A title', 10, 4, 3, 2, 1, 123_456) for i in range(n)]
    cfg = private_config()
    server = Redis(cfg)
    server.start()
    try:
        fn = UpsertContentStatsFn(cfg.redis_url, 'engagement', 86400, 500, 10, 0.5, 8.0, 5.0)
        fn.setup()
        for label in ('first write', 're-fire'):
            wall, cpu = write(fn, panes)
            print(f'{label:<11} {n} panes in {wall:5.2f} s = {n / wall:8,.0f} panes/s '
                  f'(client CPU {cpu:.2f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)')
        fn.teardown()
    finally:
        server.stop()
        shutil.rmtree(cfg.state_dir, ignore_errors=True)


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
