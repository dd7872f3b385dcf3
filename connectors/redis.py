"""`WriteContentStatsToRedis`: per-(content, window) engagement stats to Redis, idempotently.

A `DoFn` owns a connection pool (`setup`/`teardown`), buffers the panes of a bundle and writes them in pipelined
batches at `finish_bundle`, one Lua script per pane: the content's hash gets the pane's absolute values, the top
sets its score, the window's totals the difference to what was stored, and a pane older than the stored one is
refused. So any pane can be written again, in any order, without changing the result. Unreachable or busy Redis:
the batch is retried with backoff, then the bundle fails; a pane Redis rejects for its own data goes to
`dead_letters` (stage `redis`). The password in the URL never reaches a log, an error or display data. Data model,
the reasons and the failure handling in full: docs/pipeline.md, "Redis data model".

    result = stats | 'WriteContentStatsToRedis' >> WriteContentStatsToRedis('redis://127.0.0.1:16379/0')
    result.dead_letters  # schemas.DeadLetter, stage 'redis'
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import random
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import apache_beam as beam
import redis
from apache_beam.metrics import Metrics
from apache_beam.transforms.display import DisplayDataItem
from apache_beam.utils.windowed_value import WindowedValue
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors import metrics
from connectors.credentials import redis_credentials
from connectors.redis_script import (
    COUNTERS,
    WRITE_STATS_LUA,
    InvalidStats,
    ViralRule,
    script_call,
)
from schemas.dead_letter import DEAD_LETTERS, DeadLetter

_LOG = logging.getLogger(__name__)

STAGE = 'redis'
WRITTEN = 'written'
ALERTS = 'alerts'
STATS_FIELDS = ('window_start', 'window_end', 'content_id', 'content_type', 'title', *COUNTERS, 'engagement_ms')
_METRICS_NAMESPACE = 'WriteContentStatsToRedis'
# Answers Redis gives while it cannot serve for a moment (per command inside a pipeline): retry the batch.
_TRANSIENT_REPLIES = ('LOADING', 'BUSY', 'READONLY', 'OOM', 'TRYAGAIN', 'MASTERDOWN', 'NOREPLICAS')
# Answers about the pane's own keys or values: the pane goes to the dead letters, the rest of the batch is written.
_DATA_REPLIES = ('WRONGTYPE', 'ERR')
# redis.exceptions.BusyLoadingError is a ConnectionError; AuthenticationError too, but retrying cannot fix it.
_RETRYABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_NOT_RETRYABLE = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)

_KNOWN_PANES = 200_000


class RedisSinkUnavailable(RuntimeError):
    """Redis could not take a batch after every retry (or refused our credentials); the bundle fails."""


def redact_url(url: str) -> str:
    """`url` with any password (in the user part or a `password=` query parameter) replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit('@', 1)
        user = userinfo.split(':', 1)[0]
        netloc = f'{user}:***@{host}'
    query = parts.query
    if 'password' in query:
        query = urlencode([(k, '***' if k == 'password' else v) for k, v in parse_qsl(query, keep_blank_values=True)])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secrets_of(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if k == 'password' and v]
    return [s for secret in found for s in {secret, unquote(secret)}]


def _payload(stats: Any) -> str:
    if hasattr(stats, 'model_dump_json'):
        return stats.model_dump_json()
    return json.dumps({f: getattr(stats, f, None) for f in STATS_FIELDS}, default=str)


def _reply_code(error: Exception) -> str:
    """The error code of a Redis reply (redis-py strips the codes it knows from the message into status_code)."""
    text = str(error)
    return getattr(error, 'status_code', None) or (text.split(' ', 1)[0] if text else '')


@dataclasses.dataclass
class _Pending:
    windowed: WindowedValue          # the stats element with its timestamp, window and pane, for the outputs
    keys: list[str]
    args: list[Any]
    first_failed: str | None = None  # ISO time of the first failed attempt, for a dead letter
    figures: tuple | None = None     # what the pane says, remembered once written (UpsertContentStatsFn._known)
    news: bool = False               # says something this instance had not written: counted in the latency metric


class UpsertContentStatsFn(beam.DoFn):
    """Buffers stats elements of a bundle and writes them with pipelined EVALSHAs; see the module docstring."""

    def __init__(self, redis_url: str, prefix: str, ttl_seconds: int, batch_size: int, max_attempts: int,
                 initial_backoff_seconds: float, max_backoff_seconds: float, socket_timeout_seconds: float,
                 viral: ViralRule | None = None):
        self._url = redis_url
        self._viral = viral
        # $REDIS_USERNAME / $REDIS_PASSWORD[_FILE] of the process that builds the graph, so that workers elsewhere
        # (Dataflow's) get them too; not display data.
        self._credentials = redis_credentials()
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._initial_backoff = initial_backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._socket_timeout = socket_timeout_seconds
        self._dead = Metrics.counter(_METRICS_NAMESPACE, 'dead_letters')
        self._unchanged = Metrics.counter(_METRICS_NAMESPACE, 'early_panes_unchanged')

    def display_data(self):
        return {'redis_url': DisplayDataItem(redact_url(self._url), label='Redis URL'),
                'redis_prefix': self._prefix, 'ttl_seconds': self._ttl, 'batch_size': self._batch_size}

    def setup(self):
        self._safe_url = redact_url(self._url)
        self._secrets = _secrets_of(self._url) + ([self._credentials['password']]
                                                  if self._credentials.get('password') else [])
        # Our own loop retries (and counts) failures, so the client must not retry underneath it.
        self._client = redis.Redis.from_url(
            self._url, socket_timeout=self._socket_timeout, socket_connect_timeout=self._socket_timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=30, **self._credentials)
        self._sha = None
        # (window_start, content_id) -> figures of the last pane this instance wrote: an EARLY pane that says the
        # same again is not rewritten. The aggregation emits every content of a group of contents in each pane
        # (transforms/windows.py, shards), most of them unchanged; only what Redis acknowledged is remembered, so
        # a failed or retried write is never skipped. ON_TIME and LATE panes are always written.
        self._known: dict[tuple, tuple] = {}

    def start_bundle(self):
        self._batch: list[_Pending] = []

    def process(self, stats, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        try:
            keys, args = script_call(stats, self._prefix, self._ttl, viral=self._viral)
        except InvalidStats as exc:
            self._dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, self._dead_letter(stats, 'invalid_stats', str(exc), 1))
            return
        figures = (stats.events, stats.play, stats.pause, stats.finish, stats.click, stats.engagement_ms,
                   stats.title, stats.content_type)
        news = self._known.get((stats.window_start, stats.content_id)) != figures
        if not news and getattr(stats, 'pane_timing', None) == 'EARLY':
            self._unchanged.inc()
            return
        self._batch.append(_Pending(WindowedValue(stats, timestamp, (window,), pane), keys, args, figures=figures,
                                    news=news))
        if len(self._batch) >= self._batch_size:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush()

    def teardown(self):
        client = getattr(self, '_client', None)
        if client is not None:
            client.close()

    def _flush(self):
        pending, self._batch = self._batch, []
        attempt, started = 0, time.monotonic()
        while pending:
            attempt += 1
            try:
                replies = self._execute(pending)
            except _NOT_RETRYABLE as exc:
                metrics.SINK_FAILURES.inc(sink=STAGE)
                raise RedisSinkUnavailable(f'Redis at {self._safe_url} refused the credentials or permissions: '
                                           f'{self._scrub(exc)}; fix --redis_url (user/password/ACL).') from None
            except _RETRYABLE as exc:
                self._sha = None  # a restarted server has an empty script cache
                self._retry_or_raise(attempt, started, pending, exc)
                continue
            except redis.exceptions.ResponseError as exc:  # e.g. NOPERM for SCRIPT LOAD
                metrics.SINK_FAILURES.inc(sink=STAGE)
                raise RedisSinkUnavailable(f'Redis at {self._safe_url} refused to load the write script: '
                                           f'{self._scrub(exc)}; {len(pending)} panes not written.') from None
            failed_at, error = None, None
            for index, (item, reply) in enumerate(zip(pending, replies)):
                code = _reply_code(reply) if isinstance(reply, Exception) else None
                if code is None:
                    metrics.PANES_WRITTEN.inc(sink=STAGE)
                    newest = getattr(item.windowed.value, 'newest_ingest_ms', None)
                    if item.news and newest is not None:
                        metrics.EVENT_TO_REDIS_SECONDS.observe(max(0.0, time.time() - newest / 1000))
                    self._remember(item)
                    yield item.windowed
                    if isinstance(reply, list) and reply and reply[0] == 2:
                        yield beam.pvalue.TaggedOutput(ALERTS, item.windowed.with_value(
                            self._alert(item.windowed.value, reply[1])))
                elif isinstance(reply, redis.exceptions.NoScriptError) or code in _TRANSIENT_REPLIES:
                    # Resend from here on, in order, so that no older pane lands after a newer one of its content.
                    failed_at, error = index, reply
                    break
                elif code in _DATA_REPLIES:
                    self._dead.inc()
                    yield beam.pvalue.TaggedOutput(DEAD_LETTERS, item.windowed.with_value(
                        self._dead_letter(item.windowed.value, 'redis_rejected', self._scrub(reply), attempt)))
                else:
                    metrics.SINK_FAILURES.inc(sink=STAGE)
                    raise RedisSinkUnavailable(f'Redis at {self._safe_url} answered {self._scrub(reply)!r}; '
                                               f'{len(pending) - index} panes not written.')
            if failed_at is None:
                metrics.SINK_WRITE_SECONDS.observe(time.monotonic() - started, sink=STAGE)
                return
            pending = pending[failed_at:]
            if isinstance(error, redis.exceptions.NoScriptError):
                self._sha = None
                if attempt < self._max_attempts:
                    continue  # reload the script and resend at once
            self._retry_or_raise(attempt, started, pending, error)

    def _alert(self, stats: Any, average: bytes | str) -> dict:
        assert self._viral is not None  # the script alerts only when asked to
        metrics.VIRAL_ALERTS.inc(content_type=stats.content_type)
        alert = {'content_id': stats.content_id, 'content_type': stats.content_type, 'title': stats.title,
                 'window_start': stats.window_start, 'window_end': stats.window_end, 'events': stats.events,
                 'trailing_average': float(average), 'multiple': self._viral.multiple,
                 'min_events': self._viral.min_events, 'trailing_windows': self._viral.trailing_windows,
                 'detected_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='milliseconds')}
        _LOG.info(json.dumps({'event': 'viral_content', **alert}))
        return alert

    def _remember(self, item: _Pending) -> None:
        if len(self._known) >= _KNOWN_PANES:
            self._known.clear()                      # bounded; forgetting only costs a rewrite
        stats = item.windowed.value
        assert item.figures is not None  # set for every pane that is written
        self._known[(stats.window_start, stats.content_id)] = item.figures

    def _execute(self, pending: list[_Pending]) -> list[Any]:
        if self._sha is None:
            self._sha = self._client.script_load(WRITE_STATS_LUA)
        pipe = self._client.pipeline(transaction=False)
        for item in pending:
            pipe.evalsha(self._sha, len(item.keys), *item.keys, *item.args)
        return pipe.execute(raise_on_error=False)

    def _retry_or_raise(self, attempt: int, started: float, pending: list[_Pending], error: Exception) -> None:
        """Sleep before the next attempt, or raise when the attempts are used up. Logs name the first pane's key
        (window start/content id), the correlation id of a pane."""
        panes, first = len(pending), pending[0].windowed.value
        first_pane = f'{getattr(first, "window_start", "?")}/{getattr(first, "content_id", "?")}'
        if attempt >= self._max_attempts:
            metrics.SINK_FAILURES.inc(sink=STAGE)
            message = (f'Redis at {self._safe_url} did not take {panes} panes after {attempt} attempts over '
                       f'{time.monotonic() - started:.1f} s ({type(error).__name__}: {self._scrub(error)}); '
                       'the bundle fails and is retried by the runner (rewriting is safe). Is Redis running?')
            _LOG.error(json.dumps({'event': 'redis_write_failed', 'url': self._safe_url, 'panes': panes,
                                   'first_pane': first_pane,
                                   'attempts': attempt, 'error': self._scrub(error)}))
            raise RedisSinkUnavailable(message)
        metrics.SINK_RETRIES.inc(sink=STAGE)
        backoff = min(self._max_backoff, self._initial_backoff * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
        _LOG.warning(json.dumps({'event': 'redis_write_retry', 'url': self._safe_url, 'panes': panes,
                                 'first_pane': first_pane,
                                 'attempt': attempt, 'backoff_s': round(backoff, 3),
                                 'error': f'{type(error).__name__}: {self._scrub(error)}'}))
        time.sleep(backoff)

    def _scrub(self, error: Exception) -> str:
        text = str(error)
        for secret in self._secrets:
            text = text.replace(secret, '***')
        return text

    def _dead_letter(self, stats: Any, reason: str, error: str, attempts: int) -> DeadLetter:
        now = datetime.datetime.now(datetime.timezone.utc)
        return DeadLetter(payload=_payload(stats), stage=STAGE, reason=reason, error=error, attempts=attempts,
                          first_failed_ts=now, last_failed_ts=now)


class WriteContentStatsToRedis(beam.PTransform):
    """Upsert per-(content, window) stats panes into Redis (data model and guarantees: module docstring).

    Input: one element per fired pane, any object with the attributes of `schemas.ContentWindowStats`
    (window_start, window_end, content_id, content_type, title, events, play, pause, finish, click, engagement_ms).
    Output: a `DoOutputsTuple` with `written` (the elements written, in their windows), `dead_letters` (dead
    letter records, stage 'redis', for elements that are invalid or that Redis rejects) and `alerts` (with `viral`:
    one dict per (content, window) that turned viral, also on the Redis stream `P:alerts`).
    """

    def __init__(self, redis_url: str, redis_prefix: str = 'engagement', ttl_seconds: int = 86400,
                 batch_size: int = 500, max_attempts: int = 10, initial_backoff_seconds: float = 0.5,
                 max_backoff_seconds: float = 8.0, socket_timeout_seconds: float = 5.0,
                 viral: ViralRule | None = None):
        super().__init__()
        try:
            urlsplit(redis_url).port
        except ValueError as exc:
            raise ValueError(f'redis_url {redact_url(redis_url)!r} is not a valid URL: {exc}') from None
        if urlsplit(redis_url).scheme not in ('redis', 'rediss', 'unix'):
            raise ValueError(f'redis_url {redact_url(redis_url)!r} must start with redis://, rediss:// or unix://')
        if not redis_prefix or ':' in redis_prefix or any(c.isspace() for c in redis_prefix):
            raise ValueError(f'redis_prefix {redis_prefix!r} must be a non-empty name without ":" or spaces')
        for name, value in (('ttl_seconds', ttl_seconds), ('batch_size', batch_size), ('max_attempts', max_attempts)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a whole number >= 1, got {value!r}')
        self._fn = UpsertContentStatsFn(redis_url, redis_prefix, ttl_seconds, batch_size, max_attempts,
                                        initial_backoff_seconds, max_backoff_seconds, socket_timeout_seconds, viral)

    def expand(self, stats):
        return stats | 'UpsertStatsWithLua' >> beam.ParDo(self._fn).with_outputs(DEAD_LETTERS, ALERTS, main=WRITTEN)
