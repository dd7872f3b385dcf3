"""The fast path of `ParseEvents`: a record that is an ordinary, valid event, read with orjson and plain checks.

    fields = fast_fields(value, cdc, clock_ms, max_future_us)   # the event's fields and its LSN, or None

`None` means "not certainly an ordinary valid event": the caller then parses the record with `parse_record`
(pydantic), which gives the same event, or the dead letter with its reason, or the skip. So the fast path never
decides that a record is bad; it only accepts, and it accepts exactly what `parse_record` accepts with the same
field values (`tests/transforms/test_fast_parse.py` checks both on the sample records, the hostile corpus and
random mutations of them).

Accepted: a JSON object (no BOM, at most `MAX_BRACKETS` brackets so that pydantic's recursion limit cannot be
reached) whose fields have exactly the types the models demand: `id` an int in 0..2**63-1; `content_id` and
`user_id` canonical lower-case UUIDs; `event_type` one of EVENT_TYPES; `event_ts` `YYYY-MM-DDTHH:MM:SS[.ffffff]`
with `Z` or `+00:00`, not before the epoch and not beyond `max_future_us` ahead of the reader's clock;
`duration_ms` None or an int in 0..2**31-1; `device` None or a string; `raw_payload` None or a JSON object
(CDC: a string holding one) of strings, ints within int64, booleans and nulls. CDC envelopes: `op` c, r or u,
an `after` row as above, `source` an object whose known fields have their declared types, `before` None or an
object, `ts_ms` None or an int. Everything else (floats, nesting, other spellings of a time or a UUID, unknown
ops, deletes, tombstones) goes to pydantic.

Why orjson and not pydantic's own JSON: `DirectEvent.model_validate_json` costs ~6.5 µs per record, most of it
the envelope's nested models and the validators of each field; orjson reads the record in ~1.8 µs and the checks
below cost ~1.5 µs (`python -m tests.benchmarks.bench_parse`).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import orjson

from schemas.events import EVENT_TYPES
from schemas.types import INT32_MAX, INT64_MAX

# pydantic's JSON parser refuses nesting beyond 200 levels (`too_deeply_nested`); orjson reads up to 1024. A record
# with fewer brackets than this cannot be nested that deep, wherever the brackets are (strings included).
MAX_BRACKETS = 128

_UUID = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}').fullmatch
_TIMESTAMP = re.compile(r'\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|\+00:00)').fullmatch
_EVENT_TYPES = frozenset(EVENT_TYPES)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_PAYLOAD_SCALARS = (str, bool, type(None))
_CDC_OPS = frozenset(('c', 'r', 'u'))
_NONE = type(None)
# exact types allowed (a bool is not an int here, as for pydantic's strict ints)
_OPTIONAL_INT = {int: True, _NONE: True}
_OPTIONAL_STR = {str: True, _NONE: True}
_SNAPSHOT = {str: True, bool: True, _NONE: True}
_loads = orjson.loads


def _payload_ok(payload) -> bool:
    for value in payload.values():
        kind = type(value)
        if kind is int:
            if not -2**63 <= value <= 2**64 - 1:
                return False
        elif kind not in _PAYLOAD_SCALARS:
            return False
    return True


def _row_fields(row: dict, cdc: bool, clock_ms: int, max_future_us: float) -> dict | None:
    """The EngagementEvent fields of `row`, or None."""
    event_id = row.get('id')
    if type(event_id) is not int or not 0 <= event_id <= INT64_MAX:
        return None
    content_id, user_id = row.get('content_id'), row.get('user_id')
    if type(content_id) is not str or type(user_id) is not str or not _UUID(content_id) or not _UUID(user_id):
        return None
    event_type = row.get('event_type')
    if type(event_type) is not str or event_type not in _EVENT_TYPES:
        return None
    text = row.get('event_ts')
    if type(text) is not str or not _TIMESTAMP(text):
        return None
    try:
        event_ts = datetime.fromisoformat(text)
    except ValueError:  # 24:00, 23:59:60, 02-30 ...: pydantic says which
        return None
    micros = (event_ts - _EPOCH) // _MICROSECOND
    if micros < 0 or micros - clock_ms * 1000 > max_future_us:
        return None
    duration = row.get('duration_ms')
    if duration is not None and (type(duration) is not int or not 0 <= duration <= INT32_MAX):
        return None
    device = row.get('device')
    if device is not None and type(device) is not str:
        return None
    payload = row.get('raw_payload')
    if payload is not None:
        if cdc:
            if type(payload) is not str or payload[:1] != '{':
                return None
            try:
                payload = _loads(payload)
            except orjson.JSONDecodeError:
                return None
        if type(payload) is not dict or not _payload_ok(payload):
            return None
    if event_ts.tzinfo is not timezone.utc:
        event_ts = event_ts.replace(tzinfo=timezone.utc)
    return {'id': event_id, 'content_id': content_id, 'user_id': user_id, 'event_type': event_type,
            'event_ts': event_ts, 'duration_ms': duration, 'device': device, 'raw_payload': payload}


def fast_fields(value: bytes, cdc: bool, clock_ms: int, max_future_us: float) -> tuple[dict, int | None] | None:
    """(EngagementEvent fields, LSN) of a record value that is certainly a valid event, else None (see the module
    docstring). `clock_ms` is the reader's clock (`transforms.parse._reader_clock_ms`)."""
    if value[:1] != b'{' or value.count(b'{') + value.count(b'[') >= MAX_BRACKETS:
        return None
    try:
        document = _loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict:
        return None
    if not cdc:
        fields = _row_fields(document, False, clock_ms, max_future_us)
        return None if fields is None else (fields, None)
    op = document.get('op')
    if type(op) is not str or op not in _CDC_OPS:
        return None
    source, after = document.get('source'), document.get('after')
    if type(source) is not dict or type(after) is not dict:
        return None
    get = source.get
    lsn, snapshot, before = get('lsn'), get('snapshot'), document.get('before')
    if not (_OPTIONAL_INT.get(type(lsn)) and _OPTIONAL_INT.get(type(get('ts_ms')))
            and _OPTIONAL_INT.get(type(document.get('ts_ms'))) and _OPTIONAL_STR.get(type(get('db')))
            and _OPTIONAL_STR.get(type(get('schema'))) and _OPTIONAL_STR.get(type(get('table')))
            and _SNAPSHOT.get(type(snapshot)) and (before is None or type(before) is dict)):
        return None
    fields = _row_fields(after, True, clock_ms, max_future_us)
    return None if fields is None else (fields, lsn)
