"""Dead letters keep the original bytes recoverable and serialise to one JSON line."""
import base64
import json
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from schemas import DeadLetter, KafkaRecord
from tests.schemas import samples

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def letter(key, value, **overrides):
    record = KafkaRecord(samples.RAW_TOPIC, 2, 41, key, value, 1795522214500)
    args = dict(stage='parse', reason='malformed_json', error='truncated', now=NOW)
    return DeadLetter.for_record(record, **{**args, **overrides})


def test_utf8_payload_is_kept_as_text():
    dead = letter(b'17', b'{"id": 17, "content_id": "a51d')

    assert (dead.payload, dead.key, dead.payload_encoding) == ('{"id": 17, "content_id": "a51d', '17', 'utf-8')
    assert (dead.source_topic, dead.source_partition, dead.source_offset) == (samples.RAW_TOPIC, 2, 41)


def test_non_utf8_payload_and_key_are_base64_and_decode_to_the_original_bytes():
    dead = letter(b'17', b'\xff\xfe{"id"')

    assert dead.payload_encoding == 'base64'
    assert base64.b64decode(dead.payload) == b'\xff\xfe{"id"'
    assert base64.b64decode(dead.key) == b'17'


def test_to_json_is_one_line_that_validates_back():
    dead = letter(None, None, reason='empty_payload', error='no value\non two lines', event_id=17)

    line = dead.to_json()

    assert '\n' not in line
    assert json.loads(line)['first_failed_ts'] == '2026-11-24T12:00:00Z'
    assert DeadLetter.model_validate_json(line) == dead


def test_idempotency_key_is_the_same_for_a_replayed_failure_and_differs_per_reason():
    first = letter(b'17', b'{', event_id=17)
    replay = DeadLetter.for_record(KafkaRecord(samples.RAW_TOPIC, 2, 99, b'17', b'{', 1795522299000), stage='parse',
                                   reason='malformed_json', error='truncated', now=NOW, event_id=17)
    anonymous = letter(None, b'{')

    assert first.idempotency_key() == replay.idempotency_key() == 'parse/malformed_json/event/17'
    assert anonymous.idempotency_key() == f'parse/malformed_json/kafka/{samples.RAW_TOPIC}/2/41'
    assert letter(b'17', b'{', event_id=17, reason='wrong_type').idempotency_key() != first.idempotency_key()


@pytest.mark.parametrize('reason', ['Too Late', '', 'x' * 65, 'too-late'])
def test_reason_must_be_a_short_machine_code(reason):
    with pytest.raises(ValidationError):
        letter(b'1', b'{', reason=reason)


@pytest.mark.parametrize('value', [
    b'\x01' * 200_000,                     # control characters: six bytes each once JSON-escaped
    b'\xff' * 800_000,                     # not UTF-8: base64, a third larger
    ('é' * 300_000).encode('utf-8'),       # two bytes each in UTF-8
])
def test_an_oversized_dead_letter_is_cut_to_fit_with_the_size_and_hash_of_the_whole(value):
    import hashlib
    whole = letter(b'k' * 5000, value)

    cut = whole.fitted(100_000)

    size = len(cut.to_json().encode('utf-8'))
    assert 99_000 <= size <= 100_000                                  # the longest prefix that fits
    assert (cut.original_size_bytes, cut.original_sha256) == (len(value), hashlib.sha256(value).hexdigest())
    assert value.startswith(cut.payload_bytes()) and len(cut.key) == 1024
    assert (cut.reason, cut.source_offset, cut.payload_encoding) == (
        whole.reason, whole.source_offset, whole.payload_encoding)
    assert DeadLetter.model_validate_json(cut.to_json()) == cut


def test_a_dead_letter_that_fits_is_left_as_it_is():
    small = letter(b'17', b'{"id": 17}')
    assert small.fitted(10_000) is small and small.original_sha256 is None
