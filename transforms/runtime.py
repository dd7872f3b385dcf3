"""Settings of the worker process that the pipeline's DoFns apply in `setup()` (they run where the work runs: the
driver's loopback worker on Prism, the SDK harness processes on Flink and Dataflow).

    tune_garbage_collector(100_000)

Python's cyclic garbage collector runs a young-generation pass every 700 allocations net of frees by default. A
worker handling tens of thousands of events a second allocates millions of short-lived objects (JSON documents,
events, their dicts), almost none in reference cycles (they are freed by reference counting), and each pass walks
every young object that is still alive, such as a bundle's partial counts. On a 300k-event backlog that was about a
quarter of the worker's CPU: 12.8-12.9 CPU-s with the default, 9.6-9.8 with a threshold of 100,000
(docs/benchmarks.md, 2026-12-05). Cycles are still collected, only less often.
"""
from __future__ import annotations

import gc
import json
import logging

_LOG = logging.getLogger(__name__)
_applied: list[int] = []


def tune_garbage_collector(threshold: int) -> None:
    """Collect the young generation every `threshold` net allocations (0: leave Python's settings); once per
    process, whichever DoFn asks first."""
    if threshold <= 0 or _applied:
        return
    before = gc.get_threshold()
    gc.set_threshold(threshold, 50, 1000)
    _applied.append(threshold)
    _LOG.info(json.dumps({'event': 'gc_threshold_set', 'threshold': gc.get_threshold(), 'was': before}))
