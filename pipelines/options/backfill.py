"""`--mode`: the live pipeline (Kafka, unbounded) or a backfill (a bounded read of `engagement_events` from Postgres
over `--since` .. `--until`, through the same transforms into Redis and BigQuery)."""
from __future__ import annotations

import datetime

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options.common import bad, check_ranges, parse_utc

MODES = ('live', 'backfill')


class ModeOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        mode = parser.add_argument_group('mode')
        mode.add_argument('--mode', default='live',
                          help='live: read Kafka, unbounded (default). backfill: read engagement_events from '
                               'Postgres for --since .. --until (parallel by id range), bounded, through the same '
                               'validation, enrichment and windows into Redis and BigQuery (not the REST API, no '
                               'viral alerts); idempotent with a live pipeline running (docs/pipeline.md, '
                               '"Backfill").')
        mode.add_argument('--since', default='',
                          help='With --mode=backfill: the first event time (ISO-8601, UTC unless it names an '
                               'offset), moved back to the start of its window. Required for a backfill.')
        mode.add_argument('--until', default='',
                          help='With --mode=backfill: the end of the event time read (exclusive, ISO-8601), moved '
                               'forward to the end of its window and at most the start of the window in progress '
                               '(which is the live pipeline\'s). Default: that start.')
        mode.add_argument('--backfill_rows_per_read', type=int, default=50_000,
                          help='With --mode=backfill: ids per read of Postgres (each a range of ids read by one '
                               'worker, a server-side cursor; never LIMIT/OFFSET). Default 50000.')

    def check(self) -> None:
        if self.mode not in MODES:
            bad('mode', self.mode, f'expected one of {", ".join(MODES)}')
        check_ranges(self, (('backfill_rows_per_read', 100, 10_000_000),))
        if self.mode != 'backfill':
            for flag in ('since', 'until'):
                if getattr(self, flag):
                    bad(flag, getattr(self, flag), 'only with --mode=backfill')
            return
        if not self.since:
            bad('since', self.since, 'a backfill needs the first event time (ISO-8601)')
        for flag in ('since', 'until'):
            if getattr(self, flag):
                try:
                    parse_utc(getattr(self, flag))
                except ValueError:
                    bad(flag, getattr(self, flag), 'expected an ISO-8601 time, e.g. 2026-12-01T00:00:00Z')
        if self.until and parse_utc(self.until) <= parse_utc(self.since):
            bad('until', self.until, f'must be after --since={self.since}')

    def backfill_range(self, window_seconds: int, now: datetime.datetime | None = None) -> tuple[int, int]:
        """(since, until) in epoch seconds, aligned outward to whole windows; until at most the start of the window
        in progress at `now`. Checked options; since == until means nothing to read."""
        now_s = int((now or datetime.datetime.now(datetime.timezone.utc)).timestamp())
        current = now_s // window_seconds * window_seconds
        since = int(parse_utc(self.since).timestamp()) // window_seconds * window_seconds
        until = current
        if self.until:
            end = parse_utc(self.until).timestamp()
            until = min(current, -(-int(end) // window_seconds) * window_seconds)
        return min(since, until), until
