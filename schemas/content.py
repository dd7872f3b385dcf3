"""The content catalogue: one row of Postgres' `content` table (also the `after` of its Debezium topic)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from schemas.types import INT32_MAX, UtcDatetime, UuidStr

ContentType = Literal['podcast', 'newsletter', 'video']


class Content(BaseModel):
    """A video, podcast or newsletter that users engage with."""
    model_config = ConfigDict(frozen=True, extra='ignore')

    id: UuidStr = Field(description='Content id (UUID).')
    slug: StrictStr = Field(description='Unique human-readable key.')
    title: StrictStr = Field(description='Display title.')
    content_type: ContentType = Field(description="'podcast', 'newsletter' or 'video'.")
    length_seconds: StrictInt | None = Field(None, ge=0, le=INT32_MAX,
                                             description='Playing or reading time; NULL when unknown.')
    publish_ts: UtcDatetime = Field(description='When the content was published (UTC).')
