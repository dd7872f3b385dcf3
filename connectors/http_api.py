"""Deliver enriched events to an external REST API, at most once per event in effect: `DeliverToApi`.

Beam concepts: a composite `PTransform` around a `DoFn` that owns a pooled HTTP session, an OAuth2 token and a
circuit breaker for its lifetime (`setup`/`teardown`), batches the events of a bundle (flushed at
`--api_batch_size` and at `finish_bundle`), a tagged dead-letter output (`ParDo.with_outputs`) and
`Metrics.counter`s (namespace `DeliverToApi`: delivered, duplicates, retries, breaker_opened, breaker_closed,
dead_lettered, requests, token_fetches).

The API (served locally by `python -m launch.api_receiver`):
- `POST <token_url>` (default `<api_url>/oauth/token`), OAuth2 client credentials with the client id and secret
  as HTTP Basic. The token is fetched lazily, cached, refreshed shortly before `expires_in` runs out (a fifth of
  its lifetime, at most 60 s, before), and fetched again once when the API answers 401 (the server may have
  forgotten it, e.g. after a restart).
- `POST <api_url>/v1/events` with a JSON list of `{"idempotency_key": "<event id>", "event": {...}}`: the event
  id is the idempotency key of each event, so a batch sent again (a retry after a timeout or a lost answer, a
  replay after a pipeline restart, a redelivered dead letter) is answered "duplicate" per event and stored once.
  `X-Request-Id` names the logical request and stays the same across its retries.

Failures, per batch request. 429, 408, 5xx, timeouts (`--api_timeout_seconds`), dropped connections and an
unreadable 2xx answer are retried with exponential backoff and full jitter (a uniform draw from 0 to
base * 2^(attempt-1), capped), waiting at least the server's `Retry-After` (capped at `retry_after_cap_seconds`);
at most `--api_max_attempts` HTTP calls per request, the 401 re-authentication included. When the attempts are used
up, every event of the batch goes to the dead-letter output (stage `api`; reason `api_http_<status>`,
`api_timeout`, `api_connection_error`, `api_token_unavailable` or `api_bad_response`; the attempts made). Other
4xx answers are not retried (`api_rejected_<status>`), an event the API rejects on its own is dead-lettered as
`api_rejected_event` with the API's error, refused credentials as `api_auth_failed`. A batch is split into
requests of at most `--api_max_request_bytes`; an event larger than that on its own is not sent
(`payload_too_large`). A timeout or a dropped
connection leaves it open whether the API stored the batch: a dead letter then may describe an event the API
holds; redelivering it is safe, the API answers "duplicate". The payload of an api dead letter is the whole
`EnrichedEvent` as JSON, so `python -m launch.dead_letters redeliver --stage api` (`launch/redeliver.py`)
can send it again with this client once the API is back.

Circuit breaker, one per DoFn instance: after `--api_breaker_failures` consecutive requests that failed for
server-side reasons (every retryable outcome and refused credentials; not a 4xx that rejects the data) it opens,
logs `api_breaker_opened` and counts `breaker_opened`; while open, batches are not sent: their events go straight
to the dead letters with reason `circuit_open` (attempts 1 = none made; the schema's minimum). After
`--api_breaker_cooldown_seconds` one batch is sent as a probe with a single attempt: success closes the breaker
(`api_breaker_closed`, `breaker_closed`), failure opens it for another cool-down.

Why not Beam's RequestResponseIO (`apache_beam.io.requestresponse`, 2.77). It wraps a user `Caller` (one request
per element) with a `Repeater` (`ExponentialBackOffRepeater`: a fixed 2 retries, Beam's `with_exponential_backoff`
starting at 5 s, only for its own TooManyRequests/UserCodeTimeout/UserCodeQuota exceptions), an optional client-
side `PreCallThrottler` (AdaptiveThrottler), and a Redis-backed response cache meant for enrichment lookups. We
need what it does not offer: a request per batch of events (it would need a separate `BatchElements` step and
per-event results split back out), `Retry-After` honoured, an OAuth2 token shared by the requests of a worker and
refreshed on expiry and on 401, idempotency keys per event, and above all failed events as dead-letter records:
after its retries it re-raises and fails the bundle (Prism then fails the job), and it has no circuit breaker, so
an API that is down would stall or kill the pipeline instead of diverting events to the dead letters. Its timeout
is a wait on a worker thread whose executor then waits for the call anyway, so it does not bound a hung request.
What it would give us (retries, metrics) is a few lines here; the cache is of no use to a sink. So the `DoFn` is
our own, plain `requests` with a pooled `Session`.

The client secret and the access token never appear in logs, errors, dead letters or display data (they do
travel inside the pickled `DoFn`, like every pipeline option; on Dataflow prefer a secret manager).

Usage (the input is a PCollection of `schemas.EnrichedEvent`)::

    delivered = enriched | 'DeliverToApi' >> DeliverToApi.from_options(opts)
    delivered.delivered    # ApiDelivery(event_id, status 'accepted'|'duplicate', attempts) per delivered event
    delivered.dead_letters # schemas.DeadLetter, stage 'api'
"""
from __future__ import annotations

import dataclasses
import datetime
import email.utils
import json
import logging
import random
import time
import uuid
from typing import Callable, NamedTuple, Sequence

import apache_beam as beam
import requests
from apache_beam.metrics import Metrics
from apache_beam.transforms.display import DisplayDataItem
from apache_beam.utils.windowed_value import WindowedValue
from requests.adapters import HTTPAdapter

from schemas.dead_letter import DEAD_LETTERS, DeadLetter
from schemas.events import EnrichedEvent

_LOG = logging.getLogger(__name__)

STAGE = 'api'
DELIVERED = 'delivered'
EVENTS_PATH = '/v1/events'
TOKEN_PATH = '/oauth/token'
CIRCUIT_OPEN = 'circuit_open'
PAYLOAD_TOO_LARGE = 'payload_too_large'
METRICS_NAMESPACE = 'DeliverToApi'
COUNTERS = ('delivered', 'duplicates', 'retries', 'breaker_opened', 'breaker_closed', 'dead_lettered', 'requests',
            'token_fetches')
_ERROR_TEXT_LIMIT = 300


@dataclasses.dataclass(frozen=True)
class ApiDelivery:
    """One event the API holds: 'accepted' (stored now) or 'duplicate' (it had it already)."""
    event_id: int
    status: str
    attempts: int


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


# ---------------------------------------------------------------------------------------------------------------
# Pure policy: backoff, Retry-After, circuit breaker (clock injected, unit-tested without a server)

def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))] after the `attempt`-th failed call."""
    return rng.uniform(0.0, min(cap, base * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_delay(attempt: int, retry_after: float | None, base: float, cap: float, retry_after_cap: float,
                rng: random.Random) -> float:
    """The wait before the next call: the jittered backoff, but never less than the (capped) Retry-After."""
    delay = backoff_seconds(attempt, base, cap, rng)
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_cap))
    return delay


class CircuitBreaker:
    """Closed -> open after `failure_threshold` consecutive failed requests -> after `cooldown_seconds` one probe
    (half-open) -> closed on its success, open again on its failure."""
    CLOSED, OPEN, PROBE = 'closed', 'open', 'probe'

    def __init__(self, failure_threshold: int, cooldown_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self.consecutive_failures = 0
        self.opened_at: float | None = None

    def before_request(self) -> str:
        """CLOSED: send normally; PROBE: send one probe with a single attempt; OPEN: do not send."""
        if self.opened_at is None:
            return self.CLOSED
        if self._clock() - self.opened_at >= self.cooldown_seconds:
            return self.PROBE
        return self.OPEN

    def record_success(self) -> bool:
        """Returns True when this success closed an open breaker."""
        was_open = self.opened_at is not None
        self.consecutive_failures, self.opened_at = 0, None
        return was_open

    def record_failure(self) -> bool:
        """Returns True when this failure opened the breaker (or re-opened it after a failed probe)."""
        self.consecutive_failures += 1
        if self.opened_at is not None or self.consecutive_failures >= self.failure_threshold:
            self.opened_at = self._clock()
            return True
        return False

    def seconds_until_probe(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_seconds - self._clock())


# ---------------------------------------------------------------------------------------------------------------
# The client: one per DoFn instance

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


# ---------------------------------------------------------------------------------------------------------------
# Beam

class DeliverToApiFn(beam.DoFn):
    """EnrichedEvent -> ApiDelivery (main) or DeadLetter (tagged `dead_letter`), in batches; see the module."""

    def __init__(self, config: ApiSinkConfig):
        self._config = config.check()
        self._counters = {name: Metrics.counter(METRICS_NAMESPACE, name) for name in COUNTERS}

    def display_data(self):
        cfg = self._config
        return {'api_url': DisplayDataItem(cfg.api_url, label='API URL'), 'client_id': cfg.client_id,
                'batch_size': cfg.batch_size, 'max_attempts': cfg.max_attempts,
                'timeout_seconds': cfg.timeout_seconds, 'breaker_failures': cfg.breaker_failures}

    def setup(self):
        self._client = ApiClient(self._config, count=lambda name, n: self._counters[name].inc(n))

    def start_bundle(self):
        self._batch: list[WindowedValue] = []

    def process(self, event, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        self._batch.append(WindowedValue(event, timestamp, (window,), pane))
        if len(self._batch) >= self._config.batch_size:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush()

    def teardown(self):
        client = getattr(self, '_client', None)
        if client is not None:
            client.close()

    def _flush(self):
        batch, self._batch = self._batch, []
        if not batch:
            return
        now = datetime.datetime.now(datetime.timezone.utc)
        for windowed, outcome in zip(batch, self._client.deliver([w.value for w in batch])):
            if outcome.status == 'dead':
                self._counters['dead_lettered'].inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, windowed.with_value(DeadLetter.for_event(
                    outcome.event, stage=STAGE, reason=outcome.reason, error=outcome.error, now=now,
                    attempts=max(1, outcome.attempts))))
            else:
                self._counters['delivered'].inc()
                if outcome.status == 'duplicate':
                    self._counters['duplicates'].inc()
                yield windowed.with_value(ApiDelivery(outcome.event.id, outcome.status, outcome.attempts))


class ApiDeliveries(NamedTuple):
    delivered: beam.PCollection     # ApiDelivery per event the API holds
    dead_letters: beam.PCollection  # DeadLetter, stage 'api'


class DeliverToApi(beam.PTransform):
    """POST enriched events to the REST API in batches (behaviour: module docstring).

    Input: PCollection of `schemas.EnrichedEvent`. Output: `DoOutputsTuple` with `delivered` (`ApiDelivery` per
    event the API holds) and `dead_letter` (`schemas.DeadLetter`, stage 'api'), both in the input's windows.
    """

    def __init__(self, config: ApiSinkConfig):
        super().__init__()
        self._fn = DeliverToApiFn(config)

    @classmethod
    def from_options(cls, opts) -> 'DeliverToApi':
        """From `pipelines.options.EngagementOptions` (validated; `--api_url` non-empty)."""
        return cls(ApiSinkConfig.from_options(opts))

    def expand(self, events):
        outputs = events | 'PostBatchesToApi' >> beam.ParDo(self._fn).with_outputs(DEAD_LETTERS, main=DELIVERED)
        return ApiDeliveries(outputs[DELIVERED], outputs[DEAD_LETTERS])
