"""The engagement pipeline: Kafka (Debezium CDC + raw JSON) -> validate -> enrich -> event-time windows -> Redis,
with every rejected record in the dead-letter topic.

    python -m pipelines.engagement --runner=DirectRunner --streaming      # local stack defaults, Prism
    python -m pipelines.engagement --help                                 # every flag

Beam concepts: an unbounded splittable-DoFn source (`connectors.kafka.ReadFromKafka`), tagged dead-letter outputs
(`ParDo.with_outputs`), event-time `FixedWindows` with early, on-time and late panes, accumulation, allowed
lateness, and idempotent sinks.

Exactly-once in effect. Runner state is lost when a local pipeline is killed, so the effects are built to be
recomputed: the Redis sink writes absolute values per (window, content), and on a start with
`--start_offset=committed` the reader replays from a window-aligned point early enough to recompute every window
that was not final at the last commit:

    replay_from = align_down(min committed watermark - allowed lateness - replay margin, window)

The reader starts each partition at the first record at or after `replay_from` (or its committed offset if that
is earlier), and events of windows that end at or before `replay_from` are skipped (counter `already_final`):
those windows were final before the crash and must not be overwritten by a partial recount. Windows from
`replay_from` on are recounted from their first event, and the recount overwrites what was there. Debezium's
duplicates (at-least-once) are counted once per event id inside each window. The margin
(`--replay_margin_seconds`, default one window) covers panes that were computed but not yet written when the
pipeline died: a window that became final more than the margin (in event time) before the last offset commit is
assumed written.
"""
from __future__ import annotations

import logging
import os
import signal
import sys

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions
from apache_beam.transforms.window import GlobalWindows

from connectors.dead_letters import WriteDeadLettersToKafka
from connectors.kafka import ReadFromKafka, committed_positions
from connectors.redis import WriteContentStatsToRedis
from pipelines.options import EngagementOptions, InvalidOption
from pipelines.runners import PrismUnavailable, select_runner
from transforms.enrich import EnrichWithContent, PostgresContentLoader
from transforms.parse import ParseEvents
from transforms.windows import ContentMinuteStats

_LOG = logging.getLogger('pipelines.engagement')
# Debezium's Kafka record time is 0.5-1.4 s after the row's event_ts; a 2 s watermark delay keeps those events
# on time (early panes are unaffected; the on-time pane comes ~2 s after the window ends).
READER_MAX_DELAY_MS = 2000
STREAMING_JOB_SERVER_TIMEOUT_S = 10 * 365 * 86400
# A backlog is read in bundles of up to 2 s: each bundle hands the windows one partial count per (content, window)
# it touched, and Prism keeps every one of them for accumulating panes and scans them all at each watermark step.
# With 0.5 s bundles a 200k-event backlog cost Prism 18 CPU-s and ran at ~6.6k events/s; with 2 s, 2.6 CPU-s and
# ~13k events/s. Once caught up, a bundle ends after 0.5 s as before, so live results are not delayed.
READER_MAX_BUNDLE_RECORDS = 40_000
READER_MAX_BUNDLE_SECONDS = 2.0
READER_LIVE_BUNDLE_SECONDS = 0.5


def replay_start_ms(positions: dict, window_seconds: int, allowed_lateness_seconds: int,
                    margin_seconds: int) -> int | None:
    """The window-aligned replay point (epoch ms) from the committed positions, or None without commits."""
    watermarks = [wm for _, wm in positions.values() if wm is not None]
    if not watermarks:
        return None
    floor_s = min(watermarks) // 1000 - allowed_lateness_seconds - margin_seconds
    return max(0, floor_s // window_seconds * window_seconds) * 1000


class SkipFinalWindows(beam.DoFn):
    """Drop events of windows that ended at or before the replay point: they were final before the restart."""

    def __init__(self, replay_from_ms: int, window_seconds: int):
        self._from_s = replay_from_ms // 1000
        self._window = window_seconds
        self._skipped = Metrics.counter('engagement', 'already_final')

    def process(self, event, timestamp=beam.DoFn.TimestampParam):
        window_end = (int(timestamp) // self._window + 1) * self._window
        if window_end <= self._from_s:
            self._skipped.inc()
            return
        yield event


def build(p: beam.Pipeline, opts: EngagementOptions, replay_from_ms: int | None = None):
    """Assemble the graph on `p`; returns the PCollections tests and callers may want to observe."""
    topics = [t for t in (opts.cdc_topic, opts.raw_topic) if t]
    records = p | 'ReadFromKafka' >> ReadFromKafka(
        opts.kafka_consumer_config(), topics, group_id=opts.consumer_group, start_offset=opts.start_offset,
        start_timestamp_ms=replay_from_ms, max_delay_ms=READER_MAX_DELAY_MS,
        max_bundle_records=READER_MAX_BUNDLE_RECORDS, max_bundle_seconds=READER_MAX_BUNDLE_SECONDS,
        live_bundle_seconds=READER_LIVE_BUNDLE_SECONDS)
    parsed = records | 'ParseEvents' >> ParseEvents(cdc_topics=[opts.cdc_topic])
    events = parsed.events
    if replay_from_ms is not None:
        events = events | 'SkipFinalWindows' >> beam.ParDo(SkipFinalWindows(replay_from_ms, opts.window_seconds))
    enriched = events | 'EnrichWithContent' >> EnrichWithContent(
        PostgresContentLoader(opts.pg_dsn), refresh_seconds=opts.content_refresh_seconds)
    stats = enriched.enriched | 'ContentMinuteStats' >> ContentMinuteStats(
        window_seconds=opts.window_seconds, early_firing_seconds=opts.early_firing_seconds,
        allowed_lateness_seconds=opts.allowed_lateness_seconds)
    written = stats.stats | 'WriteTopContentToRedis' >> WriteContentStatsToRedis(
        opts.redis_url, redis_prefix=opts.redis_prefix, ttl_seconds=opts.redis_ttl_seconds)
    # Dead letters of the Redis stage live in the event-time windows of the stats; Prism cannot flatten
    # collections of different windowing (it panics), and dead letters have no business being windowed.
    stages = {'Parse': parsed.dead_letter, 'Enrich': enriched.dead_letter, 'Window': stats.dead_letter,
              'Redis': written.dead_letters}
    dead_letters = ([dl | f'{stage}DeadLettersInGlobalWindow' >> beam.WindowInto(GlobalWindows())
                     for stage, dl in stages.items()]
                    | 'AllDeadLetters' >> beam.Flatten())
    dead_letters | 'WriteDeadLettersToKafka' >> WriteDeadLettersToKafka(
        opts.kafka_bootstrap_servers, opts.dead_letter_topic,
        producer_config={k: v for k, v in opts.kafka_consumer_config().items() if k != 'bootstrap_servers'})
    return {'records': records, 'enriched': enriched.enriched, 'stats': stats.stats, 'dead_letters': dead_letters}


def plan_replay(opts: EngagementOptions) -> int | None:
    if opts.start_offset != 'committed':
        return None
    topics = [t for t in (opts.cdc_topic, opts.raw_topic) if t]
    positions = committed_positions(opts.kafka_consumer_config(), opts.consumer_group, topics)
    replay_from = replay_start_ms(positions, opts.window_seconds, opts.allowed_lateness_seconds,
                                  opts.replay_margin_seconds)
    _LOG.info('start: group %s, %d committed partitions, replay from %s', opts.consumer_group,
              sum(1 for off, _ in positions.values() if off is not None), replay_from)
    return replay_from


def print_help() -> None:
    import argparse
    from apache_beam.options.pipeline_options import PrismRunnerOptions
    parser = argparse.ArgumentParser(prog='python -m pipelines.engagement', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for options_class in (StandardOptions, PrismRunnerOptions, EngagementOptions):
        options_class._add_argparse_args(parser)
    parser.epilog = ('Any other Apache Beam pipeline option (Flink, Dataflow, worker options) is passed to the '
                     'runner as usual.')
    parser.print_help()


def run(argv: list[str] | None = None) -> int:
    if argv and ('--help' in argv or '-h' in argv):
        print_help()
        return 0
    options = PipelineOptions(argv)
    opts = options.view_as(EngagementOptions)
    try:
        opts.validate()
        runner = select_runner(options)
    except (InvalidOption, PrismUnavailable) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    portable = options.view_as(PortableOptions)
    if not any(arg.startswith('--job_server_timeout') for arg in argv or ()):
        # Beam opens the job's state stream with this as its gRPC deadline (default 300 s): a streaming job on a
        # portable runner (Prism, Flink) would have its driver exit after 5 minutes.
        portable.job_server_timeout = STREAMING_JOB_SERVER_TIMEOUT_S
    standard = options.view_as(StandardOptions)
    if not standard.streaming:
        _LOG.info('the Kafka source is unbounded: running in streaming mode')
        standard.streaming = True
    replay_from = plan_replay(opts)
    pipeline = beam.Pipeline(runner=runner, options=options)
    build(pipeline, opts, replay_from)
    result = pipeline.run()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        _LOG.info('stopping: cancelling the job')
        try:
            result.cancel()
        except Exception as exc:  # the job may already be gone; the process exits either way
            _LOG.warning('cancel failed: %s', exc)
    return 0


def main() -> None:
    logging.basicConfig(level=os.environ.get('ENGAGEMENT_LOG_LEVEL', 'INFO'),
                        format='%(asctime)s %(levelname)s %(name)s %(message)s')
    logging.getLogger('kafka').setLevel(logging.WARNING)  # kafka-python logs every connection at INFO
    sys.exit(run(sys.argv[1:]))


if __name__ == '__main__':
    main()
