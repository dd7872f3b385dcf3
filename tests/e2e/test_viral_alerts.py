"""Viral-content alerts on the real stack (Postgres -> Debezium -> Kafka -> the pipeline on Prism -> Redis): steady
load raises none; a burst of one content (`launch.scenarios.generate --burst`) raises exactly one, on the Redis
stream `engagement:alerts` and the Kafka topic `engagement.alerts`, within 5 s of the burst's commit. Windows of
10 s keep the test short (the rule is the same at 60 s)."""
from __future__ import annotations

import threading
import time

import pytest
import redis

from launch.scenarios import generate
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline, wait_for
from tests.e2e.test_pipeline_e2e import read_topic

pytestmark = pytest.mark.integration

FLAGS = ('--window_seconds=10', '--viral_trailing_windows=6', '--viral_min_events=60', '--viral_multiple=3',
         '--api_url=', '--bq_enabled=false')


def test_steady_load_raises_no_alert_and_a_burst_raises_one_within_5_s():
    with private_stack() as stack:
        cfg = stack.cfg
        client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
        pipeline = Pipeline(cfg, *FLAGS, name='viral')
        try:
            pipeline.start()
            steady = threading.Thread(target=generate.main, args=(
                ['--rate', '200', '--duration', '75', '--seed', '61', '--late-share', '0', *cfg.cli_flags()],))
            steady.start()
            assert wait_for(lambda: client.exists('engagement:totals:' + str(int(time.time()) // 10 * 10 - 10)),
                            60), f'the pipeline writes no windows; see {pipeline.log}'
            time.sleep(40)                                   # several observed windows of steady load
            assert client.xlen('engagement:alerts') == 0, client.xrange('engagement:alerts')
            burst_content = generate.load_content_ids(cfg.pg_dsn)[7]
            before = time.time()
            assert generate.main(['--burst', burst_content, '--count', '300', '--rate', '3000', '--late-share', '0',
                                  *cfg.cli_flags()]) == 0
            committed = time.time()
            raised = wait_for(lambda: client.xrange('engagement:alerts'), 30, 0.05)
            assert raised, f'no alert after the burst; see {pipeline.log}'
            entry_id, alert = raised[0]          # a burst that straddles two windows may raise one in each
            alerted_at = int(entry_id.split('-')[0]) / 1000        # the stream id: Redis's clock, ms
            assert alert['content_id'] == burst_content and int(alert['events']) >= 60
            assert alerted_at - committed <= 5.0, f'alert {alerted_at - committed:.2f} s after the burst commit'
            steady.join()
            time.sleep(5)
            stream = client.xrange('engagement:alerts')
            windows = [int(fields['window_start']) for _, fields in stream]
            assert len(stream) in (1, 2) and len(set(windows)) == len(windows), stream   # one per window
            assert {fields['content_id'] for _, fields in stream} == {burst_content}, stream
            records = wait_for(lambda: (lambda got: got if len(got) == len(stream) else None)(
                read_topic(cfg, cfg.alert_topic)), 30)
            assert sorted((r['content_id'], r['window_start']) for r in records or []) == [
                (burst_content, w) for w in sorted(windows)], records
            assert float(records[0]['trailing_average']) < 10 and records[0]['events'] >= 60
            print(f'burst of 300 events committed in {committed - before:.2f} s; alert '
                  f'{alerted_at - committed:.2f} s after the commit')
        finally:
            pipeline.stop()
            client.close()
