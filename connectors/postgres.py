"""A bounded, parallel read of `engagement_events` from Postgres for an event-time range (the backfill's source).

    rows = p | ReadEventRows(dsn, since_s, until_s, rows_per_read=50_000)

`PlanIdRanges` asks Postgres once for the smallest and largest id (and the count) of the rows whose `event_ts` lies
in [since, until), and cuts [min, max] into ranges of `rows_per_read` ids; a `Reshuffle` spreads the ranges over
the runner's workers and `ReadIdRange` reads each with a server-side cursor (`WHERE id BETWEEN lo AND hi AND event_ts
>= since AND event_ts < until`, on the primary key's index), never LIMIT/OFFSET (each page would rescan what came
before it). Ids are not in event-time order (a late row gets a later id), so the ranges span every id of the
range's rows and filter on `event_ts` again. Each output is a plain dict of the row (`event_ts` a UTC datetime,
UUIDs as text, `raw_payload` as decoded JSON); `transforms.parse.ParseRows` validates them. The DSN is never shown
(`repr`, errors): it may hold a password.

Beam's `apache_beam.io.jdbc.ReadFromJdbc` would do the read, but it is a cross-language transform (a Java expansion
service, and its read is one query on one worker); Beam's Python SDK has no Postgres source of its own.
"""
from __future__ import annotations

import datetime
import json
import logging

import apache_beam as beam

_LOG = logging.getLogger(__name__)
COLUMNS = ('id', 'content_id', 'user_id', 'event_type', 'event_ts', 'duration_ms', 'device', 'raw_payload')
_SELECT = ('SELECT id, content_id::text, user_id::text, event_type, event_ts, duration_ms, device, raw_payload '
           'FROM engagement_events WHERE id BETWEEN %s AND %s AND event_ts >= %s AND event_ts < %s')
_PLAN = 'SELECT min(id), max(id), count(*) FROM engagement_events WHERE event_ts >= %s AND event_ts < %s'
_FETCH_ROWS = 10_000


def _utc(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def id_ranges(low: int, high: int, size: int) -> list[tuple[int, int]]:
    """[low, high] cut into inclusive ranges of at most `size` ids, in order."""
    return [(start, min(start + size - 1, high)) for start in range(low, high + 1, size)]


class _Postgres:
    def __init__(self, dsn: str):
        self._dsn = dsn

    def connect(self):
        import psycopg2
        return psycopg2.connect(self._dsn, connect_timeout=10)

    def __repr__(self) -> str:  # never the DSN
        return f'{type(self).__name__}(<dsn>)'


class PlanIdRanges(_Postgres, beam.DoFn):
    def __init__(self, dsn: str, since_s: int, until_s: int, rows_per_read: int):
        super().__init__(dsn)
        self._since_s, self._until_s, self._size = since_s, until_s, rows_per_read

    def process(self, _):
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(_PLAN, (_utc(self._since_s), _utc(self._until_s)))
                low, high, count = cur.fetchone()
        finally:
            conn.close()
        ranges = [] if low is None else id_ranges(low, high, self._size)
        _LOG.info(json.dumps({'event': 'backfill_planned', 'since': _utc(self._since_s).isoformat(),
                              'until': _utc(self._until_s).isoformat(), 'rows': count, 'min_id': low,
                              'max_id': high, 'reads': len(ranges)}))
        yield from ranges


class ReadIdRange(_Postgres, beam.DoFn):
    def __init__(self, dsn: str, since_s: int, until_s: int):
        super().__init__(dsn)
        self._since_s, self._until_s = since_s, until_s

    def process(self, id_range: tuple[int, int]):
        conn = self.connect()
        try:
            conn.set_session(readonly=True)
            with conn.cursor(name='backfill') as cur:  # server-side: rows arrive _FETCH_ROWS at a time
                cur.itersize = _FETCH_ROWS
                cur.execute(_SELECT, (*id_range, _utc(self._since_s), _utc(self._until_s)))
                for row in cur:
                    values = dict(zip(COLUMNS, row))
                    values['event_ts'] = values['event_ts'].astimezone(datetime.timezone.utc)
                    yield values
        finally:
            conn.close()


class ReadEventRows(beam.PTransform):
    """Rows of `engagement_events` with `since_s <= event_ts < until_s` (epoch seconds), each once, as dicts."""

    def __init__(self, dsn: str, since_s: int, until_s: int, rows_per_read: int = 50_000):
        super().__init__()
        if not until_s > since_s:
            raise ValueError(f'ReadEventRows: until ({until_s}) must be after since ({since_s})')
        if not (isinstance(rows_per_read, int) and rows_per_read >= 1):
            raise ValueError(f'ReadEventRows: rows_per_read must be a whole number >= 1, got {rows_per_read!r}')
        self._dsn, self._since_s, self._until_s, self._size = dsn, since_s, until_s, rows_per_read

    def expand(self, pbegin):
        return (pbegin
                | 'Impulse' >> beam.Impulse()
                | 'PlanIdRanges' >> beam.ParDo(PlanIdRanges(self._dsn, self._since_s, self._until_s, self._size))
                | 'DistributeReads' >> beam.Reshuffle()
                | 'ReadIdRange' >> beam.ParDo(ReadIdRange(self._dsn, self._since_s, self._until_s)))

    def __repr__(self) -> str:
        return f'ReadEventRows(<dsn>, {self._since_s}, {self._until_s}, {self._size})'
