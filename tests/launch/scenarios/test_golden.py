"""The golden scenario without a stack: it is a function of the seed, and the base time only shifts it."""
from __future__ import annotations

from launch.scenarios import golden

CONTENT = [f'00000000-0000-4000-8000-{i:012d}' for i in range(100)]


def records(seed: int, base: int) -> tuple:
    s = golden.Scenario(seed, 50, 10, 3, 8, CONTENT, CONTENT[7])
    on_time = [(e.content_id, e.user_id, e.event_type, round(e.event_ts.timestamp() * 1000) - base * 1000,
                e.duration_ms, e.device, e.raw_payload) for e in (s.at(base, item) for item in s.on_time)]
    return on_time, [(i, kind) for i, kind, _ in s.bad_records(base)], s.expected_dead_letters()


def test_the_scenario_is_a_function_of_the_seed_and_relative_to_the_base():
    assert records(6, 1_000_000_000) == records(6, 1_700_000_010)
    assert records(6, 1_000_000_000) != records(7, 1_000_000_000)
    on_time, bad, letters = records(6, 1_000_000_000)
    assert all(-10_000 <= t[3] < 20_000 for t in on_time)
    assert {kind for _, kind in bad} == {'malformed_json', 'missing_field', 'wrong_type', 'unknown_content'}
    assert letters['window/too_late'] == {golden.TOO_LATE_ID_BASE + i for i in range(3)}
    assert golden.PROBE_ID in letters['parse/malformed_json']
