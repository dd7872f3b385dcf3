"""What `redrive` sends for one dead letter (the Kafka round trip: tests/e2e/test_redrive.py)."""
from __future__ import annotations

import base64
import datetime
import json

import pytest

from launch.tools.redrive import Redrive, window_final
from schemas.dead_letter import DeadLetter

NOW = datetime.datetime(2026, 12, 5, 12, 0, 30, tzinfo=datetime.timezone.utc)
EVENT = {'id': 5, 'content_id': '6512bd43-d9ca-a6e0-2d8f-9b4c8b5c2a11',
         'user_id': 'c4ca4238-a0b9-2382-0dcc-509a6f75849b', 'event_type': 'play',
         'event_ts': '2026-12-05T11:59:10+00:00', 'duration_ms': 1000, 'device': 'web',
         'raw_payload': None, 'source': 'direct', 'source_topic': 'raw', 'source_partition': 0, 'source_offset': 9}


def letter(**fields) -> DeadLetter:
    return DeadLetter(**{'payload': json.dumps(EVENT), 'stage': 'enrich', 'reason': 'unknown_content', 'error': 'e',
                         'first_failed_ts': NOW, 'last_failed_ts': NOW, 'event_id': 5, 'source_topic': 'raw',
                         'source_partition': 0, 'source_offset': 9, **fields})


def redrive(stage: str, lateness_s: int = 600) -> Redrive:
    return Redrive({}, 'dead', 'raw', stage, window_s=60, lateness_s=lateness_s)


@pytest.mark.parametrize('ts, lateness, final', [('2026-12-05T11:59:10Z', 0, True),
                                                 ('2026-12-05T11:59:10Z', 31, False),
                                                 ('2026-12-05T12:00:01Z', 0, False)])
def test_a_window_is_final_once_its_end_and_lateness_passed(ts, lateness, final):
    when = datetime.datetime.fromisoformat(ts.replace('Z', '+00:00'))
    assert window_final(when, 60, lateness, NOW) is final


def test_an_enrich_failure_is_sent_as_its_event_once_and_only_while_its_window_takes_events():
    run = redrive('enrich')
    key, value = run._payload(letter(), NOW)
    sent = json.loads(value)
    assert key == b'5' and sent['id'] == 5 and sent['event_ts'] == '2026-12-05T11:59:10Z' and 'source' not in sent
    assert run._payload(letter(source_offset=10), NOW) is None and run.counts.repeated == 1  # same event again
    assert redrive('enrich', lateness_s=0)._payload(letter(), NOW) is None


def test_a_parse_failure_is_sent_as_its_original_bytes_when_it_came_from_the_raw_topic():
    run = redrive('parse')
    raw = b'\xff{"id": 1'
    bad = letter(stage='parse', reason='malformed_json', payload=base64.b64encode(raw).decode(),
                 payload_encoding='base64', key=base64.b64encode(b'k').decode())
    assert run._payload(bad, NOW) == (b'k', raw)
    assert run._payload(letter(stage='parse', source_topic='engagement.public.engagement_events'), NOW) is None
    assert run.counts.from_cdc == 1


def test_a_stage_that_cannot_be_redriven_is_refused():
    with pytest.raises(ValueError, match="--stage='api'"):
        redrive('api')


def test_a_bigquery_failure_goes_back_to_its_table_with_the_sinks_insert_id_and_a_refusal_holds_the_commits():
    calls = []

    def insert(table, rows, row_ids):
        calls.append((table, rows, row_ids))
        return [{'index': 0, 'errors': ['still wrong']}] if len(calls) > 1 else []
    run = Redrive({}, 'dead', 'raw', 'bigquery', window_s=60, lateness_s=600, bigquery=insert)
    row = {**EVENT, 'content_title': 'T', 'content_type': 'video'}
    bad = letter(stage='bigquery', reason='bigquery_rejected', payload=json.dumps(row),
                 error='events_enriched_raw: no such field: x')
    table_row = run._payload(bad, NOW)
    assert table_row == ('events_enriched_raw', row)
    assert run._insert([table_row]) is True and calls[0] == ('events_enriched_raw', [row], ['5'])
    run.counts.sent = 1
    assert run._insert([table_row]) is False and run.counts.rejected == 1 and run.counts.sent == 0
    with pytest.raises(ValueError, match='no table of ours'):
        run._payload(letter(stage='bigquery', error='somewhere: else'), NOW)


def test_a_selection_keeps_the_named_content_reason_and_time_and_commits_only_under_a_group_of_its_own():
    content = EVENT['content_id']
    run = Redrive({}, 'dead', 'raw', 'enrich', window_s=60, lateness_s=600, content_ids=frozenset({content}),
                  reasons=frozenset({'unknown_content'}), since=NOW - datetime.timedelta(minutes=5))
    assert run._selected(letter())
    assert not run._selected(letter(payload=json.dumps({**EVENT, 'content_id': 'another'})))
    assert not run._selected(letter(reason='content_lookup_failed'))
    assert not run._selected(letter(last_failed_ts=NOW - datetime.timedelta(hours=1)))
    assert not run._selected(letter(payload=base64.b64encode(b'\xff').decode(), payload_encoding='base64'))
    assert not run.commit and any('nothing committed' in line for line in run.report())
    assert Redrive({}, 'dead', 'raw', 'enrich', window_s=60, lateness_s=600, group='mine',
                   content_ids=frozenset({content})).commit
    assert redrive('enrich').commit and not redrive('enrich').selective
