"""What the BigQuery tests write (models) and how they run and read it (Prism, the emulator)."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from connectors.bigquery import clients
from schemas import ContentWindowStats, EnrichedEvent
from tests.schemas.samples import DIRECT_EVENT


def enriched(event_id=1, lsn=None, **changes):
    return EnrichedEvent(**{**DIRECT_EVENT, 'id': event_id}, source='cdc', source_topic='engagement.public.events',
                         source_partition=2, source_offset=40 + event_id, source_lsn=lsn,
                         ingest_ts='2026-11-24T12:10:15+00:00', content_title='Privacy #12', content_type='podcast',
                         length_seconds=1464, engagement_seconds=369.895, engagement_percentage=25.27, **changes)


def stats(events=3, pane_index=0):
    return ContentWindowStats(window_start=1795522200, window_end=1795522260,
                              content_id='a51d444e-e690-fb8c-ac33-cf8ddd89c590', content_type='podcast', title='t',
                              events=events, play=events, pause=0, finish=0, click=0, engagement_ms=1500,
                              pane_index=pane_index)



def run(build) -> None:
    with beam.Pipeline(runner='PrismRunner', options=PipelineOptions([])) as p:
        build(p)


def query(cfg, sql: str) -> list[dict]:
    client = clients.gcp_client(cfg.bq_project, cfg.bq_endpoint)
    return [dict(row) for row in client.query(sql).result()]
