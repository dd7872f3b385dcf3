"""DeliverToApi against the real local receiver (a `launch.api_receiver` process on a free port): exactly one stored
event per id with duplicates in the input, faults (503s, timeouts, 429s, lost answers) survived within 3 calls per
request with the breaker opening and closing, a receiver that is gone (every event dead-lettered with its reason,
none lost), token expiry and revocation, refused credentials, and one run inside a Beam pipeline."""
from __future__ import annotations

import collections
import json
import logging
import random
import time

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from connectors.http_api import ApiClient, ApiSinkConfig, DeliverToApi, DeliverToApiFn
from schemas import EnrichedEvent
from schemas.dead_letter import DeadLetter
from tests.api_support import ReceiverProcess
from tests.conftest import free_ports
from tests.dofn_support import run_bundles
from tests.transforms.builders import enriched

pytestmark = pytest.mark.integration

SECRET = 'sink-test-secret-7f3a'


def events(first: int, count: int) -> list[EnrichedEvent]:
    return [enriched(id=i, ts=1_795_522_212.0 + i) for i in range(first, first + count)]


def config(receiver: ReceiverProcess, **overrides) -> ApiSinkConfig:
    values = dict(api_url=receiver.url, client_id='engagement-local', client_secret=SECRET, batch_size=10,
                  timeout_seconds=0.3, max_attempts=3, breaker_failures=2, breaker_cooldown_seconds=0.5,
                  backoff_base_seconds=0.02, backoff_cap_seconds=0.2, retry_after_cap_seconds=0.1)
    values.update(overrides)
    return ApiSinkConfig(**values)


class CountingClient(ApiClient):
    """The client with its counter increments kept in a Counter (in a pipeline they go to Beam metrics)."""

    def __init__(self, cfg: ApiSinkConfig, seed: int = 0):
        self.counters = collections.Counter()
        super().__init__(cfg, count=lambda name, n: self.counters.update({name: n}), rng=random.Random(seed))

    def deliver_all(self, evs: list[EnrichedEvent]) -> list:
        size = self.config.batch_size
        return [o for i in range(0, len(evs), size) for o in self.deliver(evs[i:i + size])]


def run_fn(cfg: ApiSinkConfig, *bundles):
    """Drive the DoFn as a runner would (setup, then start/process/finish per bundle; a callable in place of a
    bundle runs between bundles). Returns (deliveries, dead letters)."""
    return run_bundles(DeliverToApiFn(cfg), bundles, Timestamp(0))


@pytest.fixture(scope='module')
def receiver():
    with ReceiverProcess(secret=SECRET) as r:
        yield r


@pytest.fixture
def fresh(receiver):
    receiver.call('POST', '/admin/reset', {})
    receiver.set_faults()
    yield receiver
    receiver.set_faults()


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


def test_faults_are_survived_within_three_calls_per_request_and_the_breaker_opens_and_closes(fresh, caplog):
    caplog.set_level(logging.INFO, logger='connectors.http_api')
    client = CountingClient(config(fresh, breaker_failures=3), seed=3)
    evs = events(1000, 300)

    # 50% 503, 10% timeouts, 5% 429, 10% of the rest stored but unanswered; seed 11's first eight draws hold a
    # timeout and a lost answer, so both happen whatever the timing of the breaker
    fresh.set_faults(error_rate=0.5, status=503, timeout_rate=0.1, timeout_seconds=0.6, rate_limit_rate=0.05,
                     retry_after=1, lost_response_rate=0.1, seed=11)
    outcomes = []
    for i in range(0, 150, 10):                    # a stream: a batch every 50 ms
        outcomes += client.deliver(evs[i:i + 10])
        time.sleep(0.05)
    fresh.set_faults(error_rate=1.0)               # every call fails: the breaker is (or goes) open
    outcomes += client.deliver_all(evs[150:180])
    assert client.breaker.before_request() == 'open'
    circuit = client.deliver(evs[180:190])
    assert {o.reason for o in circuit} == {'circuit_open'}
    fresh.set_faults()                             # the API is back: after the cool-down a probe closes the breaker
    time.sleep(0.5)
    outcomes += circuit + client.deliver_all(evs[190:])

    assert [o.event.id for o in outcomes] == [e.id for e in evs]   # every event delivered or dead-lettered
    dead = [o for o in outcomes if o.status == 'dead']
    delivered = {str(o.event.id) for o in outcomes if o.status != 'dead'}
    assert {o.reason for o in dead} <= {'api_http_503', 'api_http_429', 'api_timeout', 'api_connection_error',
                                        'circuit_open'}
    assert all(1 <= o.attempts <= 3 for o in outcomes)
    assert delivered <= set(fresh.keys())          # what the sink calls delivered, the API holds
    assert all(o.status != 'dead' for o in outcomes[-100:])      # healthy again after the probe

    redriven = client.deliver_all([o.event for o in dead])   # dead letters redelivered once the API is healthy
    assert all(o.status in ('accepted', 'duplicate') for o in redriven)
    assert set(fresh.keys()) == {str(e.id) for e in evs}      # every event exactly once
    stats = fresh.stats()
    assert stats['accepted_events'] == 300
    assert stats['max_calls_per_request'] <= 3
    injected = stats['injected']
    assert injected['error'] > 0 and injected['timeout'] > 0 and injected['lost_response'] > 0
    assert stats['duplicates'] >= injected['lost_response']   # a stored-but-unanswered batch came back once more
    counters = client.counters
    assert counters['retries'] > 0 and counters['breaker_opened'] >= 1 and counters['breaker_closed'] >= 1
    logged = [json.loads(r.getMessage())['event'] for r in caplog.records if r.getMessage().startswith('{')]
    assert 'api_breaker_opened' in logged and 'api_breaker_closed' in logged
    last_closed = max(i for i, event in enumerate(logged) if event == 'api_breaker_closed')
    assert last_closed > logged.index('api_breaker_opened')
    assert SECRET not in caplog.text


def test_timeouts_use_up_the_attempts_and_store_nothing(fresh):
    fresh.set_faults(timeout_rate=1.0, timeout_seconds=0.6)
    client = CountingClient(config(fresh))
    outcomes = client.deliver(events(1, 4))
    assert {(o.reason, o.attempts) for o in outcomes} == {('api_timeout', 3)}
    assert 'no answer within 0.3 s; 3 attempt(s)' in outcomes[0].error
    assert fresh.keys() == {} and fresh.stats()['max_calls_per_request'] == 3 and client.counters['retries'] == 2


def test_lost_answers_leave_the_events_stored_and_a_redelivery_counts_them_once(fresh):
    fresh.set_faults(lost_response_rate=1.0)
    client = CountingClient(config(fresh))
    outcomes = client.deliver(events(1, 4))
    assert {(o.reason, o.attempts) for o in outcomes} == {('api_connection_error', 3)}
    assert fresh.keys() == {str(i): 3 for i in range(1, 5)}   # stored by the first call; the others were duplicates
    fresh.set_faults()
    assert {o.status for o in client.deliver(events(1, 4))} == {'duplicate'}
    assert fresh.stats()['accepted_events'] == 4


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


def test_tokens_are_refreshed_before_expiry_and_refetched_once_after_a_401():
    with ReceiverProcess(secret=SECRET, token_ttl_seconds=2) as receiver:
        client = CountingClient(config(receiver, timeout_seconds=2))
        assert {o.status for o in client.deliver(events(1, 5))} == {'accepted'}
        time.sleep(1.7)                           # past 4/5 of the lifetime: refreshed before the API refuses it
        assert {o.status for o in client.deliver(events(6, 5))} == {'accepted'}
        stats = receiver.stats()
        assert (stats['tokens_issued'], stats['unauthorized']) == (2, 0)

        receiver.call('POST', '/admin/revoke-tokens', {})
        assert {o.status for o in client.deliver(events(11, 5))} == {'accepted'}
        stats = receiver.stats()
        assert (stats['tokens_issued'], stats['unauthorized'], stats['max_calls_per_request']) == (3, 1, 2)
        assert client.counters['token_fetches'] == 3 and client.counters['retries'] == 0


def test_refused_credentials_dead_letter_the_batch_without_the_secret(fresh, caplog):
    client = CountingClient(config(fresh, client_secret='not-the-secret-91x'))
    outcomes = client.deliver(events(1, 3))
    assert {(o.status, o.reason, o.attempts) for o in outcomes} == {('dead', 'api_auth_failed', 1)}
    assert "refused client 'engagement-local': 401 invalid_client" in outcomes[0].error
    assert 'not-the-secret-91x' not in caplog.text + outcomes[0].error
    assert fresh.stats()['requests'] == 0


def test_a_4xx_rejection_is_not_retried_and_does_not_open_the_breaker(fresh):
    client = CountingClient(config(fresh, breaker_failures=1))
    outcomes = client.deliver(events(1, 1001))     # the receiver takes at most 1000 events per request
    assert {(o.reason, o.attempts) for o in outcomes} == {('api_rejected_413', 1)}
    assert client.breaker.before_request() == 'closed' and client.counters['retries'] == 0


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
