"""Field types shared by the models: what "a UUID", "a UTC timestamp" and "a count" mean everywhere.

Strictness is deliberate. Producers outside our control write the raw topic, and a value that only looks right
(`"12"` for a duration, `1795522212` or `"1795522212"` for a timestamp, a naive timestamp) must be rejected at the
door rather than silently coerced, so that bad input shows up as a dead letter with a precise reason.

A timestamp is an RFC 3339 string: `YYYY-MM-DD`, `T` (or `t` or a space), `HH:MM[:SS[.fraction]]`, then `Z`
(`z`) or an offset `+HH:MM` / `+HHMM`; digits beyond microseconds are cut. A timestamp without a UTC form
(`0001-01-01T01:00:00+14:00`, `9999-12-31T23:00:00-14:00`) is rejected as `timestamp_out_of_range`, and so is an
event time before 1970-01-01T00:00:00Z (`EventDatetime`: no engagement predates it, and Kafka, Beam and the
sinks count time from the epoch), so that no datetime arithmetic downstream can overflow.
"""
from __future__ import annotations

import math
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


_DATE_TIME = r'\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,12})?)?'
_RFC3339 = re.compile(_DATE_TIME + r'(?:[Zz]|[+-]\d{2}:?\d{2})')
_RFC3339_NAIVE = re.compile(_DATE_TIME)
_RFC3339_EXAMPLE = 'an RFC 3339 timestamp string with a UTC offset, e.g. 2026-11-24T12:10:14.536825+00:00'
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _timestamp_input(value: Any) -> Any:
    """Only an RFC 3339 string (or a datetime built by our own code): pydantic would otherwise read a number, or a
    string of digits, as Unix seconds or milliseconds."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError('datetime_type', f'Input should be {_RFC3339_EXAMPLE}, not a number')
    if _RFC3339.fullmatch(value):
        return value
    if _RFC3339_NAIVE.fullmatch(value):
        raise PydanticCustomError('timezone_aware', 'Input should have timezone info (Z or +HH:MM)')
    raise PydanticCustomError('datetime_parsing', f'Input should be {_RFC3339_EXAMPLE}')


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-14:00: its UTC instant is in year 10000
        raise PydanticCustomError('timestamp_out_of_range',
                                  'Timestamp out of range: it has no UTC instant between 0001-01-01 and '
                                  '9999-12-31') from None


def _not_before_epoch(value: datetime) -> datetime:
    if value < EARLIEST_TIMESTAMP:
        raise PydanticCustomError('timestamp_out_of_range',
                                  'Timestamp out of range: an event time must not be before 1970-01-01T00:00:00Z')
    return value


UuidStr = Annotated[StrictStr, AfterValidator(_canonical_uuid)]
"""A UUID kept as its canonical string (lower case, hyphenated)."""

UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_timestamp_input), AfterValidator(_to_utc)]
"""A timezone-aware instant, normalised to UTC. Naive timestamps and numbers are rejected."""

EventDatetime = Annotated[UtcDatetime, AfterValidator(_not_before_epoch)]
"""An event time: a `UtcDatetime` from 1970-01-01T00:00:00Z on."""

def _finite_json(value: Any) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), though the parser reads them: a payload holding one would be
    written out as invalid JSON and fail a whole request of the REST API sink, or a BigQuery row."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                raise PydanticCustomError('finite_number', 'Input should hold finite numbers only (no NaN or '
                                                           'Infinity)')
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_finite_json)]
"""A JSON object of finite numbers."""

BigInt = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
"""A non-negative integer that fits BigQuery's INT64 (and Postgres BIGINT)."""
