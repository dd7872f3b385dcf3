"""`WriteUserEngagementToRedis`: per user, the last N contents engaged with and the engagement seconds per content
type, idempotently (`--user_recent_contents`; the query API's `/v1/users/{id}`).

Keys (P = `--redis_prefix`, U = the user id, or its pseudonym with `--pseudonymize_user_ids`):

    P:user:U:recent    ZSET content_id -> newest event_ts (ms) of the user on it; the N newest kept
    P:user:U:ms        HASH content_type -> engagement milliseconds (sum of duration_ms)
    P:user:U:events    HASH event_id -> "content_type|duration_ms|version": what each event added to `ms`

One Lua script per event: an event already in `events` with the same or a newer version changes nothing (a replay, a
redelivered change), a newer version (a CDC update, higher LSN) replaces its old contribution; `recent` takes the
event's time only if newer (`ZADD GT`) and is trimmed to N. So any event can be written again, in any order, and the
keys end as SQL says. Memory is bounded by the TTL (`--user_ttl_seconds`, renewed by each event of the user: a user
without events for that long is forgotten) and the cap N; `events` holds one field per event of the user within the
TTL (~40 bytes each). Unreachable Redis: the batch is retried with backoff, then the bundle fails and the runner
retries it; an event Redis rejects for its data goes to the dead letters (stage `redis`).
"""
from __future__ import annotations

import datetime
import random
import time
from typing import Any

import apache_beam as beam
import redis
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors import metrics
from connectors.credentials import redis_credentials
from connectors.redis import _RETRYABLE, RedisSinkUnavailable, _reply_code, _secrets_of, redact_url
from schemas.dead_letter import DEAD_LETTERS, DeadLetter

_TRANSIENT = ('LOADING', 'BUSY', 'OOM', 'TRYAGAIN', 'MASTERDOWN')
WRITE_USER_LUA = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local version = tonumber(ARGV[4])
local write = true
if old then
  local otype, oms, over = string.match(old, '^(.*)|(%d+)|(%d+)$')
  if tonumber(over) >= version then
    write = false
  else
    redis.call('HINCRBY', KEYS[2], otype, -tonumber(oms))
  end
end
if write then
  redis.call('HINCRBY', KEYS[2], ARGV[2], tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4])
end
redis.call('ZADD', KEYS[3], 'GT', ARGV[6], ARGV[5])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[7]) + 1))
for i = 1, 3 do
  redis.call('EXPIRE', KEYS[i], ARGV[8])
end
if write then return 1 end
return 0
"""


def user_keys(prefix: str, user_id: str) -> list[str]:
    """events, ms, recent (the script's KEYS)."""
    return [f'{prefix}:user:{user_id}:events', f'{prefix}:user:{user_id}:ms', f'{prefix}:user:{user_id}:recent']


def script_args(event: Any, recent: int, ttl: int) -> list:
    ts_ms = int(event.event_ts.timestamp() * 1000)
    return [event.id, event.content_type, event.duration_ms or 0, event.source_lsn or 0, event.content_id, ts_ms,
            recent, ttl]


class UpsertUserEngagementFn(beam.DoFn):
    def __init__(self, redis_url: str, prefix: str, recent: int, ttl_seconds: int, batch_size: int = 1000,
                 max_attempts: int = 10):
        self._url, self._prefix, self._recent, self._ttl = redis_url, prefix, recent, ttl_seconds
        self._batch_size, self._max_attempts = batch_size, max_attempts
        self._credentials = redis_credentials()

    def setup(self):
        self._safe_url = redact_url(self._url)
        self._secrets = _secrets_of(self._url) + ([self._credentials['password']]
                                                  if self._credentials.get('password') else [])
        self._client = redis.Redis.from_url(self._url, socket_timeout=5, socket_connect_timeout=5,
                                            retry=Retry(NoBackoff(), 0), **self._credentials)
        self._sha = None

    def start_bundle(self):
        self._batch: list = []

    def process(self, event, timestamp=beam.DoFn.TimestampParam):
        self._batch.append((event, timestamp))
        if len(self._batch) >= self._batch_size:
            for letter, _ in self._flush():
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, letter)

    def finish_bundle(self):
        for letter, timestamp in self._flush():
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, WindowedValue(letter, timestamp, (GlobalWindow(),)))

    def teardown(self):
        if getattr(self, '_client', None) is not None:
            self._client.close()

    def _flush(self):
        """Write the batch; returns (dead letter, timestamp) of the events Redis rejected for their data."""
        pending, self._batch = self._batch, []
        rejected = []
        attempt, started = 0, time.monotonic()
        while pending:
            attempt += 1
            try:
                if self._sha is None:
                    self._sha = self._client.script_load(WRITE_USER_LUA)
                pipe = self._client.pipeline(transaction=False)
                for event, _ in pending:
                    pipe.evalsha(self._sha, 3, *user_keys(self._prefix, event.user_id),
                                 *script_args(event, self._recent, self._ttl))
                replies = pipe.execute(raise_on_error=False)
            except _RETRYABLE as exc:
                self._sha = None
                self._wait_or_raise(attempt, started, len(pending), exc)
                continue
            retry, error = [], None
            for item, reply in zip(pending, replies):
                if not isinstance(reply, Exception):
                    continue
                if isinstance(reply, redis.exceptions.NoScriptError) or _reply_code(reply) in _TRANSIENT:
                    retry.append(item)
                    error = error or reply
                else:
                    rejected.append((self._dead_letter(item[0], reply, attempt), item[1]))
            metrics.SINK_WRITE_SECONDS.observe(time.monotonic() - started, sink='redis_users')
            if retry:
                self._sha = None
                self._wait_or_raise(attempt, started, len(retry), error)
            pending = retry
        return rejected

    def _wait_or_raise(self, attempt: int, started: float, count: int, error: Exception) -> None:
        if attempt >= self._max_attempts:
            metrics.SINK_FAILURES.inc(sink='redis_users')
            raise RedisSinkUnavailable(f'Redis at {self._safe_url} did not take {count} user events after {attempt} '
                                       f'attempts over {time.monotonic() - started:.1f} s ({self._scrub(error)}); '
                                       'the bundle fails and is retried by the runner (rewriting is safe).')
        metrics.SINK_RETRIES.inc(sink='redis_users')
        time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2))

    def _scrub(self, error: Exception) -> str:
        text = f'{type(error).__name__}: {error}'
        for secret in self._secrets:
            text = text.replace(secret, '***')
        return text

    def _dead_letter(self, event: Any, reply: Exception, attempts: int) -> DeadLetter:
        now = datetime.datetime.now(datetime.timezone.utc)
        return DeadLetter.for_event(event, stage='redis', reason='redis_rejected', error=self._scrub(reply), now=now,
                                    attempts=attempts)


class WriteUserEngagementToRedis(beam.PTransform):
    """EnrichedEvent -> the per-user keys (module docstring); returns the dead letters (stage 'redis')."""

    def __init__(self, redis_url: str, redis_prefix: str = 'engagement', recent_contents: int = 20,
                 ttl_seconds: int = 7 * 86400):
        super().__init__()
        for name, value in (('recent_contents', recent_contents), ('ttl_seconds', ttl_seconds)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'WriteUserEngagementToRedis: {name} must be a whole number >= 1, got {value!r}')
        self._fn = UpsertUserEngagementFn(redis_url, redis_prefix, recent_contents, ttl_seconds)

    def expand(self, events):
        outputs = events | 'UpsertUsersWithLua' >> beam.ParDo(self._fn).with_outputs(DEAD_LETTERS, main='written')
        return outputs[DEAD_LETTERS]
