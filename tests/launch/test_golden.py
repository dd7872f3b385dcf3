"""launch.golden without a stack: the scenario is a function of the seed (and the base time only shifts it), and a
difference between two digests is reported as (part, key, this, other)."""
from __future__ import annotations

import io

from launch import golden

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


def test_differences_name_the_part_and_key():
    items = {'stats:0:a': {'events': '2'}, 'stats:10:b': {'events': '1'}}
    this = {'redis': {'items': items}}
    other = {'redis': {'items': {**items, 'stats:10:b': {'events': '3'}}}, 'api': {'items': {'1': True}}}
    assert golden.differences(this, other) == [('redis', 'stats:10:b', {'events': '1'}, {'events': '3'}),
                                                ('api', '1', '<missing>', True)]


def test_report_prints_each_part_and_the_differences():
    digest = {p: {'sha256': '0' * 64, 'count': 0, 'items': {}} for p in golden.PARTS}
    other = {**digest, 'api': {'sha256': '1' * 64, 'count': 1, 'items': {'5': True}}}
    sql = {p: [] for p in golden.PARTS}
    out = io.StringIO()
    assert golden.report(digest, {**sql, 'redis': ['stats (0, x): missing']}, other, out) == (False, False)
    text = out.getvalue()
    assert 'DIFF api 5: this "<missing>" vs other true' in text and 'DIFFERENT' in text
    assert 'SQL redis: stats (0, x): missing' in text and 'SQL does NOT match' in text
