"""The golden scenario: one fixed set of events, content changes, late, too-late and bad records, replayed onto a
fresh private stack, run on any runner; prints a digest of every Redis key, the BigQuery views, the REST API's
received keys and the dead letters, and compares each with what SQL computes (and with another run's digest).

    python -m launch.golden --runner DirectRunner --out prism.json
    python -m launch.golden --runner FlinkRunner --compare prism.json     # exit 0: same digest and equal to SQL

The scenario (all of it derived from --seed; only the base time comes from the clock, and every time in the
digest is relative to it: `base` is a window boundary, window starts and event times are written as offsets):

  1. a fresh private stack on free ports (fresh Postgres: the BIGSERIAL event ids are 1, 2, ... in insert order);
     the pipeline starts with --window_seconds 10, --allowed_lateness_seconds 60, --content_refresh_seconds 5;
  2. a probe: one malformed record on the raw topic (id PROBE_ID); its dead letter shows the pipeline is reading;
  3. content changes: a new content (NEW_CONTENT_ID) is inserted and an existing one (RENAMED_SLUG) renamed, then
     the scenario waits longer than the refresh interval, so every event sees the new catalogue;
  4. on-time events: --events rows inserted into Postgres in one transaction, event_ts in [base-10 s, base+20 s),
     on 30 contents of the catalogue plus the new and the renamed one; --bad bad records (malformed JSON,
     missing fields, wrong types, unknown content, `launch.generate`'s kinds) on the raw topic with fixed ids;
  5. once the watermark has passed base+20 s (wall clock >= base + 25 s): --late rows into Postgres stamped in
     [base-10 s, base+10 s) (windows that have closed, still within the lateness: late panes), and --too-late
     valid events on the raw topic stamped base-200 s (far beyond window end + lateness: dead letters `too_late`;
     they are enriched, so the API and BigQuery's events_enriched receive them too, as the pipeline is built);
  6. the pipeline runs until Redis equals SQL, BigQuery's views equal SQL, the API holds every event and every
     expected dead letter is on the topic; then it is stopped and the digest is taken.

Digest parts (canonical JSON, sha256 each): `redis` (every key under the prefix with its value; window starts
as offsets from base; TTLs left out), `bq_events` (events_enriched without the columns that depend on Kafka
partitioning, ingest time, LSN or the watermark), `bq_stats` (content_minute_stats without written_ts and pane
fields), `api` (the set of idempotency keys the receiver holds), `dead_letters` (count and event ids per
stage/reason, one per source record). Exit 0 when every part equals SQL (and the --compare digest), else 1.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from launch import config as stack_config
from launch import generate, verify

WINDOW_S = 10
LATENESS_S = 60
REFRESH_S = 5
PREFIX = 'golden'
GROUP = 'golden-pipeline'
PROBE_ID = 800_000_000_000_000
BAD_ID_BASE = 800_000_000_000_100
TOO_LATE_ID_BASE = 900_000_000_000_000
NEW_CONTENT_ID = '00000000-0000-4000-8000-00000000901d'
NEW_CONTENT = (NEW_CONTENT_ID, 'golden-new-show', 'Golden new show', 'podcast', 1800)
RENAMED_SLUG = 'content-7'
RENAMED_TITLE = 'Golden renamed show'
BAD_STAGE = {'malformed_json': 'parse', 'missing_field': 'parse', 'wrong_type': 'parse',
             'unknown_content': 'enrich'}
# events_enriched columns that are not the runner's business: where Kafka put the record, when it was read.
RUNNER_DEPENDENT_EVENT_COLUMNS = {'ingest_ts', 'source_partition', 'source_offset', 'source_lsn', 'watermark_ms'}
RUNNER_DEPENDENT_STATS_COLUMNS = {'written_ts', 'pane_timing', 'pane_index', 'window_start_ts'}
PARTS = ('redis', 'bq_events', 'bq_stats', 'api', 'dead_letters')


def say(line: str) -> None:
    print(line, flush=True)


# -- the scenario ------------------------------------------------------------------------------------------------

class Scenario:
    """Every record of the scenario, from the seed; times are offsets (ms) from the base, bound late."""

    def __init__(self, seed: int, events: int, late: int, too_late: int, bad: int, content_ids: list[str],
                 renamed_id: str):
        rng = random.Random(seed)
        picked = rng.sample(sorted(c for c in content_ids if c != renamed_id), 30)
        hot = picked + [NEW_CONTENT_ID, renamed_id]
        # The factory draws type, duration, device, payload, user; we draw the content and the time ourselves.
        self.factory = generate.EventFactory(hot, users=200, late_share=0.0, late_max_s=1, seed=seed + 1)
        self.on_time = [self._event(rng, hot, -WINDOW_S * 1000, 2 * WINDOW_S * 1000) for _ in range(events)]
        self.late = [self._event(rng, hot, -WINDOW_S * 1000, WINDOW_S * 1000) for _ in range(late)]
        self.too_late = [self._event(rng, picked, -200_000, -199_000, TOO_LATE_ID_BASE + i) for i in range(too_late)]
        self.bad = []   # (id, kind, offset_ms, event) -- the bytes are made once the base is known
        for i in range(bad):
            kind = generate.BAD_KINDS[i % len(generate.BAD_KINDS)]
            self.bad.append((BAD_ID_BASE + i, kind, self._event(rng, picked, 0, 2 * WINDOW_S * 1000,
                                                               BAD_ID_BASE + i)))
        self.bad_seed = seed + 2

    def _event(self, rng, contents, low_ms, high_ms, event_id=None):
        e = self.factory.make(dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), event_id)
        e.content_id = rng.choice(contents)
        return e, rng.randrange(low_ms, high_ms)

    @staticmethod
    def at(base: int, item) -> generate.Event:
        e, offset_ms = item
        e.event_ts = dt.datetime.fromtimestamp(base, dt.timezone.utc) + dt.timedelta(milliseconds=offset_ms)
        return e

    def bad_records(self, base: int) -> list[tuple[int, str, bytes]]:
        rng = random.Random(self.bad_seed)
        return [(i, kind, generate.make_bad(kind, self.at(base, item), rng)) for i, kind, item in self.bad]

    def expected_dead_letters(self) -> dict[str, set]:
        want = collections.defaultdict(set)
        want['parse/malformed_json'].add(PROBE_ID)
        for i, kind, _ in self.bad:
            want[f'{BAD_STAGE[kind]}/{kind}'].add(i)
        for e, _ in self.too_late:
            want['window/too_late'].add(e.id)
        return dict(want)


def insert_events(cfg, events: list[generate.Event]) -> None:
    """In order, in one transaction: the BIGSERIAL ids follow the list."""
    import psycopg2
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        cur.executemany('INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, '
                        'device, raw_payload) VALUES (%s, %s, %s, %s, %s, %s, %s)',
                        [(e.content_id, e.user_id, e.event_type, e.event_ts, e.duration_ms, e.device,
                          json.dumps(e.raw_payload, sort_keys=True)) for e in events])
    conn.close()


def send_raw(cfg, records: list[tuple[int, bytes]]) -> None:
    from kafka import KafkaProducer
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks='all')
    try:
        for key, value in records:
            producer.send(cfg.raw_topic, key=str(key).encode(), value=value)
        producer.flush()
    finally:
        producer.close()


def change_content(cfg) -> str:
    """Insert the new content, rename RENAMED_SLUG; returns the renamed content's id."""
    import psycopg2
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        cur.execute('INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts) '
                    "VALUES (%s, %s, %s, %s, %s, TIMESTAMPTZ '2026-06-01 00:00:00+00') ON CONFLICT DO NOTHING",
                    NEW_CONTENT)
        cur.execute('UPDATE content SET title = %s WHERE slug = %s RETURNING id::text', (RENAMED_TITLE, RENAMED_SLUG))
        renamed = cur.fetchone()[0]
    conn.close()
    return renamed


def catalogue(cfg) -> tuple[list[str], str]:
    import psycopg2
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id::text FROM content WHERE slug LIKE 'content-%%' ORDER BY slug")
        ids = [r[0] for r in cur.fetchall()]
        cur.execute('SELECT id::text FROM content WHERE slug = %s', (RENAMED_SLUG,))
        renamed = cur.fetchone()[0]
    conn.close()
    return ids, renamed


# -- reading the sinks -------------------------------------------------------------------------------------------

def dead_letters(cfg) -> dict[str, dict]:
    """{'stage/reason': {'count', 'event_ids'}}, one per source record (a replay may write one twice)."""
    from launch.dead_letters import read_dead_letters
    seen, out = set(), collections.defaultdict(set)
    counts = collections.Counter()
    for _, _, _, d in read_dead_letters(cfg.kafka_bootstrap, cfg.dead_letter_topic):
        key = (d.get('stage'), d.get('reason'), d.get('source_topic'), d.get('source_partition'),
               d.get('source_offset'), d.get('event_id'))
        if key in seen:
            continue
        seen.add(key)
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
    client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
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


def _bq_rows(cfg, view: str) -> list[dict]:
    from connectors.bigquery import gcp_client
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
    for row in _bq_rows(cfg, 'events_enriched'):
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
    for row in _bq_rows(cfg, 'content_minute_stats'):
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


def compare_with_sql(cfg, scenario: Scenario, base: int, digest: dict | None = None) -> dict[str, list[str]]:
    """Per part, the differences from what SQL (and the scenario's raw-topic records) say it must hold."""
    truth = verify.ground_truth(cfg.pg_dsn, WINDOW_S, 0)
    pg_rows = sql_event_rows(cfg)
    direct_valid = {e.id for e, _ in scenario.too_late}
    expected_ids = set(pg_rows) | direct_valid
    out = {'redis': verify.compare(truth, *verify.redis_state(cfg.redis_url, PREFIX, 0))}
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
    want_letters = scenario.expected_dead_letters()
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


# -- running -----------------------------------------------------------------------------------------------------

def start_pipeline(cfg, runner: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, '-m', 'pipelines.engagement', f'--runner={runner}', '--streaming',
         f'--kafka_bootstrap_servers={cfg.kafka_bootstrap}', f'--cdc_topic={cfg.events_topic}',
         f'--raw_topic={cfg.raw_topic}', f'--dead_letter_topic={cfg.dead_letter_topic}',
         f'--redis_url={cfg.redis_url}', f'--pg_dsn={cfg.pg_dsn}', f'--api_url={cfg.api_url}',
         f'--bq_endpoint={cfg.bq_endpoint}', f'--gcs_endpoint={cfg.gcs_endpoint}', f'--bq_project={cfg.bq_project}',
         f'--bq_dataset={cfg.bq_dataset}', f'--redis_prefix={PREFIX}', f'--consumer_group={GROUP}',
         f'--window_seconds={WINDOW_S}', f'--allowed_lateness_seconds={LATENESS_S}',
         f'--content_refresh_seconds={REFRESH_S}'],
        stdout=open(log, 'wb'), stderr=subprocess.STDOUT, env={**os.environ, **cfg.env()})


def wait_for(what: str, check, proc: subprocess.Popen, timeout: float, step: float = 1.0, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f'the pipeline exited (code {proc.returncode}) while waiting for {what}; see {log}')
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def run_scenario(cfg, runner: str, args) -> tuple[dict, dict, int, Scenario]:
    """Runs the scenario on a started stack; returns (digest, SQL differences per part, base, scenario)."""
    from launch.stack import stop_tree
    content_ids, renamed_id = catalogue(cfg)
    scenario = Scenario(args.seed, args.events, args.late, args.too_late, args.bad, content_ids, renamed_id)
    log = cfg.state_dir / f'pipeline-{runner}.log'
    t0 = time.monotonic()
    proc = start_pipeline(cfg, runner, log)
    try:
        send_raw(cfg, [(PROBE_ID, b'{"id": ' + str(PROBE_ID).encode() + b', "golden": "probe"')])
        if not wait_for('the probe', lambda: 'parse/malformed_json' in dead_letters(cfg), proc, args.start_timeout,
                        2.0, log):
            raise RuntimeError(f'the pipeline did not read the probe within {args.start_timeout} s; see {log}')
        say(f'  pipeline reading after {time.monotonic() - t0:.0f} s (log {log})')
        change_content(cfg)
        time.sleep(REFRESH_S + 3)          # every event below sees the new catalogue, whatever the refresh phase
        base = (int(time.time()) // WINDOW_S + 1) * WINDOW_S
        insert_events(cfg, [scenario.at(base, item) for item in scenario.on_time])
        send_raw(cfg, [(i, value) for i, _, value in scenario.bad_records(base)])
        say(f'  base {base}: {len(scenario.on_time)} events into Postgres, {len(scenario.bad)} bad records onto '
            f'{cfg.raw_topic}')
        time.sleep(max(0.0, base + 2 * WINDOW_S + 5 - time.time()))
        insert_events(cfg, [scenario.at(base, item) for item in scenario.late])
        send_raw(cfg, [(e.id, json.dumps(scenario.at(base, (e, off)).as_json()).encode())
                       for e, off in scenario.too_late])
        say(f'  {len(scenario.late)} late events into Postgres, {len(scenario.too_late)} too-late events onto '
            f'{cfg.raw_topic}')

        def done():
            diffs = compare_with_sql(cfg, scenario, base)
            return not any(diffs.values())
        ok = wait_for('the sinks', done, proc, args.timeout, 3.0, log)
        say(f'  sinks {"equal SQL" if ok else "NOT equal to SQL"} after {time.monotonic() - t0:.0f} s')
        time.sleep(args.settle)            # anything still in flight (a repeated pane, a duplicate) lands now
    finally:
        say(f'  pipeline {stop_tree(proc, timeout=30)}')
    digest = take_digest(cfg, base)
    panes = collections.Counter(r['pane_timing'] for r in _bq_rows(cfg, 'content_minute_stats_raw'))
    say(f'  panes written to BigQuery (informative, not in the digest): {dict(sorted(panes.items()))}')
    return digest, compare_with_sql(cfg, scenario, base, digest), base, scenario


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.golden', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runner', choices=('DirectRunner', 'FlinkRunner'), default='DirectRunner',
                        help='DirectRunner (Prism) or FlinkRunner (embedded); default DirectRunner')
    parser.add_argument('--out', help='write the digest (with every item) as JSON to this file')
    parser.add_argument('--compare', help='a digest file from another run: print the differences')
    parser.add_argument('--keep-stack', action='store_true', help='leave the private stack up (and its state)')
    parser.add_argument('--seed', type=int, default=6, help='the scenario is a function of it (default 6)')
    parser.add_argument('--events', type=int, default=600, help='on-time events into Postgres (default 600)')
    parser.add_argument('--late', type=int, default=60, help='late events within the lateness (default 60)')
    parser.add_argument('--too-late', type=int, default=6, help='events beyond the lateness (default 6)')
    parser.add_argument('--bad', type=int, default=24, help='bad records onto the raw topic (default 24)')
    parser.add_argument('--start-timeout', type=float, default=240, help='seconds for the pipeline to start')
    parser.add_argument('--timeout', type=float, default=240, help='seconds for the sinks to equal SQL')
    parser.add_argument('--settle', type=float, default=3, help='seconds to wait after that before the digest')
    args = parser.parse_args(argv)
    other = json.loads(Path(args.compare).read_text()) if args.compare else None

    from launch.stack import Stack, StackError
    cfg = stack_config.private_config('engagement-golden-')
    stack = Stack(cfg, out=open(os.devnull, 'w'))
    say(f'golden scenario on {args.runner}, seed {args.seed}: private stack in {cfg.state_dir}')
    try:
        t0 = time.monotonic()
        stack.up()
        say(f'  stack up in {time.monotonic() - t0:.0f} s')
        digest, sql_diffs, base, _ = run_scenario(cfg, args.runner, args)
    except (RuntimeError, stack_config.ConfigError, StackError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    finally:
        if args.keep_stack:
            say(f'stack kept: python -m launch.stack down --purge {" ".join(cfg.cli_flags())}')
        else:
            stack.down(purge=True)
    if args.out:
        Path(args.out).write_text(json.dumps({'runner': args.runner, 'seed': args.seed, 'base': base,
                                              'sql_differences': sql_diffs, **digest}, indent=1, sort_keys=True,
                                             default=str))
    sql_ok, same = report(digest, sql_diffs, other)
    return 0 if sql_ok and same else 1


if __name__ == '__main__':
    sys.exit(main())
