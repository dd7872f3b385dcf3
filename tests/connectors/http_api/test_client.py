"""The API client: token refresh on a fake clock, settings checks, requests within the byte limit; then against
the real local receiver: faults (503s, timeouts, 429s, lost answers) survived within 3 calls per request with the
breaker opening and closing, token expiry and revocation, refused credentials, a 4xx not retried."""
from __future__ import annotations

import collections
import json
import logging
import random
import time

import pytest
import requests

from connectors.http_api.client import ApiClient, ApiSinkConfig
from schemas import EnrichedEvent
from tests.api_support import ReceiverProcess
from tests.connectors.http_api.support import SECRET, config, events
from tests.connectors.http_api.test_policy import FakeClock


class TokenOnlySession:
    """Answers the token endpoint with a fresh token per call; nothing else (the refresh logic is the subject)."""

    def __init__(self, expires_in=300):
        self.expires_in = expires_in
        self.calls = []

    def post(self, url, **kwargs):
        self.calls.append((url, kwargs))
        resp = requests.Response()
        resp.status_code = 200
        resp._content = (b'{"access_token":"tok-%d","token_type":"bearer","expires_in":%d}'
                         % (len(self.calls), self.expires_in))
        return resp

    def close(self):
        pass


def test_the_token_is_cached_and_refreshed_before_it_expires():
    clock, session = FakeClock(), TokenOnlySession(expires_in=300)
    client = ApiClient(ApiSinkConfig('http://api.test', 'cid', 'csecret'), session=session, clock=clock)
    assert client._access_token() == 'tok-1'
    clock.now += 239                                      # refreshed one fifth (60 s at most) before expiry
    assert client._access_token() == 'tok-1'
    clock.now += 1
    assert client._access_token() == 'tok-2'
    url, kwargs = session.calls[0]
    assert url == 'http://api.test/oauth/token'
    assert kwargs['data'] == {'grant_type': 'client_credentials'} and kwargs['auth'] == ('cid', 'csecret')


def test_a_short_lived_token_is_refreshed_a_fifth_of_its_life_early():
    clock, session = FakeClock(), TokenOnlySession(expires_in=10)
    client = ApiClient(ApiSinkConfig('http://api.test', 'cid', 'csecret', token_url='http://auth.test/t'),
                       session=session, clock=clock)
    client._access_token()
    clock.now += 7.9
    assert client._access_token() == 'tok-1'
    clock.now += 0.1
    assert client._access_token() == 'tok-2' and session.calls[1][0] == 'http://auth.test/t'


@pytest.mark.parametrize('kwargs, complaint', [
    (dict(batch_size=0), 'batch_size must be a whole number in 1..1000'),
    (dict(max_attempts=11), 'max_attempts must be a whole number in 1..10'),
    (dict(timeout_seconds=0), 'timeout_seconds must be > 0'),
    (dict(client_secret=''), 'client_secret is required'),
])
def test_bad_sink_settings_fail_at_construction(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        ApiSinkConfig(**{**dict(api_url='http://x', client_id='c', client_secret='s'), **kwargs}).check()


class AcceptingSession:
    """A token endpoint and an events endpoint that accepts every event; records each events request body."""

    def __init__(self):
        self.bodies: list[bytes] = []

    def post(self, url, **kwargs):
        resp = requests.Response()
        resp.status_code = 200
        if url.endswith('/oauth/token'):
            resp._content = b'{"access_token":"tok","token_type":"bearer","expires_in":300}'
            return resp
        self.bodies.append(kwargs['data'])
        items = json.loads(kwargs['data'])
        resp._content = json.dumps({'results': [{'idempotency_key': item['idempotency_key'], 'status': 'accepted'}
                                                for item in items]}).encode()
        return resp

    def close(self):
        pass


def test_requests_stay_within_the_byte_limit_and_an_event_too_large_alone_is_not_sent():
    from tests.transforms.builders import enriched
    events = [enriched(id=i).model_copy(update={'device': 'x' * size})
              for i, size in enumerate([100, 3000, 100, 9000, 2000, 100], start=1)]
    session = AcceptingSession()
    client = ApiClient(ApiSinkConfig('http://api.test', 'cid', 'csecret', max_request_bytes=6000), session=session)

    outcomes = client.deliver(events)

    assert [(o.event.id, o.status) for o in outcomes] == [(1, 'accepted'), (2, 'accepted'), (3, 'accepted'),
                                                          (4, 'dead'), (5, 'accepted'), (6, 'accepted')]
    assert outcomes[3].reason == 'payload_too_large' and 'not sent' in outcomes[3].error
    assert len(session.bodies) == 2 and all(len(body) <= 6000 for body in session.bodies)
    assert [[item['idempotency_key'] for item in json.loads(body)] for body in session.bodies] == [
        ['1', '2', '3'], ['5', '6']]


class CountingClient(ApiClient):
    """The client with its counter increments kept in a Counter (in a pipeline they go to Beam metrics)."""

    def __init__(self, cfg: ApiSinkConfig, seed: int = 0):
        self.counters = collections.Counter()
        super().__init__(cfg, count=lambda name, n: self.counters.update({name: n}), rng=random.Random(seed))

    def deliver_all(self, evs: list[EnrichedEvent]) -> list:
        size = self.config.batch_size
        return [o for i in range(0, len(evs), size) for o in self.deliver(evs[i:i + size])]


@pytest.mark.integration
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


@pytest.mark.integration
def test_timeouts_use_up_the_attempts_and_store_nothing(fresh):
    fresh.set_faults(timeout_rate=1.0, timeout_seconds=0.6)
    client = CountingClient(config(fresh))
    outcomes = client.deliver(events(1, 4))
    assert {(o.reason, o.attempts) for o in outcomes} == {('api_timeout', 3)}
    assert 'no answer within 0.3 s; 3 attempt(s)' in outcomes[0].error
    assert fresh.keys() == {} and fresh.stats()['max_calls_per_request'] == 3 and client.counters['retries'] == 2


@pytest.mark.integration
def test_lost_answers_leave_the_events_stored_and_a_redelivery_counts_them_once(fresh):
    fresh.set_faults(lost_response_rate=1.0)
    client = CountingClient(config(fresh))
    outcomes = client.deliver(events(1, 4))
    assert {(o.reason, o.attempts) for o in outcomes} == {('api_connection_error', 3)}
    assert fresh.keys() == {str(i): 3 for i in range(1, 5)}   # stored by the first call; the others were duplicates
    fresh.set_faults()
    assert {o.status for o in client.deliver(events(1, 4))} == {'duplicate'}
    assert fresh.stats()['accepted_events'] == 4


@pytest.mark.integration
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


@pytest.mark.integration
def test_refused_credentials_dead_letter_the_batch_without_the_secret(fresh, caplog):
    client = CountingClient(config(fresh, client_secret='not-the-secret-91x'))
    outcomes = client.deliver(events(1, 3))
    assert {(o.status, o.reason, o.attempts) for o in outcomes} == {('dead', 'api_auth_failed', 1)}
    assert "refused client 'engagement-local': 401 invalid_client" in outcomes[0].error
    assert 'not-the-secret-91x' not in caplog.text + outcomes[0].error
    assert fresh.stats()['requests'] == 0


@pytest.mark.integration
def test_a_4xx_rejection_is_not_retried_and_does_not_open_the_breaker(fresh):
    client = CountingClient(config(fresh, breaker_failures=1))
    outcomes = client.deliver(events(1, 1001))     # the receiver takes at most 1000 events per request
    assert {(o.reason, o.attempts) for o in outcomes} == {('api_rejected_413', 1)}
    assert client.breaker.before_request() == 'closed' and client.counters['retries'] == 0
