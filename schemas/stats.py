"""Per-content, per-window engagement figures: what the windowed aggregation emits for each pane."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, computed_field

from schemas.content import ContentType
from schemas.types import BigInt, UtcDatetime, UuidStr

PaneTiming = Literal['EARLY', 'ON_TIME', 'LATE', 'UNKNOWN']


class ContentWindowStats(BaseModel):
    """Engagement with one content in one event-time window, as of one pane. Panes accumulate: each pane holds
    the window's totals so far, so a sink writes it as an absolute value keyed by (window_start, content_id) and a
    replayed or repeated pane cannot double-count. Each event id counts once (duplicates are ignored; a newer
    version of an event replaces the older one). `pane_timing`/`pane_index` are informative only: Prism labels
    panes unreliably, so nothing may depend on them. `extra='ignore'` lets a dumped row (which includes the
    computed `engagement_seconds`) be validated back."""
    model_config = ConfigDict(frozen=True, extra='ignore')

    window_start: StrictInt = Field(description='Window start, seconds since the epoch (UTC), inclusive.')
    window_end: StrictInt = Field(description='Window end, seconds since the epoch (UTC), exclusive.')
    content_id: UuidStr = Field(description='Content id (UUID).')
    content_type: ContentType = Field(description="'podcast', 'newsletter' or 'video'.")
    title: StrictStr = Field(description='Content title.')
    events: BigInt = Field(description='Distinct events in the window so far.')
    play: BigInt = Field(description='Distinct play events.')
    pause: BigInt = Field(description='Distinct pause events.')
    finish: BigInt = Field(description='Distinct finish events.')
    click: BigInt = Field(description='Distinct click events.')
    engagement_ms: BigInt = Field(description='Sum of duration_ms over the events that have one.')
    pane_timing: PaneTiming = Field('UNKNOWN', description='EARLY, ON_TIME, LATE (informative only).')
    pane_index: StrictInt = Field(0, ge=0, description='Index of the pane within the window (informative only).')
    newest_ingest_ms: StrictInt | None = Field(
        None, exclude=True, description='Kafka timestamp (ms since the epoch) of the newest event counted in the '
                                        'window so far: run-time state for the Kafka-to-Redis latency metric, '
                                        'neither written nor compared.')

    @computed_field(description='engagement_ms / 1000.')  # type: ignore[prop-decorator]
    @property
    def engagement_seconds(self) -> float:
        return self.engagement_ms / 1000


class ContentWindowStatsRow(ContentWindowStats):
    """A pane as one row of the append-only BigQuery table `content_minute_stats_raw`: the pane, when the sink
    wrote it, and the window start as a TIMESTAMP (the table's DAY partitioning column). A (content, window) gets
    a row per pane; the newest written one is its current value (the `content_minute_stats` view), as in Redis."""
    written_ts: UtcDatetime = Field(description='When the sink received this pane from the windowing (UTC, wall '
                                                'clock; before any shuffle, so it keeps the order of the panes); the '
                                                'newest row per (content_id, window_start) is the current value.')

    @computed_field(description='window_start as a TIMESTAMP (the DAY partitioning column).')  # type: ignore[prop-decorator]
    @property
    def window_start_ts(self) -> datetime:
        return datetime.fromtimestamp(self.window_start, timezone.utc)
