"""`--mode=backfill`: the graph over a bounded read of `engagement_events` from Postgres.

    python -m pipelines.engagement --mode=backfill --since=2026-12-01T00:00:00Z [--until=...] <runner flags>

Rows of [since, until) (aligned outward to whole windows, until at most the start of the window in progress) go
through the same validation, enrichment and window aggregation as the live pipeline and into the same Redis keys
(per-user keys too, with `--user_recent_contents`) and BigQuery tables. Idempotent with a live pipeline running:
every Redis pane is written as absolute values and a pane with fewer events than the stored one changes nothing
(connectors/redis_script.py); a window the backfill covers is whole, so its final pane equals the live one; BigQuery
rows carry the event id and the views keep one per id (events) and per window and content (stats). Not written: the
REST API (it notifies of live events; a replayed notification is a no-op for an idempotent receiver, but a backfill
of a month is not what it is for), viral alerts (history is not news). Dead letters go to the dead-letter topic (and
table) as in the live pipeline.
"""
from __future__ import annotations

import apache_beam as beam

from connectors.bigquery import sink as bigquery
from connectors.postgres import ReadEventRows
from connectors.redis import WriteContentStatsToRedis
from connectors.redis_users import WriteUserEngagementToRedis
from pipelines.dead_letters import write_dead_letters
from pipelines.options import EngagementOptions
from transforms.enrich import EnrichWithContent, PostgresContentLoader
from transforms.privacy import Pseudonymize
from transforms.rows import ParseRows
from transforms.windows import ContentStatsPerWindow


def build_backfill(p: beam.Pipeline, opts: EngagementOptions, since_s: int, until_s: int) -> dict:
    """Assemble the backfill graph on `p` for event times [since_s, until_s) (epoch seconds, whole windows)."""
    rows = p | 'ReadEventRows' >> ReadEventRows(opts.pg_dsn, since_s, until_s, opts.backfill_rows_per_read)
    parsed = rows | 'ParseRows' >> ParseRows()
    enriched = parsed.events | 'EnrichWithContent' >> EnrichWithContent(
        PostgresContentLoader(opts.pg_dsn), refresh_seconds=opts.content_refresh_seconds)
    stats = enriched.enriched | 'ContentStatsPerWindow' >> ContentStatsPerWindow(
        window_seconds=opts.window_seconds, early_firing_seconds=opts.early_firing_seconds,
        allowed_lateness_seconds=opts.allowed_lateness_seconds, shards=opts.window_shards)
    written = stats.stats | 'WriteContentStatsToRedis' >> WriteContentStatsToRedis(
        opts.redis_url, redis_prefix=opts.redis_prefix, ttl_seconds=opts.redis_ttl_seconds)
    stages = {'Parse': parsed.dead_letters, 'Enrich': enriched.dead_letters, 'Window': stats.dead_letters,
              'Redis': written.dead_letters}
    outgoing = enriched.enriched
    if opts.pseudonymize_user_ids and (opts.bigquery_enabled or opts.user_recent_contents):
        outgoing = outgoing | 'PseudonymizeUserIds' >> Pseudonymize()
    if opts.user_recent_contents:
        stages['RedisUsers'] = outgoing | 'WriteUserEngagementToRedis' >> WriteUserEngagementToRedis(
            opts.redis_url, opts.redis_prefix, opts.user_recent_contents, opts.user_ttl_seconds)
    if opts.bigquery_enabled:
        bq_args = bigquery.write_kwargs(opts)
        events_bq = outgoing | 'WriteEventsToBigQuery' >> bigquery.WriteEventsToBigQuery(
            opts.bq_project, opts.bq_dataset, **bq_args)
        stats_bq = stats.stats | 'WriteStatsToBigQuery' >> bigquery.WriteStatsToBigQuery(
            opts.bq_project, opts.bq_dataset, decouple=True, ended_windows_only=True, **bq_args)
        stages['BigQueryEvents'] = events_bq.dead_letters
        stages['BigQueryStats'] = stats_bq.dead_letters
    dead_letters = write_dead_letters(stages, opts)
    return {'rows': rows, 'enriched': enriched.enriched, 'stats': stats.stats, 'dead_letters': dead_letters}
