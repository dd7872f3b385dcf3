"""End to end: Redis down for 30 s in the middle of a live run loses nothing (the sink retries with backoff for
~40-57 s, see connectors/redis.py) and, once Redis is back, every key equals SQL; no pane became a dead letter."""
from __future__ import annotations

import threading
import time

import pytest

from launch.scenarios import generate
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline
from tests.e2e.test_pipeline_e2e import read_dead_letters, wait_exact

pytestmark = pytest.mark.integration


def test_redis_down_for_30_seconds_loses_nothing():
    with private_stack() as stack:
        cfg = stack.cfg
        pipeline = Pipeline(cfg, '--bq_enabled=false', '--api_url=')
        try:
            pipeline.start()
            load = threading.Thread(target=generate.main, args=(
                ['--rate', '100', '--duration', '80', '--seed', '33', *cfg.cli_flags()],))
            load.start()
            time.sleep(25)
            stack.kill('redis')
            down_at = time.monotonic()
            time.sleep(30)
            stack.start('redis')
            print(f'Redis was down for {time.monotonic() - down_at:.1f} s')
            load.join()
            assert pipeline.alive(), f'the pipeline did not survive the outage; see {pipeline.log}'
            assert wait_exact(cfg, pipeline, 240) == []
            assert not [d for d in read_dead_letters(cfg) if d['stage'] == 'redis']
        finally:
            pipeline.stop()
