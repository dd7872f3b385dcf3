"""Load generator: realistic engagement events, at a steady rate, into PostgreSQL (captured by Debezium) or, with
`--direct`, as JSON straight onto the raw Kafka topic (for producers that bypass Postgres), optionally with a
share of bad input.

    python -m launch.scenarios.generate --rate 1000 --duration 60
    python -m launch.scenarios.generate --rate 5000 --count 100000 --late-share 0.02
    python -m launch.scenarios.generate --direct --rate 200 --count 1000 --bad-share 0.2 --summary sent.json

Events: all four types (play/pause/finish/click) on contents of the catalogue, all devices, durations with NULLs,
user ids from a fixed pool, `event_ts` = now except for a `--late-share` of events stamped up to
`--late-max-seconds` in the past. Rows go to Postgres with COPY in batches every `--tick-ms`, which keeps up with
5,000 rows/s on two shared cores. A one-line progress display shows the rate achieved and the total.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

from connectors.credentials import CredentialsRefused, check_kafka, check_postgres
from launch.stack import config as stack_config

EVENT_TYPES = ('play', 'pause', 'finish', 'click')
EVENT_WEIGHTS = (40, 25, 15, 20)
DEVICES = ('ios', 'android', 'web', 'smart_tv', 'desktop', 'tablet')
DEVICE_WEIGHTS = (30, 30, 20, 8, 8, 4)
APP_VERSIONS = ('5.2.1', '5.3.0', '5.3.1', '6.0.0-beta')
REFERRERS = ('home', 'search', 'push', 'email', 'share', 'recommendation')
BAD_KINDS = ('malformed_json', 'missing_field', 'wrong_type', 'unknown_content')


def user_pool(size: int) -> list[str]:
    """Deterministic user ids, so that two runs share users."""
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f'engagement-user-{i}')) for i in range(size)]


@dataclasses.dataclass
class Event:
    id: int | None
    content_id: str
    user_id: str
    event_type: str
    event_ts: datetime
    duration_ms: int | None
    device: str | None
    raw_payload: dict

    def as_json(self) -> dict:
        return {'id': self.id, 'content_id': self.content_id, 'user_id': self.user_id,
                'event_type': self.event_type, 'event_ts': self.event_ts.isoformat(),
                'duration_ms': self.duration_ms, 'device': self.device, 'raw_payload': self.raw_payload}


class EventFactory:
    def __init__(self, content_ids: list[str], users: int, late_share: float, late_max_s: float, seed: int | None):
        if not content_ids:
            raise SystemExit('error: the content catalogue is empty; is the stack up (python -m launch.stack up)?')
        self.rng = random.Random(seed)
        self.content_ids = content_ids
        self.users = user_pool(users)
        self.late_share = late_share
        self.late_max_s = late_max_s

    def make(self, now: datetime, event_id: int | None = None) -> Event:
        rng = self.rng
        event_type = rng.choices(EVENT_TYPES, EVENT_WEIGHTS)[0]
        if event_type == 'click' or rng.random() < 0.08:
            duration = None           # clicks carry no duration; some players do not report one
        else:
            duration = int(rng.expovariate(1 / 240_000))
        event_ts = now
        if rng.random() < self.late_share:
            event_ts = now - timedelta(seconds=rng.uniform(1, self.late_max_s))
        payload = {'app_version': rng.choice(APP_VERSIONS), 'session_id': f's-{rng.getrandbits(48):012x}',
                   'referrer': rng.choice(REFERRERS)}
        if rng.random() < 0.3:
            payload['position_ms'] = rng.randrange(0, 3_600_000)
        device = None if rng.random() < 0.02 else rng.choices(DEVICES, DEVICE_WEIGHTS)[0]
        return Event(event_id, rng.choice(self.content_ids), rng.choice(self.users), event_type, event_ts,
                     duration, device, payload)


class Progress:
    """One line, rewritten in place on a terminal; a line every 5 s otherwise (logs, CI)."""

    def __init__(self, target_rate: float, stream=sys.stderr):
        self.stream, self.target = stream, target_rate
        self.tty = stream.isatty()
        self.started = self.last_print = time.monotonic()

    def show(self, total: int, extra: str = '', final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_print < (0.25 if self.tty else 5.0):
            return
        self.last_print = now
        elapsed = max(now - self.started, 1e-9)
        line = (f'generated {total:,} events in {elapsed:6.1f} s  rate {total / elapsed:,.0f}/s '
                f'(target {self.target:,.0f}/s){extra}')
        if self.tty:
            self.stream.write('\r' + line + ('\n' if final else '\x1b[K'))
        else:
            self.stream.write(line + '\n')
        self.stream.flush()


def paced(rate: float, total: int | None, duration: float | None, tick_s: float):
    """Yield how many events to emit now, so that `rate` is held on average, until count or duration is reached."""
    started = time.monotonic()
    sent = 0
    while True:
        elapsed = time.monotonic() - started
        if duration is not None and elapsed >= duration:
            return
        due = int(rate * elapsed) - sent
        if total is not None:
            due = min(due, total - sent)
        if due > 0:
            yield due
            sent += due
        if total is not None and sent >= total:
            return
        time.sleep(max(0.0, tick_s - (time.monotonic() - started - elapsed)))


# ---------------------------------------------------------------------------------------------------------------
# Postgres mode

def _copy_buffer(events: list[Event]) -> io.StringIO:
    buf = io.StringIO()
    for e in events:
        cols = (e.content_id, e.user_id, e.event_type, e.event_ts.isoformat(),
                '' if e.duration_ms is None else str(e.duration_ms), e.device or '',
                json.dumps(e.raw_payload, separators=(',', ':')))
        buf.write('\t'.join(c.replace('\\', '\\\\').replace('\t', '\\t') if c else '\\N' for c in cols) + '\n')
    buf.seek(0)
    return buf


def load_content_ids(dsn: str) -> list[str]:
    import psycopg2
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute('SELECT id::text FROM content ORDER BY slug')
        return [r[0] for r in cur.fetchall()]


def contents(cfg: stack_config.StackConfig, args) -> list[str]:
    """The content ids events are drawn from: the catalogue, or only `--burst`'s (which must be in it)."""
    ids = load_content_ids(cfg.pg_dsn)
    if args.burst is None:
        return ids
    if args.burst not in ids:
        raise LookupError(f'--burst {args.burst}: no such content in the catalogue')
    return [args.burst]


def run_postgres(cfg: stack_config.StackConfig, args) -> int:
    import psycopg2
    factory = EventFactory(contents(cfg, args), args.users, args.late_share, args.late_max_seconds, args.seed)
    progress = Progress(args.rate)
    total = 0
    conn = psycopg2.connect(cfg.pg_dsn)
    try:
        with conn.cursor() as cur:
            for due in paced(args.rate, args.count, args.duration, args.tick_ms / 1000):
                now = datetime.now(timezone.utc)
                events = [factory.make(now) for _ in range(due)]
                cur.copy_expert('COPY engagement_events (content_id, user_id, event_type, event_ts, duration_ms, '
                                'device, raw_payload) FROM STDIN', _copy_buffer(events))
                conn.commit()
                total += due
                progress.show(total)
    finally:
        conn.close()
        progress.show(total, final=True)
    return total


# ---------------------------------------------------------------------------------------------------------------
# Direct mode (raw topic), with bad input

class DirectIds:
    """Ids for events that never see Postgres: microseconds since the epoch x 1000 + a counter. They are unique
    per producer run and far above any BIGSERIAL id the database hands out, so the two id spaces never meet."""

    def __init__(self):
        self.base = time.time_ns() // 1000 * 1000
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.base + self.n


def make_bad(kind: str, event: Event, rng: random.Random) -> bytes:
    record = event.as_json()
    if kind == 'malformed_json':
        text = json.dumps(record)
        return text[:rng.randrange(5, len(text) - 5)].encode()
    if kind == 'missing_field':
        del record[rng.choice(('content_id', 'event_ts', 'user_id', 'event_type'))]
    elif kind == 'wrong_type':
        field, value = rng.choice((('duration_ms', 'twelve seconds'), ('event_ts', 'yesterday'),
                                   ('event_type', 42), ('user_id', 'not-a-uuid')))
        record[field] = value
    elif kind == 'unknown_content':
        record['content_id'] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return json.dumps(record).encode()


def run_direct(cfg: stack_config.StackConfig, args) -> dict:
    from kafka import KafkaProducer
    factory = EventFactory(contents(cfg, args), args.users, args.late_share, args.late_max_seconds, args.seed)
    ids = DirectIds()
    kafka = {**cfg.kafka_client_config(), **({'bootstrap_servers': args.bootstrap} if args.bootstrap else {})}
    producer = KafkaProducer(**kafka, acks='all', linger_ms=5)
    counts = {'valid': 0, **{k: 0 for k in BAD_KINDS}}
    bad_ids: dict[str, list[int]] = {k: [] for k in BAD_KINDS}
    progress = Progress(args.rate)
    total = 0
    try:
        for due in paced(args.rate, args.count, args.duration, args.tick_ms / 1000):
            now = datetime.now(timezone.utc)
            for _ in range(due):
                event = factory.make(now, ids.next())
                if factory.rng.random() < args.bad_share:
                    kind = factory.rng.choice(BAD_KINDS)
                    value = make_bad(kind, event, factory.rng)
                    counts[kind] += 1
                    bad_ids[kind].append(event.id)
                else:
                    value = json.dumps(event.as_json()).encode()
                    counts['valid'] += 1
                producer.send(cfg.raw_topic, key=str(event.id).encode(), value=value)
            total += due
            progress.show(total, f'  bad {total - counts["valid"]:,}')
        producer.flush()
    finally:
        producer.close()
        progress.show(total, f'  bad {total - counts["valid"]:,}', final=True)
    return {'topic': cfg.raw_topic, 'total': total, 'counts': counts, 'bad_ids': bad_ids}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.scenarios.generate', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rate', type=float, default=1000, help='events per second (default 1000)')
    stop = parser.add_mutually_exclusive_group(required=True)
    stop.add_argument('--duration', type=float, help='run for this many seconds')
    stop.add_argument('--count', type=int, help='stop after this many events')
    parser.add_argument('--late-share', type=float, default=0.02,
                        help='share of events whose event_ts lies in the past (default 0.02)')
    parser.add_argument('--late-max-seconds', type=float, default=300,
                        help='how far in the past a late event may be stamped (default 300)')
    parser.add_argument('--users', type=int, default=5000, help='size of the user-id pool (default 5000)')
    parser.add_argument('--tick-ms', type=float, default=100, help='batch interval in ms (default 100)')
    parser.add_argument('--seed', type=int, help='random seed, for reproducible runs')
    parser.add_argument('--direct', action='store_true',
                        help='write JSON events to the raw Kafka topic instead of inserting into Postgres')
    parser.add_argument('--bad-share', type=float, default=0.0,
                        help='--direct: share of bad records (malformed JSON, missing fields, wrong types, '
                             'unknown content ids), default 0')
    parser.add_argument('--bootstrap', help='--direct: Kafka bootstrap servers (default: the local stack)')
    parser.add_argument('--burst', metavar='CONTENT_ID',
                        help='every event of this run is for this content (a burst that should raise a '
                             'viral-content alert: e.g. --burst <id> --count 300 --rate 2000)')
    parser.add_argument('--summary', help='write what was sent (counts per kind, bad ids) to this JSON file')
    stack_config.add_arguments(parser)
    args = parser.parse_args(argv)
    for name, value, low, high in (('--rate', args.rate, 0.001, 1e7), ('--late-share', args.late_share, 0, 1),
                                   ('--bad-share', args.bad_share, 0, 1), ('--tick-ms', args.tick_ms, 1, 10000),
                                   ('--late-max-seconds', args.late_max_seconds, 1, 86400 * 30)):
        if not low <= value <= high:
            parser.error(f'{name} must be between {low} and {high}, got {value}')
    if args.users < 1 or (args.count is not None and args.count < 0):
        parser.error('--users must be >= 1 and --count >= 0')
    if args.bad_share and not args.direct:
        parser.error('--bad-share needs --direct (Postgres rejects malformed rows itself)')
    try:
        cfg = stack_config.from_args(args)
    except stack_config.ConfigError as exc:
        parser.error(str(exc))
    try:  # refused credentials: one line, not a producer that retries until its timeout
        check_postgres(cfg.pg_dsn)
        if args.direct:
            check_kafka({**cfg.kafka_client_config(), **({'bootstrap_servers': args.bootstrap} if args.bootstrap
                                                          else {})})
    except CredentialsRefused as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    try:
        summary = run_direct(cfg, args) if args.direct else {'table': 'engagement_events',
                                                              'total': run_postgres(cfg, args)}
    except KeyboardInterrupt:
        return 130
    except LookupError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    except Exception as exc:  # connection refused and the like: one clear line, not a traceback
        if type(exc).__module__.split('.')[0] not in ('psycopg2', 'kafka'):
            raise
        print(f'error: {type(exc).__name__}: {str(exc).strip()} (is the stack up? python -m launch.stack status)',
              file=sys.stderr)
        return 1
    if args.summary:
        with open(args.summary, 'w') as out:
            json.dump(summary, out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
