"""The golden scenario's digest (launch/scenarios/golden.py): every part the sinks hold (Redis keys, BigQuery's views,
the REST API's received keys, the dead letters) read back as canonical JSON with a sha256 each, every time relative
to the scenario's base, leaving out what depends on the runner; compared with what SQL computes and with another
run's digest. The parts and what each leaves out: docs/operations.md#golden-scenario.
"""
from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import sys
from decimal import Decimal

from launch.scenarios import verify

WINDOW_S = 10          # the scenario's windows (--window_seconds), to compare Redis with SQL
PREFIX = 'golden'      # the scenario's --redis_prefix
# events_enriched columns that are not the runner's business: where Kafka put the record, when it was read.
RUNNER_DEPENDENT_EVENT_COLUMNS = {'ingest_ts', 'source_partition', 'source_offset', 'source_lsn', 'watermark_ms'}
RUNNER_DEPENDENT_STATS_COLUMNS = {'written_ts', 'pane_timing', 'pane_index', 'window_start_ts'}
PARTS = ('redis', 'bq_events', 'bq_stats', 'api', 'dead_letters')


def dead_letters(cfg) -> dict[str, dict]:
    """{'stage/reason': {'count', 'event_ids'}}, one per failure (a replay may write one twice: copies are counted
    once, by `connectors.dead_letters.failure_identity`, as the dead-letter tools count them)."""
    from launch.tools.dead_letters import distinct_failures, read_dead_letters
    out = collections.defaultdict(set)
    counts = collections.Counter()
    for *_, d in distinct_failures(read_dead_letters(cfg.kafka_client_config(), cfg.dead_letter_topic)):
        name = f"{d.get('stage')}/{d.get('reason')}"
        counts[name] += 1
        if d.get('event_id') is not None:
            out[name].add(int(d['event_id']))
    return {name: {'count': counts[name], 'event_ids': sorted(out[name])} for name in counts}


def api_keys(cfg) -> set[str]:
    import urllib.request
    with urllib.request.urlopen(f'{cfg.api_url}/v1/events/keys', timeout=30) as answer:
        return set(json.loads(answer.read())['keys'])


def _plain(value):
    if isinstance(value, Decimal):
        return str(value.normalize()) if value == value.to_integral_value() else str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def redis_part(cfg, base: int) -> dict:
    import redis
    client = redis.Redis.from_url(cfg.redis_url, decode_responses=True, **cfg.redis_credentials())
    out = {}
    try:
        for key in client.scan_iter(f'{PREFIX}:*', count=1000):
            parts = key.split(':')
            if len(parts) >= 3 and parts[2].lstrip('-').isdigit():
                parts[2] = str(int(parts[2]) - base)
            name = ':'.join(parts[1:])
            kind = client.type(key)
            if kind == 'hash':
                # pane_us is the sink's bookkeeping (wall-clock time a pane was received), not data.
                out[name] = dict(sorted((f, v) for f, v in client.hgetall(key).items() if f != 'pane_us'))
            elif kind == 'zset':
                out[name] = {m: _plain(s) for m, s in client.zrange(key, 0, -1, withscores=True)}
            elif kind == 'string':
                out[name] = client.get(key)
            else:
                out[name] = f'<{kind}>'
    finally:
        client.close()
    return dict(sorted(out.items()))


def bq_rows(cfg, view: str) -> list[dict]:
    from connectors.bigquery.clients import gcp_client
    client = gcp_client(cfg.bq_project, cfg.bq_endpoint)
    try:
        return [dict(r) for r in client.query(f'SELECT * FROM `{cfg.bq_project}.{cfg.bq_dataset}.{view}`').result()]
    finally:
        client.close()


def _offset_ms(value, base: int):
    if isinstance(value, dt.datetime):
        return round((value - dt.datetime.fromtimestamp(base, dt.timezone.utc)).total_seconds() * 1000)
    return value


def bq_events_part(cfg, base: int) -> dict:
    out = {}
    for row in bq_rows(cfg, 'events_enriched'):
        value = {}
        for col, v in sorted(row.items()):
            if col in RUNNER_DEPENDENT_EVENT_COLUMNS:
                continue
            if col == 'event_ts':
                col, v = 'event_ts_offset_ms', _offset_ms(v, base)
            if col == 'raw_payload' and isinstance(v, str):
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            value[col] = _plain(v)
        key = str(row['id'])
        out[key] = [out[key], value] if key in out else value   # a repeated id shows up as a difference
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def bq_stats_part(cfg, base: int) -> dict:
    out = {}
    for row in bq_rows(cfg, 'content_minute_stats'):
        value = {col: _plain(v) for col, v in sorted(row.items()) if col not in RUNNER_DEPENDENT_STATS_COLUMNS}
        value['window_start'] = int(row['window_start']) - base
        value['window_end'] = int(row['window_end']) - base
        key = f"{value['window_start']}:{row['content_id']}"
        out[key] = [out[key], value] if key in out else value
    return dict(sorted(out.items()))


def take_digest(cfg, base: int) -> dict:
    parts = {'redis': redis_part(cfg, base), 'bq_events': bq_events_part(cfg, base),
             'bq_stats': bq_stats_part(cfg, base), 'api': {k: True for k in sorted(api_keys(cfg), key=int)},
             'dead_letters': dict(sorted(dead_letters(cfg).items()))}
    return {name: {'sha256': hashlib.sha256(canonical(items).encode()).hexdigest(), 'count': len(items),
                   'items': items} for name, items in parts.items()}


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(',', ':'), default=str)


# -- ground truth ------------------------------------------------------------------------------------------------

def sql_event_rows(cfg) -> dict[int, dict]:
    import psycopg2
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        cur.execute('SELECT e.id, e.content_id::text, e.user_id::text, e.event_type, e.event_ts, e.duration_ms, '
                    'e.device, c.title, c.content_type FROM engagement_events e JOIN content c ON c.id = e.content_id')
        rows = {r[0]: dict(zip(('content_id', 'user_id', 'event_type', 'event_ts', 'duration_ms', 'device',
                                'content_title', 'content_type'), r[1:])) for r in cur.fetchall()}
    conn.close()
    return rows


def compare_with_sql(cfg, base: int, direct_valid: set[int], want_letters: dict[str, set],
                     digest: dict | None = None) -> dict[str, list[str]]:
    """Per part, the differences from what SQL says it must hold, given the valid events the scenario sent
    directly to the raw topic (`direct_valid`) and the dead letters it must have caused (`want_letters`)."""
    truth = verify.ground_truth(cfg.pg_dsn, WINDOW_S, 0)
    pg_rows = sql_event_rows(cfg)
    expected_ids = set(pg_rows) | direct_valid
    out = {'redis': verify.compare(truth, *verify.redis_state(cfg.redis_url, PREFIX, 0, cfg.redis_credentials()))}
    ids, stats = verify.bigquery_state(cfg, 0)
    bq = verify.compare_bigquery(truth, expected_ids, ids, stats)
    out['bq_stats'] = [d for d in bq if d.startswith('content_minute_stats')]
    out['bq_events'] = [d for d in bq if d.startswith('events_enriched')]
    if digest is not None:   # the content of each row, not only its id
        for key, row in digest['bq_events']['items'].items():
            want = pg_rows.get(int(key))
            if want is None or isinstance(row, list):
                continue
            want = dict(want, event_ts_offset_ms=_offset_ms(want.pop('event_ts'), base))
            for col, value in want.items():
                if row.get(col) != value:
                    out['bq_events'].append(f'events_enriched {key} {col}: BigQuery {row.get(col)!r} != SQL '
                                            f'{value!r}')
    have = {int(k) for k in api_keys(cfg)}
    out['api'] = ([f'api: {len(expected_ids - have)} event ids missing, e.g. {sorted(expected_ids - have)[:3]}']
                  if expected_ids - have else []) + \
                 ([f'api: {len(have - expected_ids)} unexpected keys, e.g. {sorted(have - expected_ids)[:3]}']
                  if have - expected_ids else [])
    letters = dead_letters(cfg)
    out['dead_letters'] = []
    for name in sorted(set(letters) | set(want_letters)):
        want_ids = want_letters.get(name, set())
        got = letters.get(name, {'count': 0, 'event_ids': []})
        if got['count'] != len(want_ids) or set(got['event_ids']) != want_ids:
            out['dead_letters'].append(f'dead letters {name}: {got["count"]} (ids {got["event_ids"][:5]}), '
                                       f'expected {len(want_ids)} (ids {sorted(want_ids)[:5]})')
    return out


def differences(this: dict, other: dict) -> list[tuple[str, str, object, object]]:
    """(part, key, this, other) for every item that differs between two digests."""
    out = []
    for part in PARTS:
        mine, theirs = this.get(part, {}).get('items', {}), other.get(part, {}).get('items', {})
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key, '<missing>') != theirs.get(key, '<missing>'):
                out.append((part, key, mine.get(key, '<missing>'), theirs.get(key, '<missing>')))
    return out


def report(digest: dict, sql_diffs: dict, other: dict | None, out=sys.stdout) -> tuple[bool, bool]:
    print(f'{"part":<13} {"items":>6}  sha256' + ('  vs other' if other else '') + '  vs SQL', file=out)
    for part in PARTS:
        line = f'{part:<13} {digest[part]["count"]:>6}  {digest[part]["sha256"][:16]}'
        if other:
            line += '  ' + ('same     ' if other.get(part, {}).get('sha256') == digest[part]['sha256'] else 'DIFFERENT')
        line += '  ' + ('equal' if not sql_diffs[part] else f'{len(sql_diffs[part])} differences')
        print(line, file=out)
    for part in PARTS:
        for d in sql_diffs[part][:10]:
            print(f'  SQL {part}: {d}', file=out)
    same = True
    if other is not None:
        diffs = differences(digest, other)
        same = not diffs
        for part, key, mine, theirs in diffs[:50]:
            print(f'  DIFF {part} {key}: this {canonical(mine)} vs other {canonical(theirs)}', file=out)
        if len(diffs) > 50:
            print(f'  ... {len(diffs) - 50} more differences', file=out)
    sql_ok = not any(sql_diffs.values())
    print(f'digest {"equals" if same else "DIFFERS from"} the other; ' if other is not None else '', end='', file=out)
    print(f'SQL {"matches" if sql_ok else "does NOT match"}', file=out, flush=True)
    return sql_ok, same
