"""Debezium's change-event envelope as the JSON converter writes it with `schemas.enable=false`.

    {"before": null, "after": {...row...}, "source": {"lsn": 26621312, "table": "engagement_events", ...},
     "op": "c", "ts_ms": 1795522213403, "transaction": null, ...}

`op`: `c` insert, `r` snapshot read, `u` update, `d` delete, `t` truncate, `m` logical-decoding message.
`before` is kept as a plain mapping: under the default REPLICA IDENTITY it holds only the primary key (every
other column null), which would not pass the row model. Use it as `DebeziumEnvelope[CdcEngagementRow]` or
`DebeziumEnvelope[Content]`.
"""
from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

RowT = TypeVar('RowT', bound=BaseModel)


class DebeziumSource(BaseModel):
    """The `source` block: where and when the change happened (only the fields the pipeline uses)."""
    model_config = ConfigDict(frozen=True, extra='ignore')

    db: StrictStr | None = None
    schema_: StrictStr | None = Field(None, alias='schema')
    table: StrictStr | None = None
    lsn: StrictInt | None = Field(None, description='Postgres LSN of the change.')
    ts_ms: StrictInt | None = Field(None, description='Commit time in the database (ms since the epoch).')
    snapshot: StrictStr | bool | None = Field(None, description="'true', 'last', 'false', ... while snapshotting.")


class DebeziumEnvelope(BaseModel, Generic[RowT]):
    """A Debezium change event for a table whose row model is `RowT`."""
    model_config = ConfigDict(frozen=True, extra='ignore')

    before: dict[str, Any] | None = None
    after: RowT | None = None
    source: DebeziumSource
    op: StrictStr = Field(description='c, r, u, d, t or m; checked by the consumer, which decides what an '
                                      'unexpected operation means for it.')
    ts_ms: StrictInt | None = Field(None, description='When Debezium processed the change (ms since the epoch).')
