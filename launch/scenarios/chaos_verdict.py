"""The end of the fault scenario (launch/scenarios/chaos.py): wait until every sink equals SQL, redeliver the API
sink's dead letters, check the dead letters of the hostile traffic, and print the report."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Callable

from launch.scenarios import chaos_traffic, golden_digest, verify

PREFIX, WINDOW_S = 'chaos', 60


def say(line: str) -> None:
    print(f'[{time.strftime("%H:%M:%S")}] {line}', flush=True)


def wait_until(what: str, check: Callable[[], list[str]], pipeline, timeout: float) -> list[str]:
    """Call `check` (differences) until it returns none or `timeout` passes; the last differences."""
    deadline = time.monotonic() + timeout
    shown = time.monotonic()
    while True:
        pipeline.check()
        try:
            diffs = check()
        except Exception as exc:  # noqa: BLE001 - a sink not answering yet is a difference like any other
            diffs = [f'{what}: {type(exc).__name__}: {exc}']
        if not diffs or time.monotonic() > deadline:
            return diffs
        if time.monotonic() - shown > 30:
            say(f'  {what}: still {len(diffs)} differences, e.g. {diffs[0][:200]}')
            shown = time.monotonic()
        time.sleep(3)


def sql_ids(cfg) -> set[int]:
    import psycopg2
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        cur.execute('SELECT id FROM engagement_events')
        ids = {row[0] for row in cur.fetchall()}
    conn.close()
    return ids


def api_differences(cfg) -> list[str]:
    want, have = sql_ids(cfg), {int(k) for k in golden_digest.api_keys(cfg)}
    return ([f'api: {len(want - have)} events missing, e.g. {sorted(want - have)[:3]}'] if want - have else []) + \
           ([f'api: {len(have - want)} keys not in Postgres, e.g. {sorted(have - want)[:3]}'] if have - want else [])


def dead_letters(cfg) -> list[dict]:
    from launch.tools.dead_letters import distinct_failures, read_dead_letters
    return [record for *_, record in distinct_failures(read_dead_letters(cfg.kafka_client_config(),
                                                                         cfg.dead_letter_topic))]


def redeliver_api(cfg) -> str:
    done = subprocess.run([sys.executable, '-m', 'launch.tools.dead_letters', 'redeliver', '--stage', 'api'],
                          env={**os.environ, **cfg.env()}, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return f'exit {done.returncode}: ' + ' | '.join(lines[-3:])


def verdict(cfg, args, pipeline, hostile, recoveries, sent) -> int:
    results: dict[str, list[str]] = {}
    t0 = time.monotonic()
    results['redis'] = wait_until('redis', lambda: verify.verify(cfg, WINDOW_S, PREFIX), pipeline, args.timeout)
    say(f'redis vs SQL: {len(results["redis"])} differences after {time.monotonic() - t0:.0f} s')
    if args.bq_enabled:
        results['bigquery'] = wait_until('bigquery', lambda: verify.verify_bigquery(cfg, WINDOW_S), pipeline, 300)
        say(f'bigquery vs SQL: {len(results["bigquery"])} differences after {time.monotonic() - t0:.0f} s')
    if args.api_enabled:
        api_verdict(cfg, pipeline, results)
    return report(cfg, args, pipeline, hostile, recoveries, sent, results)


def api_verdict(cfg, pipeline, results: dict[str, list[str]]) -> None:
    """Wait until every event is at the API or in its dead letters, redeliver those (the operator's command),
    then the API's keys must be the Postgres ids."""
    ids = sql_ids(cfg)

    def accounted() -> list[str]:
        held = {int(k) for k in golden_digest.api_keys(cfg)}
        lettered = {int(d['event_id']) for d in dead_letters(cfg) if d.get('stage') == 'api'}
        missing = ids - held - lettered
        return [f'api: {len(missing)} events neither delivered nor dead-lettered'] if missing else []
    wait_until('api', accounted, pipeline, 300)
    say(f'redelivering the API sink\'s dead letters: {redeliver_api(cfg)}')
    results['api'] = api_differences(cfg)


def report(cfg, args, pipeline, hostile, recoveries, sent, results) -> int:
    """The dead letters of the hostile traffic, then the report: recovery per fault, a line per part."""
    letters = dead_letters(cfg)
    results['dead_letters'] = wait_until('dead letters', lambda: chaos_traffic.check_dead_letters(
        dead_letters(cfg), hostile.expected), pipeline, 120)
    results['traffic'] = sent['failed_sends'][:5] + (
        [f'{sent["pending"]} records never acknowledged'] if sent['pending'] else [])
    results['pipeline'] = [f'exited by itself {len(pipeline.unexpected_exits)} times'] if pipeline.unexpected_exits \
        else []
    by_reason: dict[str, int] = {}
    for letter in letters:
        name = f'{letter.get("stage")}/{letter.get("reason")}'
        by_reason[name] = by_reason.get(name, 0) + 1
    say(f'per fault: how long the component was out (from the fault to its restart or clearing done), and the '
        f'time from then until the reader\'s lag was under {args.recovered_lag:g} s of traffic and events were '
        'counted again:')
    for r in recoveries:
        print(f'    {r.fault:<9} out {r.out_s:6.1f} s (restart {r.restart_s:5.1f} s)   recovered in '
              + (f'{r.recovered_s:5.1f} s' if r.recovered_s is not None else 'NEVER'), flush=True)
    say(f'{len(sql_ids(cfg)):,} events in Postgres; dead letters (each failure once): '
        + ', '.join(f'{k} {v:,}' for k, v in sorted(by_reason.items())))
    ok = not any(results.values()) and all(r.recovered_s is not None for r in recoveries)
    for part, diffs in results.items():
        print(f'    {part:<13} ' + ('exact' if not diffs else f'{len(diffs)} differences, e.g. {diffs[:3]}'),
              flush=True)
    say('ALL EXACT' if ok else 'NOT EXACT')
    return 0 if ok else 1
