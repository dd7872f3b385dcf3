"""Engagement events, from the wire formats to the enriched event, each field defined once.

    EngagementEvent      the raw event: one row of `engagement_events`
     ├─ DirectEvent      the JSON a producer writes straight onto the raw topic (same fields)
     ├─ CdcEngagementRow the row as Debezium's JSON converter writes it (JSONB arrives as a JSON string)
     └─ IngestedEvent    + where the pipeline read it (source, topic, partition, offset, LSN, ingest time)
         └─ EnrichedEvent + the content it refers to and the engagement figures derived from both

`id` is the event's identity end to end: sinks and the window aggregation deduplicate on it.
"""
from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, Json, StrictFloat, StrictInt, StrictStr

from schemas.content import ContentType
from schemas.types import INT32_MAX, BigInt, EventDatetime, JsonObject, UtcDatetime, UuidStr

EventType = Literal['play', 'pause', 'finish', 'click']
EVENT_TYPES: tuple[EventType, ...] = ('play', 'pause', 'finish', 'click')
Source = Literal['cdc', 'direct', 'backfill']


class EngagementEvent(BaseModel):
    """A user's play, pause, finish or click on a piece of content. Unknown extra fields are ignored, so producers
    can add fields without breaking the pipeline; known fields are strictly typed."""
    model_config = ConfigDict(frozen=True, extra='ignore')

    id: BigInt = Field(description='Event id, the identity end to end: Postgres BIGSERIAL, or for direct '
                                   'producers a large integer outside the BIGSERIAL range.')
    content_id: UuidStr = Field(description='Id of the content engaged with (UUID).')
    user_id: UuidStr = Field(description='Id of the user (UUID).')
    event_type: EventType = Field(description="'play', 'pause', 'finish' or 'click'.")
    event_ts: EventDatetime = Field(description='When the user did it (UTC); the event time of the pipeline.')
    duration_ms: StrictInt | None = Field(None, ge=0, le=INT32_MAX,
                                          description='Milliseconds engaged; NULL for clicks and players that '
                                                      'do not report it.')
    device: StrictStr | None = Field(None, description="Device family, e.g. 'ios', 'web'.")
    raw_payload: JsonObject | None = Field(None, description='Client payload, kept as sent.')


class DirectEvent(EngagementEvent):
    """The raw topic's wire format: one JSON object per Kafka record, `event_ts` ISO-8601 with offset and
    `raw_payload` a JSON object, e.g. (launch/scenarios/generate.py `--direct`)::

        {"id": 1795522214408970001, "content_id": "...", "user_id": "...", "event_type": "pause",
         "event_ts": "2026-11-24T12:10:14.536825+00:00", "duration_ms": 369895, "device": "web",
         "raw_payload": {"referrer": "push"}}
    """


class CdcEngagementRow(EngagementEvent):
    """An `engagement_events` row in a Debezium envelope (JSON converter, schemas disabled): UUIDs and
    TIMESTAMPTZ arrive as strings, which the base types accept; JSONB arrives as a JSON-encoded string and is
    parsed a second time here."""
    raw_payload: Json[JsonObject] | None = Field(None, description='JSONB column, JSON-encoded by Debezium.')


class IngestedEvent(EngagementEvent):
    """An event plus where the pipeline read it. `source_lsn` orders versions of one row (a CDC update re-emits
    the event with a higher LSN); replays of the same change carry the same LSN. `ingest_ts` is the Kafka record
    timestamp, not the wall clock, so a replay yields the same value."""
    model_config = ConfigDict(extra='forbid')

    source: Source = Field(description="'cdc' (Debezium), 'direct' (raw topic) or 'backfill' (bounded read).")
    source_topic: StrictStr | None = Field(None, description='Kafka topic read from.')
    source_partition: StrictInt | None = Field(None, ge=0, description='Kafka partition.')
    source_offset: BigInt | None = Field(None, description='Kafka offset.')
    source_lsn: BigInt | None = Field(None, description='Postgres LSN of the change (CDC only).')
    ingest_ts: UtcDatetime | None = Field(None, description='Kafka record timestamp (UTC).')
    watermark_ms: StrictInt | None = Field(
        None, exclude=True,
        description="The reader's output watermark when it emitted the record (ms since the epoch; None when not "
                    'known yet or not read from Kafka). Run-time state, not part of the event: excluded from dumps '
                    'and columns. ContentStatsPerWindow compares it with the window deadline to route too_late.')


class EnrichedEvent(IngestedEvent):
    """An event joined with its content and the engagement figures derived from both (computed by
    `transforms.enrich.engagement_metrics`)."""
    content_title: StrictStr = Field(description='Title of the content.')
    content_type: ContentType = Field(description="'podcast', 'newsletter' or 'video'.")
    length_seconds: StrictInt | None = Field(None, ge=0, description='Length of the content, NULL when unknown.')
    engagement_seconds: StrictFloat | None = Field(
        None, description='duration_ms / 1000; NULL when the duration is NULL.')
    engagement_percentage: StrictFloat | None = Field(
        None, description='engagement_seconds / length_seconds * 100, rounded half-up to 2 decimals; NULL when '
                          'duration or length is NULL or length is 0. May exceed 100 (replays, loops).')


class EventBatch(NamedTuple):
    """Events handed from one step of the pipeline to the next as one element (`--event_batches`): the events of
    one Kafka poll, each with its own `event_ts` (the batch's element timestamp is that of the poll's earliest
    record, not theirs). Beam's batched DoFns do not fit here: they batch only elements that share a timestamp and
    window, and every event has its own. The steps that need one element per event (the event sinks) get them from
    `transforms.batches.ExplodeEventBatches`, at their event_ts."""
    events: list
