"""The fast path of ParseEvents accepts only what `parse_record` accepts, with the same field values, and a batch
of records gives the same events and dead letters as the records one by one."""
import json
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launch.scenarios.corpus import CDC, corpus
from schemas import DeadLetter, IngestedEvent, KafkaRecord
from schemas.events import EventBatch
from schemas.kafka import KafkaBatch
from tests.schemas import samples
from transforms.fast_parse import MAX_BRACKETS, fast_fields
from transforms.parse import ParseEventsFn, ParseLimits, _reader_clock_ms, parse_record

NOW = datetime(2026, 11, 24, 12, 30, tzinfo=timezone.utc)
CDC_TOPICS = (samples.EVENTS_TOPIC,)
STAMP_MS = 1795522213410
NOW_MS = int(NOW.timestamp() * 1000)
LIMITS = ParseLimits()
EVENT_FIELDS = ('id', 'content_id', 'user_id', 'event_type', 'event_ts', 'duration_ms', 'device', 'raw_payload')


def record(value: bytes | None, cdc: bool, offset: int = 7, key: bytes | None = None,
           stamp: int = STAMP_MS) -> KafkaRecord:
    return KafkaRecord(samples.EVENTS_TOPIC if cdc else samples.RAW_TOPIC, 0, offset, key, value, stamp)


def agrees(value: bytes, cdc: bool, stamp: int = STAMP_MS, key: bytes | None = None) -> bool:
    """True when the fast path took the record; fails the test if it took one parse_record would not take, or
    gave other values."""
    rec = record(value, cdc, stamp=stamp, key=key)
    if len(value) + len(key or b'') > LIMITS.max_record_bytes:
        return False   # ParseEventsFn checks the size before the fast path
    fast = fast_fields(value, cdc, _reader_clock_ms(rec, NOW), LIMITS.max_future_seconds * 1_000_000)
    if fast is None:
        return False
    slow = parse_record(rec, CDC_TOPICS, NOW, LIMITS)
    assert isinstance(slow, IngestedEvent), (value, slow)
    fields, lsn = fast
    assert lsn == slow.source_lsn
    for name in EVENT_FIELDS:
        got, want = fields[name], getattr(slow, name)
        assert got == want and type(got) is type(want), (name, got, want, value)
    assert fields['event_ts'].tzinfo is slow.event_ts.tzinfo
    return True


def test_real_records_take_the_fast_path():
    assert agrees(samples.CDC_EVENT_VALUE, cdc=True)
    assert agrees(json.dumps(samples.DIRECT_EVENT).encode(), cdc=False)
    assert agrees(samples.cdc_value(op='r'), cdc=True)
    assert agrees(samples.cdc_value(op='u', duration_ms=None, device=None, raw_payload=None), cdc=True)
    assert agrees(samples.cdc_value(event_ts='2026-11-24T12:10:12Z'), cdc=True)


def test_what_pydantic_must_judge_is_left_to_it():
    # each of these is valid for parse_record or a dead letter there; the fast path takes none of them
    for value, cdc in [
        (samples.cdc_value(op='d'), True), (samples.cdc_value(op='t'), True),
        (samples.cdc_value(no_after=True), True),
        (samples.cdc_value(event_ts='2026-11-24T12:10:12.5+01:00'), True),      # an offset pydantic converts
        (samples.cdc_value(event_ts='2026-11-24 12:10:12Z'), True),
        (samples.cdc_value(content_id='D068A28B-4955-2C13-9BFB-A2AA15EA55FC'), True),  # a UUID it lower-cases
        (samples.cdc_value(raw_payload='{"position": 1.5}'), True),             # floats
        (samples.cdc_value(raw_payload='{"a": {"b": 1}}'), True),               # nesting
        (samples.cdc_value(duration_ms=True), True), (samples.cdc_value(id=1.0), True),
        (samples.cdc_value(event_ts='2026-11-24T24:00:00Z'), True),
        (samples.cdc_value(event_ts='1969-12-31T23:59:59Z'), True),
        (samples.cdc_value(event_ts='2026-11-24T12:40:12Z'), True),             # 10 min in the future
        (b'\xef\xbb\xbf' + samples.CDC_EVENT_VALUE, True),
        (json.dumps({**samples.DIRECT_EVENT, 'raw_payload': '{"a": 1}'}).encode(), False),
        (json.dumps({**samples.DIRECT_EVENT, 'x': [[[[1]]]] * MAX_BRACKETS}).encode(), False),
    ]:
        assert not agrees(value, cdc), value


def test_the_hostile_corpus_is_left_to_pydantic_or_agrees():
    taken = 0
    for hostile in corpus(NOW - timedelta(seconds=5), samples.CONTENT_AFTER['id'], samples.DIRECT_EVENT['user_id']):
        if hostile.value is None or hostile.stage != 'parse':
            continue
        if agrees(hostile.value, hostile.target == CDC, stamp=NOW_MS, key=hostile.key):
            taken += 1
    assert taken == 0   # every record meant to fail parsing was left to pydantic


_JSON_SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=4), inner, max_size=3), max_leaves=6)
_NEAR = {
    'id': st.integers(-2, 2) | st.integers(2**63 - 2, 2**63 + 2) | st.just(True) | st.just('1'),
    'content_id': st.sampled_from(['d068a28b-4955-2c13-9bfb-a2aa15ea55fc', 'D068A28B-4955-2C13-9BFB-A2AA15EA55FC',
                                   'd068a28b49552c139bfba2aa15ea55fc', '{d068a28b-4955-2c13-9bfb-a2aa15ea55fc}',
                                   'd068a28b-4955-2c13-9bfb-a2aa15ea55f', '']),
    'event_type': st.sampled_from(['play', 'pause', 'finish', 'click', 'Play', 'skip', '']),
    'event_ts': st.sampled_from(['2026-11-24T12:10:12Z', '2026-11-24T12:10:12.1Z', '2026-11-24T12:10:12.1234567Z',
                                 '2026-11-24T12:10:12+00:00', '2026-11-24T12:10:12-00:00', '2026-11-24T12:10Z',
                                 '2026-02-30T12:10:12Z', '1970-01-01T00:00:00Z', '2026-11-24T12:10:12',
                                 '2026-11-24T12:10:12z', '2026-11-24T12:10:60Z', '2026-11-24T12:10:12.000000+0000',
                                 '0001-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '2026-11-24T12:34:00Z']),
    'duration_ms': st.integers(-1, 1) | st.integers(2**31 - 2, 2**31 + 1) | st.none() | st.just(1.0),
    'device': st.none() | st.text(max_size=5) | st.integers(0, 1),
}


def _mutated(base: dict, changes: dict, drops: list) -> dict:
    out = {**base, **changes}
    for name in drops:
        out.pop(name, None)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(_NEAR)), data=st.data(), drops=st.lists(st.sampled_from(EVENT_FIELDS), max_size=1),
       payload=_JSON, extra=_JSON)
def test_mutated_records_agree(field, data, drops, payload, extra):
    value = data.draw(_NEAR[field] | _JSON)
    direct = _mutated(samples.DIRECT_EVENT, {field: value}, drops)
    cdc_row = _mutated(json.loads(samples.CDC_EVENT_VALUE)['after'], {field: value}, drops)
    for row in (direct, {**direct, 'raw_payload': payload}, {**direct, 'extra': extra}):
        agrees(json.dumps(row).encode(), cdc=False)
    envelope = json.loads(samples.CDC_EVENT_VALUE)
    for after in (cdc_row, {**cdc_row, 'raw_payload': json.dumps(payload)}, {**cdc_row, 'raw_payload': payload}):
        for changed in ({**envelope, 'after': after}, {**envelope, 'source': {**envelope['source'], 'lsn': extra}},
                        {**envelope, 'op': extra}, {**envelope, 'before': extra}):
            agrees(json.dumps(changed).encode(), cdc=True)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60) | st.sampled_from([samples.CDC_EVENT_VALUE[:n] for n in range(0, 600, 37)]))
def test_arbitrary_bytes_agree(value):
    agrees(value, cdc=True)
    agrees(value, cdc=False)


def _comparable(output):
    if isinstance(output, DeadLetter):
        return ('dead', output.model_dump(exclude={'first_failed_ts', 'last_failed_ts'}))
    return ('event', output.model_dump(), output.watermark_ms)


def test_a_batch_gives_what_its_records_give_one_by_one():
    now = datetime.now(timezone.utc)
    hostile = corpus(now - timedelta(seconds=5), samples.CONTENT_AFTER['id'], samples.DIRECT_EVENT['user_id'])
    limits = ParseLimits(skip=frozenset({('engagement.raw_events', 0, 4)}))
    fn = ParseEventsFn(CDC_TOPICS, limits)
    for cdc in (True, False):
        topic = samples.EVENTS_TOPIC if cdc else samples.RAW_TOPIC
        values = [samples.CDC_EVENT_VALUE if cdc else json.dumps(samples.DIRECT_EVENT).encode()] * 3
        values += [h.value for h in hostile if (h.target == CDC) == cdc]
        keys = [None if i % 2 else b'{"id":1}' for i in range(len(values))]
        now_ms = int(now.timestamp() * 1000)
        stamps = [now_ms - 1000 + i for i in range(len(values))]
        batch = KafkaBatch(topic, 0, list(range(len(values))), keys, values, stamps, now_ms - 3000)
        fn.start_bundle()
        batched = list(fn.process(batch))
        singles = [out for rec in batch.records() for out in fn.process(rec)]
        events = [e for out in batched if isinstance(out, EventBatch) for e in out.events]
        assert sum(isinstance(out, EventBatch) for out in batched) == 1
        want_events = [out.value for out in singles if isinstance(out.value, IngestedEvent)]
        assert len(want_events) >= 3
        assert [_comparable(e) for e in events] == [_comparable(e) for e in want_events]
        letters = [out.value for out in batched if not isinstance(out, EventBatch)]
        want_letters = [out.value for out in singles if isinstance(out.value, DeadLetter)]
        assert len(want_letters) > 10
        assert sorted(map(repr, map(_comparable, letters))) == sorted(map(repr, map(_comparable, want_letters)))
