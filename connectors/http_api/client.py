"""The REST API client behind `DeliverToApi`: batches of enriched events in, one outcome per event out.

It owns a pooled keep-alive session, an OAuth2 client-credentials token (refreshed before it expires and once
after a 401) and a circuit breaker. Each event carries its id as idempotency key, so any retry, replay or
redelivery is stored once by the API. Failures become per-event outcomes with a reason, never exceptions; the
client secret and the token never reach a log line or an error text. Behaviour in full: docs/pipeline.md
("The REST API sink").
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
import uuid
from typing import Callable, Sequence

import requests
from requests.adapters import HTTPAdapter

from connectors.http_api.policy import CircuitBreaker, parse_retry_after, retry_delay
from schemas.events import EnrichedEvent

_LOG = logging.getLogger(__name__)

EVENTS_PATH = '/v1/events'
TOKEN_PATH = '/oauth/token'
CIRCUIT_OPEN = 'circuit_open'
PAYLOAD_TOO_LARGE = 'payload_too_large'
_ERROR_TEXT_LIMIT = 300


@dataclasses.dataclass(frozen=True)
class ApiSinkConfig:
    api_url: str
    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    token_url: str | None = None          # None: <api_url>/oauth/token
    batch_size: int = 100
    timeout_seconds: float = 10.0
    max_attempts: int = 3
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 8.0
    retry_after_cap_seconds: float = 10.0
    max_request_bytes: int = 5_000_000

    @classmethod
    def from_options(cls, opts) -> 'ApiSinkConfig':
        """From `pipelines.options.EngagementOptions` (validated; `--api_url` non-empty)."""
        return cls(api_url=opts.api_url, client_id=opts.api_client_id, client_secret=opts.api_client_secret,
                   token_url=opts.api_token_url or None, batch_size=opts.api_batch_size,
                   timeout_seconds=opts.api_timeout_seconds, max_attempts=opts.api_max_attempts,
                   breaker_failures=opts.api_breaker_failures,
                   breaker_cooldown_seconds=opts.api_breaker_cooldown_seconds,
                   max_request_bytes=opts.api_max_request_bytes)

    @property
    def events_url(self) -> str:
        return self.api_url.rstrip('/') + EVENTS_PATH

    @property
    def resolved_token_url(self) -> str:
        return self.token_url or self.api_url.rstrip('/') + TOKEN_PATH

    def check(self) -> 'ApiSinkConfig':
        for name in ('api_url', 'client_id', 'client_secret'):
            if not getattr(self, name):
                raise ValueError(f'{name} is required')
        for name, low, high in (('batch_size', 1, 1000), ('max_attempts', 1, 10), ('breaker_failures', 1, 1000),
                                ('max_request_bytes', 1000, 1_000_000_000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f'{name} must be a whole number in {low}..{high}, got {value!r}')
        for name in ('timeout_seconds', 'breaker_cooldown_seconds', 'backoff_base_seconds', 'backoff_cap_seconds',
                     'retry_after_cap_seconds'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)!r}')
        return self



@dataclasses.dataclass
class EventOutcome:
    event: EnrichedEvent
    status: str                  # 'accepted' | 'duplicate' | 'dead'
    attempts: int
    reason: str | None = None
    error: str | None = None


@dataclasses.dataclass
class _Failure:
    reason: str
    error: str
    retryable: bool
    server_side: bool = True     # counts towards the breaker
    retry_after: float | None = None


class _TokenError(Exception):
    def __init__(self, failure: _Failure):
        super().__init__(failure.error)
        self.failure = failure


def _short(text: str) -> str:
    text = ' '.join(text.split())
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT] + '...'


class ApiClient:
    """Batches in, per-event outcomes out; owns the session, the token and the breaker. `count(name, n)` receives
    the counter increments (the DoFn forwards them to Beam metrics); clock, sleep and rng are injectable."""

    def __init__(self, config: ApiSinkConfig, session: requests.Session | None = None,
                 count: Callable[[str, int], None] = lambda name, n: None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None):
        self.config = config
        self.session = session or pooled_session()
        self._count = count
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown_seconds, clock)
        self._token: str | None = None
        self._token_refresh_at = 0.0

    # --- token
    def _access_token(self) -> str:
        if self._token is None or self._clock() >= self._token_refresh_at:
            self._token = None
            self._fetch_token()
        assert self._token is not None  # _fetch_token sets it or raises
        return self._token

    def _fetch_token(self) -> None:
        cfg = self.config
        self._count('token_fetches', 1)
        try:
            resp = self.session.post(cfg.resolved_token_url, data={'grant_type': 'client_credentials'},
                                     auth=(cfg.client_id, cfg.client_secret), timeout=cfg.timeout_seconds,
                                     headers={'Accept': 'application/json'})
        except requests.Timeout:
            raise _TokenError(_Failure('api_token_unavailable', f'token endpoint gave no answer within '
                                                                f'{cfg.timeout_seconds:g} s', True)) from None
        except requests.RequestException as exc:
            raise _TokenError(_Failure('api_token_unavailable',
                                       f'token endpoint unreachable: {type(exc).__name__}', True)) from None
        if resp.status_code in (408, 429) or resp.status_code >= 500:
            raise _TokenError(_Failure('api_token_unavailable', f'token endpoint answered {resp.status_code}', True,
                                       retry_after=parse_retry_after(resp.headers.get('Retry-After'))))
        if resp.status_code != 200:
            try:
                code = resp.json().get('error', '')
            except ValueError:
                code = ''
            raise _TokenError(_Failure('api_auth_failed', f'token endpoint refused client {cfg.client_id!r}: '
                                                          f'{resp.status_code} {code}'.strip(), False))
        try:
            body = resp.json()
            token, token_type = body['access_token'], body.get('token_type', 'Bearer')
            expires_in = float(body.get('expires_in', 3600))
            if not isinstance(token, str) or not token or token_type.lower() != 'bearer':
                raise ValueError(token_type)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _TokenError(_Failure('api_token_unavailable', 'token endpoint answered without a bearer '
                                                                'access_token', True)) from None
        now = self._clock()
        self._token = token
        self._token_refresh_at = now + expires_in - min(60.0, expires_in / 5)
        _LOG.info(json.dumps({'event': 'api_token_fetched', 'token_url': cfg.resolved_token_url,
                              'client_id': cfg.client_id, 'expires_in': expires_in}))

    # --- delivery
    def deliver(self, events: Sequence[EnrichedEvent]) -> list[EventOutcome]:
        """One outcome per event, in order. Requests stay within `max_request_bytes`: the events are sent in as
        many requests as that takes, and an event too large for a request of its own is not sent at all
        (`payload_too_large`)."""
        limit = self.config.max_request_bytes - 2  # the enclosing [ ]
        outcomes: list[EventOutcome | None] = [None] * len(events)
        chunk: list[int] = []
        chunk_items: list[str] = []
        size = 0
        for i, event in enumerate(events):
            item = json.dumps({'idempotency_key': str(event.id), 'event': event.model_dump(mode='json')},
                              separators=(',', ':'))
            item_bytes = len(item.encode('utf-8')) + 1  # the separating comma
            if item_bytes > limit:
                outcomes[i] = EventOutcome(event, 'dead', 1, PAYLOAD_TOO_LARGE,
                                           f'event of {item_bytes - 1:,} bytes as JSON does not fit a request of at '
                                           f'most {self.config.max_request_bytes:,} bytes (--api_max_request_bytes); '
                                           f'not sent')
                continue
            if chunk and size + item_bytes > limit:
                self._deliver_chunk(events, chunk, chunk_items, outcomes)
                chunk, chunk_items, size = [], [], 0
            chunk.append(i)
            chunk_items.append(item)
            size += item_bytes
        if chunk:
            self._deliver_chunk(events, chunk, chunk_items, outcomes)
        return [outcome for outcome in outcomes if outcome is not None]

    def _deliver_chunk(self, events: Sequence[EnrichedEvent], chunk: list[int], items: list[str],
                       outcomes: list[EventOutcome | None]) -> None:
        for i, outcome in zip(chunk, self._deliver_request([events[i] for i in chunk],
                                                          ('[' + ','.join(items) + ']').encode('utf-8'))):
            outcomes[i] = outcome

    def _deliver_request(self, events: Sequence[EnrichedEvent], body: bytes) -> list[EventOutcome]:
        state = self.breaker.before_request()
        if state == CircuitBreaker.OPEN:
            error = (f'circuit breaker open after {self.breaker.consecutive_failures} consecutive failed requests; '
                     f'not sent (next probe in {self.breaker.seconds_until_probe():.1f} s)')
            return [EventOutcome(e, 'dead', 1, CIRCUIT_OPEN, error) for e in events]
        if state == CircuitBreaker.PROBE:
            _LOG.info(json.dumps({'event': 'api_breaker_probe', 'url': self.config.events_url,
                                  'events': len(events), 'first_event_id': events[0].id}))
        outcomes, failure = self._send(events, body, 1 if state == CircuitBreaker.PROBE else self.config.max_attempts)
        if failure is not None and failure.server_side:
            if self.breaker.record_failure():
                self._count('breaker_opened', 1)
                _LOG.warning(json.dumps({
                    'event': 'api_breaker_opened', 'url': self.config.events_url,
                    'consecutive_failures': self.breaker.consecutive_failures,
                    'after_probe': state == CircuitBreaker.PROBE,
                    'cooldown_s': self.config.breaker_cooldown_seconds, 'reason': failure.reason}))
        elif self.breaker.record_success():
            self._count('breaker_closed', 1)
            _LOG.info(json.dumps({'event': 'api_breaker_closed', 'url': self.config.events_url}))
        return outcomes

    def _send(self, events: Sequence[EnrichedEvent], body: bytes,
              max_attempts: int) -> tuple[list[EventOutcome], _Failure | None]:
        cfg = self.config
        request_id = uuid.uuid4().hex
        started, attempt, reauthenticated = self._clock(), 0, False
        while True:
            attempt += 1
            failure = None
            try:
                token = self._access_token()
                self._count('requests', 1)
                resp = self.session.post(cfg.events_url, data=body, timeout=cfg.timeout_seconds, headers={
                    'Authorization': f'Bearer {token}', 'Content-Type': 'application/json',
                    'Accept': 'application/json', 'X-Request-Id': request_id})
            except _TokenError as exc:
                failure = exc.failure
            except requests.Timeout:
                failure = _Failure('api_timeout', f'no answer within {cfg.timeout_seconds:g} s', True)
            except requests.RequestException as exc:
                failure = _Failure('api_connection_error', f'{type(exc).__name__}: {self._scrub(str(exc))}', True)
            else:
                status = resp.status_code
                if status == 401 and not reauthenticated:
                    reauthenticated, self._token = True, None  # the API forgot our token: fetch a new one, once
                    failure = _Failure('api_unauthorized', 'API answered 401 to our token', True)
                    if attempt < max_attempts:
                        _LOG.info(json.dumps({'event': 'api_token_rejected', 'request_id': request_id}))
                        continue
                elif 200 <= status < 300:
                    outcomes = self._read_results(resp, events, attempt)
                    if outcomes is not None:
                        return outcomes, None
                    failure = _Failure('api_bad_response', f'{status} answer without per-event results', True)
                elif status in (408, 429) or status >= 500:
                    failure = _Failure(f'api_http_{status}', f'API answered {status}: {self._scrub(_short(resp.text))}',
                                       True, retry_after=parse_retry_after(resp.headers.get('Retry-After')))
                elif status == 401:
                    failure = _Failure('api_unauthorized', 'API answered 401 to a freshly fetched token', False)
                else:
                    failure = _Failure(f'api_rejected_{status}',
                                       f'API rejected the batch: {status} {self._scrub(_short(resp.text))}', False,
                                       server_side=False)
            if not failure.retryable or attempt >= max_attempts:
                elapsed = self._clock() - started
                error = f'{failure.error}; {attempt} attempt(s) over {elapsed:.1f} s (request {request_id})'
                _LOG.error(json.dumps({'event': 'api_batch_failed', 'request_id': request_id, 'reason': failure.reason,
                                       'events': len(events), 'first_event_id': events[0].id, 'attempts': attempt,
                                       'error': failure.error}))
                return [EventOutcome(e, 'dead', attempt, failure.reason, error) for e in events], failure
            delay = retry_delay(attempt, failure.retry_after, cfg.backoff_base_seconds, cfg.backoff_cap_seconds,
                                cfg.retry_after_cap_seconds, self._rng)
            self._count('retries', 1)
            _LOG.warning(json.dumps({'event': 'api_retry', 'request_id': request_id, 'reason': failure.reason,
                                     'attempt': attempt, 'backoff_s': round(delay, 3), 'events': len(events),
                                     'first_event_id': events[0].id}))
            self._sleep(delay)

    def _read_results(self, resp: requests.Response, events: Sequence[EnrichedEvent],
                      attempt: int) -> list[EventOutcome] | None:
        """Per-event outcomes from a 2xx answer, or None when it does not account for every event in order."""
        try:
            results = resp.json()['results']
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(results, list) or len(results) != len(events):
            return None
        outcomes = []
        for event, result in zip(events, results):
            if not isinstance(result, dict) or result.get('idempotency_key') != str(event.id):
                return None
            status = result.get('status')
            if status in ('accepted', 'duplicate'):
                outcomes.append(EventOutcome(event, status, attempt))
            elif status == 'rejected':
                outcomes.append(EventOutcome(event, 'dead', attempt, 'api_rejected_event',
                                             f'API rejected the event: {_short(str(result.get("error")))}'))
            else:
                return None
        return outcomes

    def _scrub(self, text: str) -> str:
        for secret in (self.config.client_secret, self._token):
            if secret:
                text = text.replace(secret, '***')
        return text

    def close(self) -> None:
        self.session.close()


def pooled_session(pool_size: int = 4) -> requests.Session:
    """A keep-alive session whose transport never retries on its own (our loop counts and paces the retries)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
    session.mount('http://', adapter)
    session.mount('https://', adapter)
    return session
