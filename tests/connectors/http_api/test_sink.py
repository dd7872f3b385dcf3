"""DeliverToApi against the real local receiver: one stored event per id with duplicates in the input, a receiver
that is gone (every event dead-lettered with its reason, none lost, redelivered once it is back), and one run
inside a Beam pipeline with faults; no secret in display data."""
from __future__ import annotations

import collections

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.display import DisplayData
from apache_beam.utils.timestamp import Timestamp

from connectors.http_api.client import ApiSinkConfig
from connectors.http_api.sink import DeliverToApi, DeliverToApiFn
from schemas import EnrichedEvent
from schemas.dead_letter import DeadLetter
from tests.api_support import ReceiverProcess
from tests.conftest import free_ports
from tests.connectors.http_api.support import SECRET, config, events
from tests.dofn_support import run_bundles


def test_the_secret_is_not_in_display_data_or_repr():
    config = ApiSinkConfig('http://x', 'c', 'very-secret-value')
    transform = DeliverToApi(config)
    items = DisplayData.create_from(transform._fn).items
    assert 'very-secret-value' not in repr(items) and 'very-secret-value' not in repr(config)
    assert {i.key: i.value for i in items}['api_url'] == 'http://x'


def run_fn(cfg: ApiSinkConfig, *bundles):
    """Drive the DoFn as a runner would (setup, then start/process/finish per bundle; a callable in place of a
    bundle runs between bundles). Returns (deliveries, dead letters)."""
    return run_bundles(DeliverToApiFn(cfg), bundles, Timestamp(0))


@pytest.mark.integration
def test_duplicates_in_the_input_are_stored_once(fresh):
    evs = events(1, 45)
    replayed = evs[10:25]                          # Debezium re-sent rows, a replay after a restart
    delivered, dead = run_fn(config(fresh, batch_size=8), evs[:30], replayed + evs[30:])
    assert dead == []
    assert fresh.keys() == {str(e.id): 2 if e in replayed else 1 for e in evs}
    assert sorted(d.event_id for d in delivered if d.status == 'accepted') == [e.id for e in evs]
    assert sorted(d.event_id for d in delivered if d.status == 'duplicate') == [e.id for e in replayed]
    stats = fresh.stats()
    assert (stats['accepted_events'], stats['duplicates'], stats['max_calls_per_request']) == (45, 15, 1)
    assert stats['tokens_issued'] == 1                          # one token for every request of the DoFn


@pytest.mark.integration
def test_a_receiver_that_is_gone_sends_every_event_to_the_dead_letters_and_none_is_lost(caplog):
    evs = events(5000, 60)
    with ReceiverProcess(secret=SECRET) as receiver:
        cfg = config(receiver)
        delivered, dead = run_fn(cfg, evs[:10], receiver.stop, evs[10:])
        assert [d.event_id for d in delivered] == [e.id for e in evs[:10]]
        assert sorted(d.event_id for d in dead) == [e.id for e in evs[10:]]
        reasons = collections.Counter(d.reason for d in dead)
        assert reasons == {'api_connection_error': 20, 'circuit_open': 30}   # 2 requests, then the breaker
        for letter in dead:
            assert isinstance(letter, DeadLetter) and letter.stage == 'api'
            assert letter.attempts == (3 if letter.reason == 'api_connection_error' else 1)
            assert EnrichedEvent.model_validate_json(letter.payload).id == letter.event_id
            assert letter.source_topic == 'engagement.raw_events' and letter.source_offset == letter.event_id
            assert SECRET not in letter.error
        assert 'not sent' in next(d.error for d in dead if d.reason == 'circuit_open')

        receiver.start()                          # back, with its stored keys: redrive the dead letters
        redelivered, still_dead = run_fn(cfg, [EnrichedEvent.model_validate_json(d.payload) for d in dead])
        assert still_dead == [] and len(redelivered) == 50
        assert receiver.keys() == {str(e.id): 1 for e in evs}
    assert SECRET not in caplog.text


@pytest.mark.integration
def test_in_a_beam_pipeline(fresh):
    evs, unreachable = events(1, 120), events(9000, 30)
    fresh.set_faults(error_rate=0.15, lost_response_rate=0.15, seed=5)
    nowhere = ReceiverProcess.__new__(ReceiverProcess)
    nowhere.url = f'http://127.0.0.1:{free_ports(1)[0]}'     # nothing listens there
    pipeline = beam.Pipeline()
    result = (pipeline
              | 'Events' >> beam.Create(evs + evs[:20])
              # 10 calls per request make a dead letter here a one-in-a-million event: this test is about
              # the wiring, the 3-call budget is tested above
              | 'DeliverToApi' >> DeliverToApi(config(fresh, batch_size=16, max_attempts=10)))
    gone = (pipeline
            | 'MoreEvents' >> beam.Create(unreachable)
            | 'DeliverToNowhere' >> DeliverToApi(config(nowhere)))
    assert_that(result.dead_letters | 'DeadIds' >> beam.Map(lambda d: d.event_id), equal_to([]), label='NoneDead')
    assert_that(gone.delivered, equal_to([]), label='NoneDelivered')
    # no token could be fetched for the first two requests, then the breaker opened
    assert_that(gone.dead_letters | 'DeadReasons' >> beam.Map(lambda d: (d.stage, d.event_id, d.reason)),
                equal_to([('api', e.id, 'api_token_unavailable') for e in unreachable[:20]]
                         + [('api', e.id, 'circuit_open') for e in unreachable[20:]]), label='AllDeadLettered')
    outcome = pipeline.run()
    outcome.wait_until_finish()

    assert fresh.keys().keys() == {str(e.id) for e in evs}
    assert fresh.stats()['accepted_events'] == 120

    def counters(label):  # Prism names steps like ref_AppliedPTransform_<label>-PostBatchesToApi-...
        return {c.key.metric.name: c.committed for c in outcome.metrics().query(
            MetricsFilter().with_namespace('DeliverToApi'))['counters'] if f'_{label}-' in c.key.step}
    delivered = counters('DeliverToApi')
    assert delivered['delivered'] == 140 and delivered['duplicates'] >= 20
    assert delivered['retries'] > 0 and delivered.get('dead_lettered', 0) == 0
    failed = counters('DeliverToNowhere')
    assert failed['dead_lettered'] == 30 and failed['breaker_opened'] >= 1 and failed.get('delivered', 0) == 0
