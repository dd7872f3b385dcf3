"""Reprocessing from a time (`--start_timestamp`) on the real stack: after the live pipeline counted a few windows,
every Redis window is deleted (`launch.tools.redis_windows --delete`) and a second pipeline in a consumer group of
its own rebuilds from a time inside a middle window. The windows from the one holding that time on equal SQL again;
the earlier ones stay absent (skipped, never partially counted); no event becomes a dead letter by the rebuild.
Windows of 20 s keep it short."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from launch.scenarios import generate, verify
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline
from tests.e2e.test_pipeline_e2e import read_dead_letters

WINDOW = 20
FLAGS = (f'--window_seconds={WINDOW}', '--api_url=', '--bq_enabled=false')

pytestmark = pytest.mark.integration


def exact_from(cfg, pipeline: Pipeline, since: int, timeout: float) -> list[str]:
    """Differences between Redis and SQL for the windows from `since` on, once there are none or time is up."""
    deadline = time.monotonic() + timeout
    diffs = ['not checked']
    while diffs and time.monotonic() < deadline:
        assert pipeline.alive(), f'{pipeline.name} exited; see {pipeline.log}'
        diffs = verify.verify(cfg, WINDOW, 'engagement', since_epoch=since) or (
            [] if stored_windows(cfg) else ['nothing written yet'])
        time.sleep(2 if diffs else 0)
    return diffs


def stored_windows(cfg) -> set[int]:
    stats, _, totals = verify.redis_state(cfg.redis_url, 'engagement', 0, cfg.redis_credentials())
    return {window for window, _ in stats} | set(totals)


def test_a_rebuild_from_a_time_recounts_exactly_the_windows_it_covers():
    with private_stack() as stack:
        cfg = stack.cfg
        live = Pipeline(cfg, *FLAGS, name='live')
        try:
            live.start()
            inserts = threading.Thread(target=generate.main, args=(
                ['--rate', '150', '--duration', '70', '--seed', '51', '--late-share', '0.03',
                 '--late-max-seconds', '30', *cfg.cli_flags()],))
            inserts.start()
            inserts.join()
            diffs = exact_from(cfg, live, 0, 180)
            assert diffs == [], f'{len(diffs)} differences before the rebuild, e.g. {diffs[:5]}'
        finally:
            live.stop()
        windows = sorted(stored_windows(cfg))
        assert len(windows) >= 3, windows
        middle = windows[len(windows) // 2]
        start = middle + WINDOW // 2 + 3                      # inside the middle window: it is recounted whole
        dead_before = len(read_dead_letters(cfg))

        tool = subprocess.run([sys.executable, '-m', 'launch.tools.redis_windows', '--delete'], capture_output=True,
                              text=True, env={**os.environ, **cfg.env()}, timeout=60)
        assert tool.returncode == 0 and f'deleted {len(windows)} windows' in tool.stdout, tool.stdout + tool.stderr
        assert stored_windows(cfg) == set()

        iso = datetime.fromtimestamp(start, timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
        rebuild = Pipeline(cfg, *FLAGS, '--consumer_group=rebuild', f'--start_timestamp={iso}', name='rebuild')
        try:
            rebuild.start()
            diffs = exact_from(cfg, rebuild, middle, 180)
            assert diffs == [], f'{len(diffs)} differences from {iso} on, e.g. {diffs[:5]}; see {rebuild.log}'
            time.sleep(5)  # anything it would write about earlier windows would be there by now
            assert min(stored_windows(cfg)) == middle, 'a window before the start time was written'
            assert verify.verify(cfg, WINDOW, 'engagement', since_epoch=middle) == []
            assert len(read_dead_letters(cfg)) == dead_before, 'the rebuild dead-lettered events'
        finally:
            rebuild.stop()
