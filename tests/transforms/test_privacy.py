"""Pseudonymous user ids: keyed, stable, a UUID; the key only from the environment, never shown."""
from __future__ import annotations

import re

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.options import EngagementOptions, InvalidOption
from transforms import privacy
from transforms.privacy import MissingPseudonymKey, Pseudonymize, pseudonym, pseudonym_key

USER = 'c4ca4238-a0b9-2382-0dcc-509a6f75849b'
KEY = b'0123456789abcdef-a-test-key'


def test_a_pseudonym_is_a_uuid_stable_under_one_key_and_different_under_another():
    first = pseudonym(USER, KEY)
    assert re.fullmatch(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', first)
    assert first == pseudonym(USER, KEY) != USER
    assert pseudonym(USER, KEY + b'x') != first
    assert pseudonym('c4ca4238-a0b9-2382-0dcc-509a6f75849c', KEY) != first


def test_the_key_comes_from_the_variable_or_its_file_and_is_never_shown(monkeypatch, tmp_path):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    monkeypatch.delenv(privacy.KEY_FILE_ENV, raising=False)
    with pytest.raises(MissingPseudonymKey, match='ENGAGEMENT_PSEUDONYM_KEY'):
        pseudonym_key()
    secret = tmp_path / 'key'
    secret.write_bytes(KEY + b'\n')
    monkeypatch.setenv(privacy.KEY_FILE_ENV, str(secret))
    assert pseudonym_key() == KEY
    monkeypatch.setenv(privacy.KEY_ENV, 'short-secret')
    with pytest.raises(MissingPseudonymKey) as refused:
        pseudonym_key()
    assert 'at least 16 bytes' in str(refused.value) and 'short-secret' not in str(refused.value)


def test_the_flag_without_a_key_is_refused_naming_the_variables(monkeypatch):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    monkeypatch.delenv(privacy.KEY_FILE_ENV, raising=False)
    with pytest.raises(InvalidOption, match=r'--pseudonymize_user_ids=True: .*set ENGAGEMENT_PSEUDONYM_KEY'):
        PipelineOptions(['--pseudonymize_user_ids']).view_as(EngagementOptions).validate()


def test_in_a_pipeline_only_the_user_id_changes(monkeypatch):
    from tests.transforms.test_rows import NOW, ROW
    from transforms.rows import parse_row
    monkeypatch.setenv(privacy.KEY_ENV, KEY.decode())
    event = parse_row(dict(ROW), NOW)
    with test_pipeline.TestPipeline(runner='FnApiRunner') as p:
        out = p | beam.Create([event]) | Pseudonymize()
        assert_that(out | beam.Map(lambda e: (e.id, e.user_id, e.content_id, e.event_ts)),
                    equal_to([(event.id, pseudonym(event.user_id, KEY), event.content_id, event.event_ts)]))
