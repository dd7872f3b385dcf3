"""The worker's garbage-collector setting: applied once per process, 0 leaves Python's own."""
import gc

from transforms import runtime


def test_threshold_is_set_once_and_zero_leaves_python_alone(monkeypatch):
    saved = gc.get_threshold()
    monkeypatch.setattr(runtime, '_applied', [])
    try:
        runtime.tune_garbage_collector(0)
        assert gc.get_threshold() == saved
        runtime.tune_garbage_collector(123_456)
        assert gc.get_threshold()[0] == 123_456
        runtime.tune_garbage_collector(7_000)   # a second DoFn asking: the first setting stays
        assert gc.get_threshold()[0] == 123_456
    finally:
        gc.set_threshold(*saved)
