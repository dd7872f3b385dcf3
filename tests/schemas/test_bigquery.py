"""BigQuery schemas follow the models: types, NULLABLE vs REQUIRED, computed columns."""
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

from schemas import ContentWindowStats, DeadLetter, EnrichedEvent, bigquery_fields


def by_name(model):
    return {f['name']: (f['type'], f['mode']) for f in bigquery_fields(model)}


def test_enriched_event_columns():
    columns = by_name(EnrichedEvent)

    assert columns['id'] == ('INT64', 'REQUIRED')
    assert columns['content_id'] == ('STRING', 'REQUIRED')
    assert columns['event_type'] == ('STRING', 'REQUIRED')          # a Literal of strings
    assert columns['event_ts'] == ('TIMESTAMP', 'REQUIRED')
    assert columns['duration_ms'] == ('INT64', 'NULLABLE')
    assert columns['raw_payload'] == ('JSON', 'NULLABLE')
    assert columns['engagement_percentage'] == ('FLOAT64', 'NULLABLE')
    assert columns['source_lsn'] == ('INT64', 'NULLABLE')
    assert list(columns)[:8] == ['id', 'content_id', 'user_id', 'event_type', 'event_ts', 'duration_ms', 'device',
                                 'raw_payload']                     # the order of the model


def test_computed_fields_become_columns():
    assert by_name(ContentWindowStats)['engagement_seconds'] == ('FLOAT64', 'REQUIRED')


def test_descriptions_are_carried_over():
    fields = {f['name']: f for f in bigquery_fields(DeadLetter)}

    assert 'base64' in fields['payload_encoding']['description']
    assert fields['payload']['mode'] == 'NULLABLE' and fields['first_failed_ts']['type'] == 'TIMESTAMP'


def test_every_scalar_kind_maps():
    class Row(BaseModel):
        flag: bool
        count: int | None
        ratio: float
        at: datetime
        blob: dict[str, Any]
        anything: Any

    assert by_name(Row) == {'flag': ('BOOLEAN', 'REQUIRED'), 'count': ('INT64', 'NULLABLE'),
                            'ratio': ('FLOAT64', 'REQUIRED'), 'at': ('TIMESTAMP', 'REQUIRED'),
                            'blob': ('JSON', 'REQUIRED'), 'anything': ('JSON', 'REQUIRED')}


def test_a_field_without_a_single_bigquery_type_is_refused():
    class Row(BaseModel):
        either: int | str

    with pytest.raises(TypeError, match='no single BigQuery type'):
        bigquery_fields(Row)
