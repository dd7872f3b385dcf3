"""The API sink's policies without a server: backoff with full jitter, Retry-After, the circuit breaker, token
refresh (fake clock), options of the `--api_*` flags."""
from __future__ import annotations

import email.utils
import json
import random

import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.display import DisplayData

from connectors.http_api import (
    ApiClient,
    ApiSinkConfig,
    CircuitBreaker,
    DeliverToApi,
    backoff_seconds,
    parse_retry_after,
    retry_delay,
)
from launch import config as stack_config
from pipelines.options import EngagementOptions, InvalidOption


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_backoff_is_full_jitter_doubling_up_to_the_cap():
    rng = random.Random(1)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (6, 8.0), (10, 8.0)):
        draws = [backoff_seconds(attempt, 0.5, 8.0, rng) for _ in range(2000)]
        assert 0 <= min(draws) < ceiling * 0.05 and ceiling * 0.95 < max(draws) <= ceiling


def test_retry_after_is_honoured_but_capped():
    rng = random.Random(2)
    assert all(retry_delay(1, 3.0, 0.5, 8.0, 10.0, rng) == 3.0 for _ in range(100))   # backoff < Retry-After
    assert all(retry_delay(1, 120.0, 0.5, 8.0, 10.0, rng) == 10.0 for _ in range(100))  # capped
    assert all(0 <= retry_delay(1, None, 0.5, 8.0, 10.0, rng) <= 0.5 for _ in range(100))


@pytest.mark.parametrize('header, seconds', [('5', 5.0), ('0', 0.0), (None, None), ('', None), ('soon', None),
                                             ('-3', None)])
def test_retry_after_header_forms(header, seconds):
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date():
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_breaker_opens_after_consecutive_failures_only():
    clock = FakeClock()
    breaker = CircuitBreaker(3, 10.0, clock)
    assert [breaker.record_failure(), breaker.record_failure()] == [False, False]
    assert breaker.record_success() is False           # a success in between resets the count
    assert [breaker.record_failure() for _ in range(3)] == [False, False, True]
    assert breaker.before_request() == CircuitBreaker.OPEN
    clock.now += 9.9
    assert breaker.before_request() == CircuitBreaker.OPEN
    assert breaker.seconds_until_probe() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.before_request() == CircuitBreaker.PROBE


def test_a_failed_probe_reopens_for_a_full_cooldown_and_a_good_one_closes():
    clock = FakeClock()
    breaker = CircuitBreaker(1, 5.0, clock)
    assert breaker.record_failure() is True
    clock.now += 5
    assert breaker.before_request() == CircuitBreaker.PROBE
    assert breaker.record_failure() is True              # probe failed: open again, counted as an opening
    clock.now += 4.9
    assert breaker.before_request() == CircuitBreaker.OPEN
    clock.now += 0.1
    assert breaker.before_request() == CircuitBreaker.PROBE
    assert breaker.record_success() is True              # closed by the probe
    assert breaker.before_request() == CircuitBreaker.CLOSED and breaker.consecutive_failures == 0


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
        DeliverToApi(ApiSinkConfig(**{**dict(api_url='http://x', client_id='c', client_secret='s'), **kwargs}))


def test_the_secret_is_not_in_display_data_or_repr():
    config = ApiSinkConfig('http://x', 'c', 'very-secret-value')
    transform = DeliverToApi(config)
    items = DisplayData.create_from(transform._fn).items
    assert 'very-secret-value' not in repr(items) and 'very-secret-value' not in repr(config)
    assert {i.key: i.value for i in items}['api_url'] == 'http://x'


def api_options(*argv) -> EngagementOptions:
    return PipelineOptions(list(argv)).view_as(EngagementOptions)


def test_api_defaults_reach_the_local_receiver(monkeypatch):
    for name in ('ENGAGEMENT_API_URL', 'ENGAGEMENT_API_PORT', 'ENGAGEMENT_API_CLIENT_SECRET'):
        monkeypatch.delenv(name, raising=False)
    defaults = api_options()
    cfg = stack_config.load(environ={})
    assert (defaults.api_url, defaults.api_client_id, defaults.api_client_secret) == (
        cfg.api_url, stack_config.API_CLIENT_ID, cfg.api_client_secret)
    opts = api_options('--api_url=http://127.0.0.1:1/base/', '--api_batch_size=7', '--api_max_attempts=2',
                       '--api_breaker_failures=4', '--api_breaker_cooldown_seconds=2.5',
                       '--api_timeout_seconds=1.5').validate()
    config = DeliverToApi.from_options(opts)._fn._config
    assert (config.events_url, config.resolved_token_url) == ('http://127.0.0.1:1/base/v1/events',
                                                              'http://127.0.0.1:1/base/oauth/token')
    assert (config.batch_size, config.max_attempts, config.breaker_failures, config.breaker_cooldown_seconds,
            config.timeout_seconds, config.client_id) == (7, 2, 4, 2.5, 1.5, 'engagement-local')


@pytest.mark.parametrize('argv, message', [
    (['--api_url=ftp://x'], "--api_url='ftp://x': expected an http:// or https:// URL"),
    (['--api_url=http://user:hunter2@x'], "--api_url='<redacted>': expected an http:// or https:// URL"),
    (['--api_token_url=token'], "--api_token_url='token': expected an http:// or https:// URL"),
    (['--api_batch_size=0'], '--api_batch_size=0: expected 1..1000'),
    (['--api_max_attempts=11'], '--api_max_attempts=11: expected 1..10'),
    (['--api_timeout_seconds=0'], '--api_timeout_seconds=0.0: expected 0.1..300'),
    (['--api_breaker_failures=0'], '--api_breaker_failures=0: expected 1..1000'),
    (['--api_client_secret='], '--api_client_secret (or ENGAGEMENT_API_CLIENT_SECRET) is required'),
])
def test_invalid_api_flags_are_rejected_naming_the_flag(argv, message, monkeypatch):
    monkeypatch.delenv('ENGAGEMENT_API_CLIENT_SECRET', raising=False)
    with pytest.raises(InvalidOption) as err:
        api_options(*argv).validate()
    assert message in str(err.value) and 'hunter2' not in str(err.value)


def test_an_empty_api_url_turns_the_sink_off_without_other_checks():
    assert api_options('--api_url=', '--api_batch_size=0').validate().api_url == ''


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
