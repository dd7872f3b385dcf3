"""Field types shared by the models: what "a UUID", "a UTC timestamp" and "a count" mean everywhere.

Strictness is deliberate. Producers outside our control write the raw topic, and a value that only looks right
(`"12"` for a duration, `1795522212` for a timestamp, a naive timestamp) must be rejected at the door rather than
silently coerced, so that bad input shows up as a dead letter with a precise reason.
"""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


_CANONICAL_UUID = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')


def _canonical_uuid(value: str) -> str:
    """Any spelling `uuid.UUID` accepts, returned in the lower-case hyphenated form Postgres' `id::text` uses.
    No version or variant check: the seed catalogue's ids are md5 hashes cast to UUID (e.g. version nibble 2).
    The canonical form (what Postgres and Debezium send) is recognised by a regex, a fifth of the cost of a
    round trip through `uuid.UUID`; it runs twice per event."""
    if _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise PydanticCustomError('uuid_parsing', 'Input should be a valid UUID') from None


def _timestamp_input(value: Any) -> Any:
    """Only an ISO-8601 string or a datetime: pydantic would otherwise read a number as Unix seconds."""
    if isinstance(value, (str, datetime)):
        return value
    raise PydanticCustomError('datetime_type', 'Input should be an ISO-8601 timestamp string with a UTC offset')


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


UuidStr = Annotated[StrictStr, AfterValidator(_canonical_uuid)]
"""A UUID kept as its canonical string (lower case, hyphenated)."""

UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_timestamp_input), AfterValidator(_to_utc)]
"""A timezone-aware instant, normalised to UTC. Naive timestamps and numbers are rejected."""

BigInt = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
"""A non-negative integer that fits BigQuery's INT64 (and Postgres BIGINT)."""
