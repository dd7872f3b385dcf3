"""The golden scenario's digest without a stack: a difference between two digests is reported as (part, key, this,
other), and the report names each part's comparison with SQL and with the other digest."""
from __future__ import annotations

import io

from launch.scenarios import golden_digest


def test_differences_name_the_part_and_key():
    items = {'stats:0:a': {'events': '2'}, 'stats:10:b': {'events': '1'}}
    this = {'redis': {'items': items}}
    other = {'redis': {'items': {**items, 'stats:10:b': {'events': '3'}}}, 'api': {'items': {'1': True}}}
    assert golden_digest.differences(this, other) == [('redis', 'stats:10:b', {'events': '1'}, {'events': '3'}),
                                                ('api', '1', '<missing>', True)]


def test_report_prints_each_part_and_the_differences():
    digest = {p: {'sha256': '0' * 64, 'count': 0, 'items': {}} for p in golden_digest.PARTS}
    other = {**digest, 'api': {'sha256': '1' * 64, 'count': 1, 'items': {'5': True}}}
    sql = {p: [] for p in golden_digest.PARTS}
    out = io.StringIO()
    assert golden_digest.report(digest, {**sql, 'redis': ['stats (0, x): missing']}, other, out) == (False, False)
    text = out.getvalue()
    assert 'DIFF api 5: this "<missing>" vs other true' in text and 'DIFFERENT' in text
    assert 'SQL redis: stats (0, x): missing' in text and 'SQL does NOT match' in text
