"""Compare what the pipeline wrote to Redis with what SQL computes from Postgres, key by key.

    python -m launch.scenarios.verify [--window-seconds 60] [--redis-prefix engagement] [--since-minutes 60] \
        [--bigquery]

Ground truth is computed independently of the pipeline: `GROUP BY content_id, window` over `engagement_events`
joined with `content`. Every `stats` hash, `top` ZSET and `totals` hash of the data model (docs/pipeline.md)
must equal it exactly, and Redis must hold no window/content that SQL does not. Prints the differences (at most 20)
and exits 1 when there are any. Events that reached Kafka without Postgres (`launch.scenarios.generate --direct`)
are not in the ground truth: verify runs without valid direct events, or accounts for them. With `--bigquery`, the
BigQuery views are compared too: `events_enriched` must hold exactly one row per event id in Postgres,
`content_minute_stats` one row per (window, content) equal to SQL.
"""
from __future__ import annotations

import argparse
import collections
import sys
from decimal import Decimal

from connectors.credentials import redis_credentials
from launch.stack import config as stack_config

TYPES = ('play', 'pause', 'finish', 'click')


def ground_truth(dsn: str, window_seconds: int, since_epoch: int) -> dict:
    """{(window_start, content_id): {field: value}} from SQL."""
    import psycopg2
    sql = f"""
        SELECT (floor(extract(epoch FROM e.event_ts) / %(w)s) * %(w)s)::bigint AS window_start,
               e.content_id::text, count(*),
               {', '.join(f"count(*) FILTER (WHERE e.event_type = '{t}')" for t in TYPES)},
               coalesce(sum(e.duration_ms), 0), c.title, c.content_type
        FROM engagement_events e JOIN content c ON c.id = e.content_id
        WHERE e.event_ts >= to_timestamp(%(since)s)
        GROUP BY 1, 2, c.title, c.content_type"""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, {'w': window_seconds, 'since': since_epoch})
        out = {}
        for window, content_id, events, play, pause, finish, click, ms, title, content_type in cur.fetchall():
            out[(int(window), content_id)] = {
                'events': events, 'play': play, 'pause': pause, 'finish': finish, 'click': click,
                'engagement_seconds': Decimal(ms) / 1000, 'title': title, 'content_type': content_type}
        return out


def redis_state(redis_url: str, prefix: str, since_epoch: int,
                credentials: dict | None = None) -> tuple[dict, dict, dict]:
    """(stats, tops, totals) as stored, for windows starting at or after since_epoch."""
    import redis
    credentials = redis_credentials() if credentials is None else credentials  # default: the REDIS_* variables
    client = redis.Redis.from_url(redis_url, decode_responses=True, **credentials)
    stats, tops, totals = {}, {}, {}
    try:
        for key in client.scan_iter(f'{prefix}:*', count=1000):
            parts = key[len(prefix) + 1:].split(':')
            if parts[0] not in ('stats', 'top', 'totals'):  # the alerts stream, alerted markers: not windows
                continue
            kind, window = parts[0], int(parts[1])
            if window < since_epoch:
                continue
            if kind == 'stats':
                stats[(window, parts[2])] = client.hgetall(key)
            elif kind == 'top':
                tops[(window, parts[2])] = {m: int(s) for m, s in client.zrange(key, 0, -1, withscores=True)}
            elif kind == 'totals':
                totals[window] = {k: int(v) for k, v in client.hgetall(key).items()}
    finally:
        client.close()
    return stats, tops, totals


def expected_totals(truth: dict) -> dict:
    """{window_start: {field: n}}: the `totals` hashes the ground truth implies (zero fields left out)."""
    want: dict = collections.defaultdict(collections.Counter)
    for (window, _), row in truth.items():
        want[window].update({k: row[k] for k in ('events', *TYPES)})
    return {window: {k: v for k, v in counts.items() if v} for window, counts in want.items()}


def redis_totals(client, prefix: str, windows) -> dict:
    """{window_start: {field: n}} of the `totals` hashes of `windows`, in one round trip (`client`: redis.Redis);
    a cheap first check before the key-by-key comparison of `redis_state`."""
    pipe = client.pipeline(transaction=False)
    windows = list(windows)
    for window in windows:
        pipe.hgetall(f'{prefix}:totals:{window}')
    return {window: {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in found.items() if int(v)}
            for window, found in zip(windows, pipe.execute())}


def compare(truth: dict, stats: dict, tops: dict, totals: dict) -> list[str]:
    """Every difference between the ground truth and Redis, as readable lines."""
    diffs = []
    for key in sorted(set(truth) | set(stats)):
        want, have = truth.get(key), stats.get(key)
        if have is None:
            diffs.append(f'stats {key}: missing in Redis, SQL has {want["events"]} events')
            continue
        if want is None:
            diffs.append(f'stats {key}: in Redis ({have.get("events")} events) but not in SQL')
            continue
        for field, value in want.items():
            got = have.get(field)
            same = (Decimal(got) == value) if field == 'engagement_seconds' and got is not None else \
                str(got) == str(value)
            if not same:
                diffs.append(f'stats {key} {field}: Redis {got!r} != SQL {value!r}')
    want_tops: dict = collections.defaultdict(dict)
    for (window, content_id), row in truth.items():
        for group in (row['content_type'], 'all'):
            want_tops[(window, group)][content_id] = row['events']
    want_totals = expected_totals(truth)
    for key in sorted(set(want_tops) | set(tops)):
        if want_tops.get(key, {}) != tops.get(key, {}):
            diffs.append(f'top {key}: Redis has {len(tops.get(key, {}))} members, SQL {len(want_tops.get(key, {}))};'
                         f' first differences: '
                         + str(sorted(set(want_tops.get(key, {}).items()) ^ set(tops.get(key, {}).items()))[:3]))
    for window in sorted(set(want_totals) | set(totals)):
        want = {k: v for k, v in want_totals.get(window, {}).items() if v}
        have = {k: v for k, v in totals.get(window, {}).items() if v}
        if want != have:
            diffs.append(f'totals {window}: Redis {have} != SQL {want}')
    return diffs


def verify(cfg: stack_config.StackConfig, window_seconds: int, prefix: str, since_epoch: int = 0) -> list[str]:
    truth = ground_truth(cfg.pg_dsn, window_seconds, since_epoch)
    return compare(truth, *redis_state(cfg.redis_url, prefix, since_epoch, cfg.redis_credentials()))


def verify_users(cfg: stack_config.StackConfig, prefix: str, recent: int) -> list[str]:
    """Differences between SQL and the per-user keys (connectors/redis_users.py): per user, the `recent` contents
    with the newest events (ties: the greater content id) and the engagement milliseconds per content type."""
    import psycopg2
    import redis
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("""
            SELECT e.user_id::text, e.content_id::text,
                   max(floor(extract(epoch FROM e.event_ts) * 1000))::bigint
            FROM engagement_events e GROUP BY 1, 2""")
        newest: dict = collections.defaultdict(list)
        for user, content, ts_ms in cur.fetchall():
            newest[user].append((ts_ms, content))
        cur.execute("""
            SELECT e.user_id::text, c.content_type, coalesce(sum(e.duration_ms), 0)
            FROM engagement_events e JOIN content c ON c.id = e.content_id GROUP BY 1, 2""")
        ms: dict = collections.defaultdict(dict)
        for user, content_type, total in cur.fetchall():
            ms[user][content_type] = int(total)
    client = redis.Redis.from_url(cfg.redis_url, decode_responses=True, **cfg.redis_credentials())
    diffs = []
    try:
        for user in sorted(set(newest) | set(ms)):
            want_recent = [(c, ts) for ts, c in sorted(newest[user], reverse=True)[:recent]]
            have_recent = [(c, int(ts)) for c, ts in client.zrevrange(f'{prefix}:user:{user}:recent', 0, -1,
                                                                      withscores=True)]
            if want_recent != have_recent:
                diffs.append(f'user {user} recent: Redis {have_recent[:3]}... != SQL {want_recent[:3]}...')
            have_ms = {t: int(v) for t, v in client.hgetall(f'{prefix}:user:{user}:ms').items() if int(v)}
            want_ms = {t: v for t, v in ms[user].items() if v}
            if have_ms != want_ms:
                diffs.append(f'user {user} ms: Redis {have_ms} != SQL {want_ms}')
    finally:
        client.close()
    return diffs


def bigquery_state(cfg: stack_config.StackConfig, since_epoch: int) -> tuple[list[int], dict]:
    """(ids of the events_enriched view, with repeats if any; {(window_start, content_id): row} of the
    content_minute_stats view, or a list of rows where a key repeats) as the BigQuery emulator holds them."""
    from connectors.bigquery.clients import gcp_client
    client = gcp_client(cfg.bq_project, cfg.bq_endpoint)
    table = f'`{cfg.bq_project}.{cfg.bq_dataset}.{{}}`'
    try:
        ids = [row['id'] for row in client.query(
            f"SELECT id FROM {table.format('events_enriched')} "
            f'WHERE event_ts >= TIMESTAMP_SECONDS({since_epoch})').result()]
        stats: dict = {}
        for row in client.query(f"SELECT * FROM {table.format('content_minute_stats')} "
                                f'WHERE window_start >= {since_epoch}').result():
            key = (int(row['window_start']), row['content_id'])
            stats[key] = [stats[key], dict(row)] if key in stats else dict(row)
        return ids, stats
    finally:
        client.close()


def compare_bigquery(truth: dict, event_ids: set[int], ids: list[int], stats: dict) -> list[str]:
    """Differences between BigQuery and SQL: one events_enriched row per source event id, and
    content_minute_stats equal to the ground truth (one row per content and window)."""
    diffs = []
    repeated = [i for i, n in collections.Counter(ids).items() if n > 1]
    if repeated:
        diffs.append(f'events_enriched: {len(repeated)} ids with more than one row, e.g. {repeated[:3]}')
    missing, unexpected = event_ids - set(ids), set(ids) - event_ids
    if missing:
        diffs.append(f'events_enriched: {len(missing)} event ids missing, e.g. {sorted(missing)[:3]}')
    if unexpected:
        diffs.append(f'events_enriched: {len(unexpected)} ids not in Postgres, e.g. {sorted(unexpected)[:3]}')
    for key in sorted(set(truth) | set(stats)):
        want, have = truth.get(key), stats.get(key)
        if isinstance(have, list):
            diffs.append(f'content_minute_stats {key}: more than one row')
            continue
        if have is None or want is None:
            diffs.append(f'content_minute_stats {key}: ' + ('missing in BigQuery' if have is None else
                                                             'in BigQuery but not in SQL'))
            continue
        for field, value in want.items():
            got = Decimal(have['engagement_ms']) / 1000 if field == 'engagement_seconds' else have.get(field)
            if str(got) != str(value) and not (field == 'engagement_seconds' and got == value):
                diffs.append(f'content_minute_stats {key} {field}: BigQuery {got!r} != SQL {value!r}')
    return diffs


def verify_bigquery(cfg: stack_config.StackConfig, window_seconds: int, since_epoch: int = 0) -> list[str]:
    import psycopg2
    truth = ground_truth(cfg.pg_dsn, window_seconds, since_epoch)
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        cur.execute('SELECT id FROM engagement_events WHERE event_ts >= to_timestamp(%s)', (since_epoch,))
        event_ids = {row[0] for row in cur.fetchall()}
    return compare_bigquery(truth, event_ids, *bigquery_state(cfg, since_epoch))


def main(argv: list[str] | None = None) -> int:
    import time
    parser = argparse.ArgumentParser(prog='python -m launch.scenarios.verify', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--window-seconds', type=int, default=60, help="the pipeline's --window_seconds")
    parser.add_argument('--redis-prefix', default='engagement', help="the pipeline's --redis_prefix")
    parser.add_argument('--since-minutes', type=float, default=None,
                        help='only windows starting in the last N minutes (default: all)')
    parser.add_argument('--bigquery', action='store_true',
                        help='also compare the BigQuery views events_enriched (one row per event id) and '
                             'content_minute_stats with SQL')
    stack_config.add_arguments(parser)
    args = parser.parse_args(argv)
    cfg = stack_config.from_args(args)
    since = 0
    if args.since_minutes is not None:
        since = int(time.time() - args.since_minutes * 60) // args.window_seconds * args.window_seconds
    diffs = verify(cfg, args.window_seconds, args.redis_prefix, since)
    if args.bigquery:
        diffs += verify_bigquery(cfg, args.window_seconds, since)
    truth = ground_truth(cfg.pg_dsn, args.window_seconds, since)
    print(f'{len(truth)} (window, content) groups, {sum(r["events"] for r in truth.values()):,} events in SQL; '
          f'{len(diffs)} differences')
    for line in diffs[:20]:
        print('  ' + line)
    return 1 if diffs else 0


if __name__ == '__main__':
    sys.exit(main())
