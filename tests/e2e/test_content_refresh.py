"""A content row inserted or updated while the pipeline runs is used within the refresh interval (real stack,
Prism): a new content is picked up at its first event (one reload on a miss), a renamed one within
`--content_refresh_seconds`."""
from __future__ import annotations

import time
import uuid

import psycopg2
import pytest
import redis

from tests.e2e.conftest import Pipeline

pytestmark = pytest.mark.integration

REFRESH_S = 5


def insert_events(cfg, content_id: str, n: int) -> int:
    """n play events on content_id now; returns their window start."""
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        for _ in range(n):
            cur.execute("INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms) "
                        "VALUES (%s, %s, 'play', now(), 2000) RETURNING extract(epoch FROM event_ts)",
                        (content_id, str(uuid.uuid4())))
            window = int(cur.fetchone()[0]) // 60 * 60
    return window


def wait_for(check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    return check()


def test_new_and_renamed_content_is_used_within_the_refresh_interval(e2e_stack):
    cfg = e2e_stack.cfg
    content_id = str(uuid.uuid4())
    pipeline = Pipeline(cfg, f'--content_refresh_seconds={REFRESH_S}', '--redis_prefix=refresh',
                        '--consumer_group=refresh-test', '--start_offset=latest', name='refresh')
    client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
    try:
        pipeline.start()
        # The pipeline is live once a probe event on a known content shows up.
        with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT id::text FROM content WHERE slug = 'content-3'")
            known = cur.fetchone()[0]
        probe_window = None

        def live():
            nonlocal probe_window
            probe_window = insert_events(cfg, known, 1)
            return client.exists(f'refresh:stats:{probe_window}:{known}')
        assert wait_for(live, 180), f'pipeline not live; see {pipeline.log}'

        with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO content VALUES (%s, %s, 'Brand new show', 'podcast', 1200, now())",
                        (content_id, f'new-{content_id[:8]}'))
        window = insert_events(cfg, content_id, 3)
        stats = wait_for(lambda: client.hgetall(f'refresh:stats:{window}:{content_id}'), 30)
        assert stats.get('title') == 'Brand new show' and stats.get('content_type') == 'podcast'

        with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("UPDATE content SET title = 'Renamed show', content_type = 'video' WHERE id = %s",
                        (content_id,))
        renamed_at = time.monotonic()
        seen = None
        while time.monotonic() - renamed_at < REFRESH_S + 30:
            window = insert_events(cfg, content_id, 1)
            seen = client.hgetall(f'refresh:stats:{window}:{content_id}')
            if seen.get('title') == 'Renamed show':
                break
            time.sleep(0.5)
        assert seen.get('title') == 'Renamed show' and seen.get('content_type') == 'video', \
            f'the rename did not reach Redis within {REFRESH_S} s + 30 s; last stats {seen}'
        print(f'rename visible in Redis {time.monotonic() - renamed_at:.1f} s after the UPDATE '
              f'(refresh every {REFRESH_S} s)')
    finally:
        pipeline.stop()
        client.close()
