"""What happens between the reader and the sinks: input limits, content enrichment, windows."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import local_stack
from pipelines.options.common import bad, check_ranges, env
from transforms.parse import DEFAULT_MAX_FUTURE_SECONDS, DEFAULT_MAX_RECORD_BYTES, ParseLimits, parse_skip_offsets


class InputLimitOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        limits = parser.add_argument_group('input limits')
        limits.add_argument('--max_record_bytes', type=int,
                            default=int(env('ENGAGEMENT_MAX_RECORD_BYTES', str(DEFAULT_MAX_RECORD_BYTES))),
                            help='Largest record accepted (key + value, bytes), checked before parsing; a larger '
                                 'one goes to the dead letters as payload_too_large. Keep it below the broker\'s '
                                 'message.max.bytes. Env ENGAGEMENT_MAX_RECORD_BYTES; default '
                                 f'{DEFAULT_MAX_RECORD_BYTES} (512 KiB).')
        limits.add_argument('--max_future_seconds', type=float, default=DEFAULT_MAX_FUTURE_SECONDS,
                            help='An event stamped more than this many seconds ahead of the reader\'s clock (the '
                                 'record\'s Kafka timestamp, at most the wall clock) goes to the dead letters as '
                                 f'future_event. Default {DEFAULT_MAX_FUTURE_SECONDS}.')
        limits.add_argument('--skip_offsets', default=env('ENGAGEMENT_SKIP_OFFSETS', ''),
                            help='topic:partition:offset[,...]: records the pipeline must not process (a record that '
                                 'stops the job); each goes to the dead letters as skipped_by_operator. Env '
                                 'ENGAGEMENT_SKIP_OFFSETS; default none.')
        limits.add_argument('--event_batches', default='true', choices=('true', 'false'),
                            help='true: the Python Kafka reader hands on each poll of a partition (up to 500 '
                                 'records) as one element, and parsing (orjson fast path, pydantic for anything '
                                 'else), enrichment and the windows\' pre-aggregation take it as one: the same '
                                 'events and dead letters at a fraction of the CPU per event. The event sinks still '
                                 'get one element per event. false: one element per record from the reader on. '
                                 'Default true (--kafka_reader=xlang: always one per record).')

        limits.add_argument('--worker_gc_threshold', type=int, default=100_000,
                            help='Python\'s garbage collector in the worker processes: a young-generation pass '
                                 'every this many net allocations (Python\'s default is 700, which cost about a '
                                 'quarter of the worker\'s CPU on a backlog). 0 leaves Python\'s settings. '
                                 'Default 100000.')

    @property
    def batched(self) -> bool:
        """Batches from the reader on (`--event_batches`); the cross-language reader emits records only."""
        return self.event_batches == 'true' and getattr(self, 'kafka_reader', 'python') == 'python'

    def check(self) -> None:
        check_ranges(self, (('max_record_bytes', 1024, 100 * 2**20), ('max_future_seconds', 0, 366 * 86400),
                            ('worker_gc_threshold', 0, 10_000_000)))
        try:
            parse_skip_offsets(self.skip_offsets or '')
        except ValueError as exc:
            bad('skip_offsets', self.skip_offsets, str(exc))

    def parse_limits(self) -> ParseLimits:
        """What ParseEvents accepts (checked options)."""
        return ParseLimits(self.max_record_bytes, self.max_future_seconds, parse_skip_offsets(self.skip_offsets or ''))


ENRICHMENT_MODES = ('auto', 'cache', 'side_input')


class EnrichmentOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        local = local_stack.addresses()  # the defaults follow the stack's ENGAGEMENT_* variables
        content = parser.add_argument_group('content enrichment')
        content.add_argument('--pg_dsn',
                             default=env('ENGAGEMENT_PG_DSN',
                                          local.pg_dsn),
                             help='libpq connection string of the database holding the content table. '
                                  'Env ENGAGEMENT_PG_DSN; default the local stack (ENGAGEMENT_PG_PORT, '
                                  'ENGAGEMENT_PG_DATABASE).')
        content.add_argument('--content_refresh_seconds', type=int, default=30,
                             help='Reload the content catalogue this often (seconds); an event whose content is '
                                  'unknown triggers one early reload before it is dead-lettered. Default 30.')
        content.add_argument('--content_enrichment', choices=ENRICHMENT_MODES, default='auto',
                             help='How the catalogue reaches the enrichment: cache (each DoFn reloads it every '
                                  '--content_refresh_seconds), side_input (Beam\'s slowly-updating side input: '
                                  'PeriodicImpulse -> load -> AsList), or auto: side_input on Dataflow, cache on Prism '
                                  'and Flink, where a refreshed side input does not reach live elements in Beam 2.77 '
                                  '(docs/runners.md). A backfill always uses cache. Default auto.')

    def check(self) -> None:
        if not self.pg_dsn:
            bad('pg_dsn', self.pg_dsn, 'a libpq connection string is required')
        check_ranges(self, (('content_refresh_seconds', 1, 86400),))


class WindowOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        windows = parser.add_argument_group('windows')
        windows.add_argument('--window_seconds', type=int, default=60,
                             help='Event-time fixed window length in seconds. Default 60.')
        windows.add_argument('--early_firing_seconds', type=float, default=1,
                             help='Emit an early (speculative) pane every this many seconds of processing time, '
                                  'to the millisecond, on one grid for all contents (a live event waits up to this '
                                  'long, half on average, for its pane; each pane costs a Redis write per content '
                                  'touched; 0.5 halves the wait). On Dataflow: whole seconds, counted from the '
                                  'first event of each pane. Default 1.')
        windows.add_argument('--allowed_lateness_seconds', type=int, default=600,
                             help='Accept events this late (event time behind the watermark); later ones go to '
                                  'the dead letters as too_late. Default 600.')
        windows.add_argument('--window_shards', type=int, default=8,
                             help='Keys of the windows\' GroupByKey: contents are counted in this many groups '
                                  '(a hash of the content id), so the runner holds one partial count per group, '
                                  'window and bundle instead of one per content (on Prism, its cost grows with '
                                  'what it holds). It bounds the parallelism of the aggregation on a cluster: '
                                  'raise it there. Default 8.')

        windows.add_argument('--replay_margin_seconds', type=int, default=60,
                             help='On a restart from committed offsets, replay this much event time beyond the '
                                  'allowed lateness, so that panes computed but not yet written when the pipeline '
                                  'stopped are recomputed. Default 60.')

    def check(self) -> None:
        check_ranges(self, (('window_seconds', 1, 86400), ('early_firing_seconds', 0.05, 3600),
                            ('allowed_lateness_seconds', 0, 7 * 86400), ('replay_margin_seconds', 0, 86400),
                            ('window_shards', 1, 4096)))
        if 86400 % self.window_seconds:
            bad('window_seconds', self.window_seconds, 'must divide a day (86400) so windows align to UTC days')
