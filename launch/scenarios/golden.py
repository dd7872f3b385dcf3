"""The golden scenario (issue #6): one fixed set of events, content changes, late, too-late and bad records, derived
from --seed and replayed onto a fresh private stack on any runner; then a digest of every sink (golden_digest.py),
compared with what SQL computes and with another run's digest. Exit 0 when every part equals SQL (and the
--compare digest), else 1. The scenario step by step and the digest's parts: docs/operations.md#golden-scenario.

    python -m launch.scenarios.golden --runner DirectRunner --out prism.json
    python -m launch.scenarios.golden --runner FlinkRunner --compare prism.json   # exit 0: same digest, equal to SQL
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from launch.scenarios import generate
from launch.scenarios.golden_digest import (
    PREFIX,
    WINDOW_S,
    bq_rows,
    compare_with_sql,
    dead_letters,
    report,
    take_digest,
)
from launch.stack import config as stack_config

LATENESS_S = 60
REFRESH_S = 5
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

    def direct_valid_ids(self) -> set[int]:
        """The valid events sent to the raw topic (not into Postgres): the too-late ones."""
        return {e.id for e, _ in self.too_late}

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
    producer = KafkaProducer(**cfg.kafka_client_config(), acks='all')
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


# -- running -----------------------------------------------------------------------------------------------------

def start_pipeline(cfg, runner: str, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, '-m', 'pipelines.engagement', f'--runner={runner}', '--streaming',
         f'--kafka_bootstrap_servers={cfg.kafka_bootstrap}', f'--cdc_topic={cfg.events_topic}',
         f'--raw_topic={cfg.raw_topic}', f'--dead_letter_topic={cfg.dead_letter_topic}',
         f'--redis_url={cfg.redis_url}', f'--pg_dsn={cfg.pg_dsn}', f'--api_url={cfg.api_url}',
         f'--bq_endpoint={cfg.bq_endpoint}', f'--gcs_endpoint={cfg.gcs_endpoint}', f'--bq_project={cfg.bq_project}',
         f'--bq_dataset={cfg.bq_dataset}', f'--redis_prefix={PREFIX}', f'--consumer_group={GROUP}',
         f'--window_seconds={WINDOW_S}', f'--allowed_lateness_seconds={LATENESS_S}',
         f'--content_refresh_seconds={REFRESH_S}', *extra],
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
    from launch.stack.processes import stop_tree
    content_ids, renamed_id = catalogue(cfg)
    scenario = Scenario(args.seed, args.events, args.late, args.too_late, args.bad, content_ids, renamed_id)
    log = cfg.state_dir / f'pipeline-{runner}.log'
    t0 = time.monotonic()
    proc = start_pipeline(cfg, runner, log, *(['--flink_master=[cluster]'] if args.flink_cluster else []))
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
            diffs = compare_with_sql(cfg, base, scenario.direct_valid_ids(), scenario.expected_dead_letters())
            return not any(diffs.values())
        ok = wait_for('the sinks', done, proc, args.timeout, 3.0, log)
        say(f'  sinks {"equal SQL" if ok else "NOT equal to SQL"} after {time.monotonic() - t0:.0f} s')
        time.sleep(args.settle)            # anything still in flight (a repeated pane, a duplicate) lands now
    finally:
        say(f'  pipeline {stop_tree(proc, timeout=30)}')
    digest = take_digest(cfg, base)
    panes = collections.Counter(r['pane_timing'] for r in bq_rows(cfg, 'content_minute_stats_raw'))
    say(f'  panes written to BigQuery (informative, not in the digest): {dict(sorted(panes.items()))}')
    sql_diffs = compare_with_sql(cfg, base, scenario.direct_valid_ids(), scenario.expected_dead_letters(), digest)
    return digest, sql_diffs, base, scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.scenarios.golden', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runner', choices=('DirectRunner', 'FlinkRunner'), default='DirectRunner',
                        help='DirectRunner (Prism) or FlinkRunner (embedded); default DirectRunner')
    parser.add_argument('--flink-cluster', action='store_true',
                        help='with --runner FlinkRunner: start the stack with its Flink session cluster (--with '
                             'flink) and run the pipeline there (--flink_master=[cluster]) instead of embedded')
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

    from launch.stack.component import StackError
    from launch.stack.stack import Stack
    cfg = stack_config.private_config('engagement-golden-')
    if args.flink_cluster and args.runner != 'FlinkRunner':
        parser.error('--flink-cluster needs --runner FlinkRunner')
    stack = Stack(cfg, out=open(os.devnull, 'w'), with_=('flink',) if args.flink_cluster else ())
    where = ' (session cluster)' if args.flink_cluster else ''
    say(f'golden scenario on {args.runner}{where}, seed {args.seed}: private stack in {cfg.state_dir}')
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
