"""Per-user recent engagement on the real stack (`--user_recent_contents`): after a `kill -9` of the pipeline
mid-stream and a restart that replays from the committed offsets, every user's recent contents and engagement
milliseconds per content type in Redis equal SQL (replayed events change nothing)."""
from __future__ import annotations

import threading
import time

import pytest

from launch.scenarios import generate, verify
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline

pytestmark = pytest.mark.integration
RECENT = 5


def test_per_user_keys_equal_sql_after_a_crash_and_replay():
    with private_stack() as stack:
        cfg = stack.cfg
        pipeline = Pipeline(cfg, f'--user_recent_contents={RECENT}', '--api_url=', '--bq_enabled=false',
                            name='users')
        try:
            pipeline.start()
            inserts = threading.Thread(target=generate.main, args=(
                ['--rate', '200', '--duration', '20', '--seed', '41', '--users', '50', *cfg.cli_flags()],))
            inserts.start()
            time.sleep(12)
            pipeline.kill9()
            pipeline.start()
            inserts.join()
            deadline, diffs = time.monotonic() + 180, ['not checked']
            while diffs and time.monotonic() < deadline:
                assert pipeline.alive(), f'pipeline exited; see {pipeline.log}'
                diffs = verify.verify_users(cfg, 'engagement', RECENT) + verify.verify(cfg, 60, 'engagement')
                time.sleep(0 if not diffs else 3)
            assert diffs == [], f'{len(diffs)} differences, e.g. {diffs[:3]}; see {pipeline.log}'
        finally:
            pipeline.stop()
