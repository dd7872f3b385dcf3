"""Pydantic models of everything the pipeline reads, holds and writes; each defined once. Validation, the JSON
schema (`Model.model_json_schema()`) and the BigQuery schema (`schemas.bigquery.bigquery_fields`) derive from them.
This package imports nothing else of the project."""
from schemas.bigquery import bigquery_fields
from schemas.content import Content, ContentType
from schemas.dead_letter import DeadLetter, Stage
from schemas.debezium import DebeziumEnvelope, DebeziumSource
from schemas.events import (
    EVENT_TYPES,
    CdcEngagementRow,
    DirectEvent,
    EngagementEvent,
    EnrichedEvent,
    EventType,
    IngestedEvent,
)
from schemas.kafka import KafkaRecord
from schemas.stats import ContentWindowStats, ContentWindowStatsRow

__all__ = ['EVENT_TYPES', 'CdcEngagementRow', 'Content', 'ContentType', 'ContentWindowStats', 'ContentWindowStatsRow',
           'DeadLetter', 'DebeziumEnvelope', 'DebeziumSource', 'DirectEvent', 'EngagementEvent', 'EnrichedEvent',
           'EventType', 'IngestedEvent', 'KafkaRecord', 'Stage', 'bigquery_fields']
