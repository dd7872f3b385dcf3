"""The engagement pipeline: Kafka (Debezium CDC + raw JSON) -> validate -> enrich -> event-time windows -> Redis,
with every rejected record in the dead-letter topic.

    python -m pipelines.engagement --runner=DirectRunner --streaming      # local stack defaults, Prism
    python -m pipelines.engagement --mode=backfill --since=2026-12-01T00:00:00Z   # Postgres, bounded (backfill.py)
    python -m pipelines.engagement --help                                 # every flag

Beam concepts: an unbounded splittable-DoFn source (`connectors.kafka.ReadFromKafka`), tagged dead-letter outputs
(`ParDo.with_outputs`), event-time `FixedWindows` with early, on-time and late panes, accumulation, allowed
lateness, and idempotent sinks.

Exactly-once in effect: sinks are idempotent (absolute values per window and content, event ids), and a restart
from committed offsets replays every window that was not final (`pipelines/replay.py`).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
    TestOptions,
)
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.window import GlobalWindows

from connectors import metrics
from connectors.bigquery import sink as bigquery
from connectors.bigquery.tables import ensure_tables
from connectors.credentials import CredentialsRefused, check_kafka, check_postgres, check_redis
from connectors.dead_letters import WriteJsonToKafka
from connectors.http_api.sink import DeliverToApi
from connectors.kafka import ReadFromKafka
from connectors.redis import WriteContentStatsToRedis
from connectors.redis_script import ViralRule
from connectors.redis_users import WriteUserEngagementToRedis
from pipelines import flink_cluster, logs, runners
from pipelines.backfill import build_backfill
from pipelines.dead_letters import write_dead_letters
from pipelines.options import EngagementOptions, InvalidOption, add_arguments
from pipelines.replay import ReplayPlan, SkipProcessedEvents, plan_replay
from pipelines.runners import (
    RunnerUnavailable,
    enrichment_mode,
    is_dataflow,
    runner_name,
    select_runner,
    stop_job_server_children,
)
from pipelines.xlang import read_from_kafka_xlang
from schemas.coders import carries_batches
from schemas.events import EventBatch
from transforms.batches import ExplodeEventBatches
from transforms.enrich import EnrichWithContent, PostgresContentLoader
from transforms.parse import ParseEvents
from transforms.privacy import Pseudonymize
from transforms.windows import ContentStatsPerWindow

_LOG = logging.getLogger('pipelines.engagement')
# Debezium's Kafka record time is 0.5-1.4 s after the row's event_ts; a 2 s watermark delay keeps those events
# on time (early panes are unaffected; the on-time pane comes ~2 s after the window ends).
READER_MAX_DELAY_MS = 2000
STREAMING_JOB_SERVER_TIMEOUT_S = 10 * 365 * 86400
# A backlog is read in bundles of up to 4 s: each bundle hands the windows one partial count per (group of
# contents, window) it touched, and Prism keeps every one of them for accumulating panes and scans them all at each
# watermark step. With 0.5 s bundles a 200k-event backlog cost Prism 18 CPU-s and ran at ~6.6k events/s; with 2 s,
# 2.6 CPU-s and ~13k events/s. A pane fires only when its group got new partials, so 4 s instead of 2 s also
# halves the early panes of a window being caught up (merged and written to Redis each time): 500k events at
# 15.1-16.8k events/s instead of 12.4-15.7k (docs/benchmarks.md, 2026-11-25, 7426965). Once caught up, a call ends just
# before the next early firing of the windows (a grid of --early_firing_seconds; at least 0.1 s of reading): one
# partial per (group of contents, window) and period, in time for the pane (connectors/kafka/reader.py, "Throughput").
READER_MAX_BUNDLE_RECORDS = 80_000
READER_MAX_BUNDLE_SECONDS = 4.0
READER_LIVE_BUNDLE_SECONDS = 0.1


def build(p: beam.Pipeline, opts: EngagementOptions, replay: ReplayPlan | None = None):
    """Assemble the graph on `p`; returns the PCollections tests and callers may want to observe."""
    replay_from_ms = replay.from_ms if replay else None
    # by record timestamp, earlier than the replay point by --max_future_seconds (pipelines/replay.py)
    read_from_ms = (replay.read_from_ms if replay.read_from_ms is not None else replay.from_ms) if replay else None
    # Reprocessing from a time starts at the records of that time, not at the group's commits: the earlier of
    # 'latest' and the first record at or after read_from_ms.
    start_offset = 'latest' if replay is not None and replay.reprocess else opts.start_offset
    if opts.kafka_reader == 'xlang':  # Beam's cross-language reader (pipelines/xlang.py)
        records = p | 'ReadFromKafka' >> read_from_kafka_xlang(opts, read_from_ms, READER_MAX_DELAY_MS,
                                                               start_offset)
    else:
        records = p | 'ReadFromKafka' >> ReadFromKafka(
            opts.kafka_consumer_config(), opts.topics(), group_id=opts.consumer_group, start_offset=start_offset,
            start_timestamp_ms=read_from_ms, max_delay_ms=READER_MAX_DELAY_MS,
            max_bundle_records=READER_MAX_BUNDLE_RECORDS, max_bundle_seconds=READER_MAX_BUNDLE_SECONDS,
            live_bundle_seconds=READER_LIVE_BUNDLE_SECONDS, live_grid_seconds=opts.early_firing_seconds,
            splits=opts.kafka_read_splits or 1, batched=opts.batched)
    parsed = records | 'ParseEvents' >> ParseEvents(cdc_topics=[opts.cdc_topic], limits=opts.parse_limits(),
                                                    gc_threshold=opts.worker_gc_threshold)
    events = parsed.events
    if replay is not None:
        skip = beam.ParDo(SkipProcessedEvents(replay, opts.window_seconds))
        events = events | 'SkipProcessedEvents' >> (skip.with_output_types(EventBatch) if carries_batches(events)
                                                    else skip)
    enriched = events | 'EnrichWithContent' >> EnrichWithContent(
        PostgresContentLoader(opts.pg_dsn), refresh_seconds=opts.content_refresh_seconds,
        side_input=enrichment_mode(opts) == 'side_input')
    stats = enriched.enriched | 'ContentStatsPerWindow' >> ContentStatsPerWindow(
        window_seconds=opts.window_seconds, early_firing_seconds=opts.early_firing_seconds,
        allowed_lateness_seconds=opts.allowed_lateness_seconds, closed_before_ms=replay_from_ms,
        # The SDK round-trips a Dataflow pipeline's triggers through its own classes, which lose the alignment.
        aligned_early_firings=not is_dataflow(p.runner), shards=opts.window_shards)
    viral = ViralRule(opts.window_seconds, opts.viral_multiple, opts.viral_min_events,
                      opts.viral_trailing_windows) if opts.viral_multiple else None
    written = stats.stats | 'WriteContentStatsToRedis' >> WriteContentStatsToRedis(
        opts.redis_url, redis_prefix=opts.redis_prefix, ttl_seconds=opts.redis_ttl_seconds, viral=viral)
    if viral is not None and opts.alert_topic:
        (written.alerts | 'AlertsInGlobalWindow' >> beam.WindowInto(GlobalWindows())
         | 'WriteAlertsToKafka' >> WriteJsonToKafka(
             opts.kafka_bootstrap_servers, opts.alert_topic, 'content_id',
             producer_config=opts.kafka_producer_config()))
    stages = {'Parse': parsed.dead_letters, 'Enrich': enriched.dead_letters, 'Window': stats.dead_letters,
              'Redis': written.dead_letters}
    outputs = {}
    outgoing = enriched.enriched
    if opts.batched and (opts.api_url or opts.bigquery_enabled or opts.user_recent_contents):
        # what takes events one by one gets them one by one (transforms/batches.py)
        outgoing = outgoing | 'OneElementPerEvent' >> beam.ParDo(ExplodeEventBatches())
    if opts.pseudonymize_user_ids and (opts.api_url or opts.bigquery_enabled or opts.user_recent_contents):
        # what leaves the pipeline with a user carries no user id (transforms/privacy.py)
        outgoing = outgoing | 'PseudonymizeUserIds' >> Pseudonymize()
    if opts.user_recent_contents:
        stages['RedisUsers'] = outgoing | 'WriteUserEngagementToRedis' >> WriteUserEngagementToRedis(
            opts.redis_url, opts.redis_prefix, opts.user_recent_contents, opts.user_ttl_seconds)
    if opts.api_url or opts.bigquery_enabled:
        # The event sinks wait on remote services (the BigQuery emulator takes ~1k rows/s; an API outage means
        # timeouts and backoff). A shuffle puts them in a stage of their own, so that neither the reader nor the
        # Redis path waits for them; they catch up on their own, idempotently on the event id.
        to_sinks = outgoing | 'DecoupleEventSinks' >> beam.Reshuffle()
    if opts.api_url:  # an empty --api_url turns the sink off
        api = to_sinks | 'DeliverToApi' >> DeliverToApi.from_options(opts)
        stages['Api'] = api.dead_letters
        outputs['api_delivered'] = api.delivered
    if opts.bigquery_enabled:
        bq_args = bigquery.write_kwargs(opts)
        events_bq = to_sinks | 'WriteEventsToBigQuery' >> bigquery.WriteEventsToBigQuery(
            opts.bq_project, opts.bq_dataset, **bq_args)
        stats_bq = stats.stats | 'WriteStatsToBigQuery' >> bigquery.WriteStatsToBigQuery(
            opts.bq_project, opts.bq_dataset, decouple=True, ended_windows_only=True, **bq_args)
        stages['BigQueryEvents'] = events_bq.dead_letters
        stages['BigQueryStats'] = stats_bq.dead_letters
    dead_letters = write_dead_letters(stages, opts)
    return {'records': records, 'enriched': enriched.enriched, 'stats': stats.stats, 'dead_letters': dead_letters,
            **outputs}


def print_help() -> None:
    import argparse

    from apache_beam.options.pipeline_options import PrismRunnerOptions
    parser = argparse.ArgumentParser(prog='python -m pipelines.engagement', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for options_class in (StandardOptions, PrismRunnerOptions):
        options_class._add_argparse_args(parser)
    add_arguments(parser)
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
    except (InvalidOption, RunnerUnavailable) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    if (options.view_as(StandardOptions).no_wait_until_finish and runner_name(runner) == 'FlinkRunner'
            and options.view_as(FlinkRunnerOptions).flink_master == '[local]'):
        print('error: --no_wait_until_finish with --flink_master=[local]: the embedded Flink lives in a job server '
              'this process starts and stops, so the job would end when the command returns; drop the flag or '
              'give --flink_master=host:port of a cluster', file=sys.stderr)
        return 2
    if opts.kafka_read_splits > 1 and runners.is_prism(options):
        # Prism keeps one output-watermark estimate per SDF stage, from the bundle that ran last
        # (engine.Residuals.MinOutputWatermarks), not the minimum over the reader's elements: measured, a slow
        # partition's records in the other group fell behind the watermark and were dropped as too late.
        print(f'error: --kafka_read_splits={opts.kafka_read_splits}: Prism runs one SDK worker and keeps one '
              'watermark estimate for the reader, not the minimum over its partition groups; use 1 (or 0) on '
              'Prism, more on Flink or Dataflow', file=sys.stderr)
        return 2
    if opts.content_enrichment == 'side_input' and runners.is_prism(options) and opts.mode != 'backfill':
        print('error: --content_enrichment=side_input: Prism 2.77 refuses a triggered global-window side input '
              '(apache/beam#31438); use cache (or auto) on Prism', file=sys.stderr)
        return 2
    if is_dataflow(runner) and opts.early_firing_seconds != int(opts.early_firing_seconds):
        # The Python SDK round-trips a Dataflow pipeline through Beam's own AfterProcessingTime, which keeps
        # whole seconds only and no alignment (transforms.windows.AfterProcessingTimeMillis).
        print(f'error: --early_firing_seconds={opts.early_firing_seconds}: whole seconds on Dataflow',
              file=sys.stderr)
        return 2
    portable = options.view_as(PortableOptions)
    if not any(arg.startswith('--job_server_timeout') for arg in argv or ()):
        # Beam opens the job's state stream with this as its gRPC deadline (default 300 s): a streaming job on a
        # portable runner (Prism, Flink) would have its driver exit after 5 minutes.
        portable.job_server_timeout = STREAMING_JOB_SERVER_TIMEOUT_S
    standard = options.view_as(StandardOptions)
    backfill = opts.mode == 'backfill'
    if backfill:
        since_s, until_s = opts.backfill_range(opts.window_seconds)
        if since_s == until_s:
            print(f'nothing to backfill: --since={opts.since} is in the window in progress, which the live '
                  'pipeline counts', file=sys.stderr)
            return 0
        standard.streaming = False  # a bounded read: Beam's batch mode on every runner
        _LOG.info(json.dumps({'event': 'backfill_range', 'since': since_s, 'until': until_s,
                              'windows': (until_s - since_s) // opts.window_seconds}))
    elif not standard.streaming:
        _LOG.info('the Kafka source is unbounded: running in streaming mode')
        standard.streaming = True
    dry_run = options.view_as(TestOptions).dry_run
    if not dry_run:
        try:  # refused credentials are one line now, rather than retries or a worker's traceback later
            check_kafka(opts.kafka_consumer_config())
            check_postgres(opts.pg_dsn)
            if opts.redis_url:
                check_redis(opts.redis_url)
        except CredentialsRefused as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 2
    # A dry run only translates the graph: no Kafka to ask for committed positions.
    replay = None if dry_run or backfill else plan_replay(opts)
    if opts.bigquery_enabled and opts.bq_endpoint and not dry_run:
        # Tables are created up front with their partitioning and clustering (a table a load job creates has
        # neither); idempotent. Real BigQuery: once, `python -m launch.tools.bigquery --endpoint= ensure`.
        ensure_tables(opts.bq_project, opts.bq_dataset, opts.bq_endpoint)
    if opts.metrics_port and not dry_run:
        if is_dataflow(runner):
            _LOG.warning('--metrics_port is for the local runners; on Dataflow the metrics are Beam metrics')
        else:
            try:
                metrics.serve(opts.metrics_port, opts.metrics_host)
            except OSError as exc:
                print(f'error: --metrics_port={opts.metrics_port} on {opts.metrics_host}: {exc.strerror}; choose '
                      'another port or --metrics_port=0', file=sys.stderr)
                return 2
            _LOG.info(json.dumps({'event': 'metrics_served', 'url': f'http://{opts.metrics_host}:'
                                                                     f'{opts.metrics_port}/metrics'}))
    if not opts.kafka_read_splits and not dry_run and not backfill:
        opts.kafka_read_splits = runners.default_read_splits(options)
    flink_url = None if dry_run else runners.flink_cluster_url(options)
    if flink_url:  # a Flink cluster: the job gets a name of ours (Beam's default is unique per submission)
        cloud = options.view_as(GoogleCloudOptions)
        # (a backfill's name differs: starting one must not cancel the live job)
        cloud.job_name = cloud.job_name or f'engagement-{"backfill-" if backfill else ""}{opts.consumer_group}'
    pipeline = beam.Pipeline(runner=runner, options=options)
    try:
        if backfill:
            build_backfill(pipeline, opts, since_s, until_s)
        else:
            build(pipeline, opts, replay)
    except InvalidOption as exc:  # e.g. --kafka_reader=xlang without the expansion service `make install` builds
        print(f'error: {exc}', file=sys.stderr)
        return 2
    if flink_url:  # an earlier run's job on the cluster is cancelled first
        for jid in flink_cluster.cancel_jobs(flink_url, cloud.job_name):
            _LOG.warning(json.dumps({'event': 'flink_job_cancelled', 'job_id': jid, 'job_name': cloud.job_name,
                                     'reason': 'an earlier run\'s job of the same name was still running'}))
    result = pipeline.run()
    if dry_run:
        _LOG.info('dry run: the graph was translated for %s and not submitted', runner)
        return 0
    if standard.no_wait_until_finish or is_dataflow(runner):
        # A Dataflow job runs on Google's service: submitting is all this process does (the Flex Template
        # launcher relies on it to return).
        _LOG.info('submitted; not waiting for the job to finish')
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    state = None
    try:
        state = result.wait_until_finish()
    except KeyboardInterrupt:
        _LOG.info('stopping: cancelling the job')
        try:
            result.cancel()
            if flink_url:  # the job server's cancel does not reach a cluster's job
                flink_cluster.cancel_jobs(flink_url, options.view_as(GoogleCloudOptions).job_name)
        except Exception as exc:  # the job may already be gone; the process exits either way
            _LOG.warning('cancel failed: %s', exc)
    finally:
        stop_job_server_children(options)  # a Flink job server JVM we started (Beam's atexit hook is a backstop)
    if backfill:
        # (the state as the job ended: the job server that knew it may be gone by now)
        _LOG.info(json.dumps({'event': 'backfill_finished', 'state': str(state), 'since': since_s, 'until': until_s}))
        return 0 if state == PipelineState.DONE else 1
    return 0


def main() -> None:
    logs.configure(os.environ.get('ENGAGEMENT_LOG_LEVEL', 'INFO'))
    logging.getLogger('kafka').setLevel(logging.WARNING)  # kafka-python logs every connection at INFO
    sys.exit(run(sys.argv[1:]))


if __name__ == '__main__':
    main()
