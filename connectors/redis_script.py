"""What the Redis sink writes for one pane: the Lua script, its KEYS and ARGV, and the viral-content rule.

One script call per pane: `script_call(stats, prefix, ttl)` gives KEYS and ARGV for `WRITE_STATS_LUA`; with a
`ViralRule` the same call also checks the pane against the content's trailing average and, the first time it
exceeds it, adds an alert to the `alerts_stream(prefix)` stream. The data model: docs/pipeline.md, "Redis data model".
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

COUNTERS = ('events', 'play', 'pause', 'finish', 'click')


class InvalidStats(ValueError):
    """A stats element lacks a field or carries a value the data model cannot hold."""


# KEYS: stats hash, top set of the content type, top set of all, totals hash.
# ARGV: top-set key prefix (P:top:W:), content_id, content_type, title, engagement_seconds, ttl, the counters
# (events, play, pause, finish, click), then pane_us: when the sink received the pane (µs since the epoch).
# A pane older than the stored one (fewer distinct events, or as many and received earlier) changes nothing:
# batches retried after a Redis outage land in any order, and a pane counts a subset of its window's events, so
# the final pane (all of them) is never refused, also after a restart's partial recount.
WRITE_STATS_LUA = """
local counters = {'events', 'play', 'pause', 'finish', 'click'}
local top_prefix, content_id, content_type = ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('HMGET', KEYS[1], 'events', 'play', 'pause', 'finish', 'click', 'content_type', 'pane_us')
local new_events, new_us = tonumber(ARGV[7]), tonumber(ARGV[12])
local old_events, old_us = tonumber(old[1]), tonumber(old[7])
if old_events and (new_events < old_events or (new_events == old_events and old_us and new_us < old_us)) then
  return 0
end
for i, field in ipairs(counters) do
  redis.call('HINCRBY', KEYS[4], field, tonumber(ARGV[6 + i]) - (tonumber(old[i]) or 0))
end
redis.call('HSET', KEYS[1], 'events', ARGV[7], 'play', ARGV[8], 'pause', ARGV[9], 'finish', ARGV[10],
           'click', ARGV[11], 'engagement_seconds', ARGV[5], 'title', ARGV[4], 'content_type', content_type,
           'pane_us', ARGV[12])
if old[6] and old[6] ~= content_type then
  redis.call('ZREM', top_prefix .. old[6], content_id)
end
redis.call('ZADD', KEYS[2], ARGV[7], content_id)
redis.call('ZADD', KEYS[3], ARGV[7], content_id)
for i = 1, 4 do
  redis.call('EXPIRE', KEYS[i], ARGV[6])
end
if #KEYS < 6 then
  return 1
end
-- Viral content: this window's events against the content's average over the previous windows the pipeline
-- observed (a window with totals; the content's events there, 0 if none). Before any observed window (a first
-- start) nothing alerts. KEYS[5]: alerts stream, KEYS[6]: the (window, content)'s alerted marker. ARGV[13..]:
-- window start, window seconds, trailing windows, multiple, minimum events, stats key prefix (P:stats:), stream
-- length, totals key prefix (P:totals:).
local window, width, trailing = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local multiple, minimum = tonumber(ARGV[16]), tonumber(ARGV[17])
if new_events < minimum then
  return 1
end
local sum, observed = 0, 0
for i = 1, trailing do
  local before = string.format('%d', window - i * width)
  if redis.call('EXISTS', ARGV[20] .. before) == 1 then
    observed = observed + 1
    sum = sum + (tonumber(redis.call('HGET', ARGV[18] .. before .. ':' .. content_id, 'events')) or 0)
  end
end
if observed == 0 then
  return 1
end
local average = sum / observed
if new_events <= multiple * average or redis.call('SET', KEYS[6], '1', 'NX', 'EX', ARGV[6]) == false then
  return 1
end
local shown = string.format('%.3f', average)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[19], '*', 'content_id', content_id, 'content_type', content_type,
           'title', ARGV[4], 'window_start', ARGV[13], 'events', ARGV[7], 'trailing_average', shown,
           'multiple', ARGV[16])
return {2, shown}
"""


def exact_seconds(milliseconds: int) -> str:
    """Milliseconds as an exact decimal string of seconds: 1234567 -> '1234.567', 1500 -> '1.5', 2000 -> '2'."""
    sign = '-' if milliseconds < 0 else ''
    whole, rest = divmod(abs(milliseconds), 1000)
    return f'{sign}{whole}.{rest:03d}'.rstrip('0').rstrip('.') if rest else f'{sign}{whole}'


def _count(stats: Any, field: str) -> int:
    value = getattr(stats, field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 53:
        raise InvalidStats(f'{field}={value!r} is not a whole number >= 0')
    return value


def _name(stats: Any, field: str) -> str:
    value = getattr(stats, field)
    if not isinstance(value, str) or not value.strip() or ':' in value or value == 'all':
        raise InvalidStats(f'{field}={value!r} must be a non-empty string without ":" (and not "all")')
    return value


@dataclasses.dataclass(frozen=True)
class StatsKeys:
    """The Redis keys of one (window, content, content type), in the order the Lua script takes them."""
    stats: str
    top_type: str
    top_all: str
    totals: str
    top_prefix: str

    @classmethod
    def of(cls, prefix: str, window_start: int, content_id: str, content_type: str) -> 'StatsKeys':
        top = f'{prefix}:top:{window_start}:'
        return cls(stats=f'{prefix}:stats:{window_start}:{content_id}', top_type=top + content_type,
                   top_all=top + 'all', totals=f'{prefix}:totals:{window_start}', top_prefix=top)


@dataclasses.dataclass(frozen=True)
class ViralRule:
    """A content is viral in a window when its events there reach `min_events` and exceed `multiple` times its
    average over those of the `trailing_windows` windows before that the pipeline observed (windows with totals in
    Redis; the content's events there, 0 if it had none). No observed window before (a first start): no alert.
    Checked at every pane the sink writes; one alert per (content, window)."""
    window_seconds: int
    multiple: float = 3.0
    min_events: int = 100
    trailing_windows: int = 10
    stream_length: int = 10_000

    def __post_init__(self):
        if not (self.multiple > 0 and self.min_events >= 1 and self.trailing_windows >= 1
                and self.window_seconds >= 1 and self.stream_length >= 1):
            raise ValueError(f'ViralRule: multiple > 0, min_events, trailing_windows, window_seconds and '
                             f'stream_length >= 1, got {self}')


def alerts_stream(prefix: str) -> str:
    """The Redis stream of viral-content alerts (XADD, trimmed to about ViralRule.stream_length entries)."""
    return f'{prefix}:alerts'


def script_call(stats: Any, prefix: str, ttl_seconds: int, pane_us: int | None = None,
                viral: ViralRule | None = None) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the Lua script for one stats element; raises InvalidStats for a bad element. `pane_us`:
    when the sink received the pane (default now), what orders panes with as many events. `viral`: also check the
    pane against the rule."""
    try:
        window_start = _count(stats, 'window_start')
        content_id, content_type = _name(stats, 'content_id'), _name(stats, 'content_type')
        title = getattr(stats, 'title')
        if not isinstance(title, str):
            raise InvalidStats(f'title={title!r} is not a string')
        counts = [_count(stats, field) for field in COUNTERS]
        seconds = exact_seconds(_count(stats, 'engagement_ms'))
    except AttributeError as exc:
        raise InvalidStats(f'missing field: {exc}') from None
    keys = StatsKeys.of(prefix, window_start, content_id, content_type)
    call_keys = [keys.stats, keys.top_type, keys.top_all, keys.totals]
    args = [keys.top_prefix, content_id, content_type, title, seconds, ttl_seconds, *counts,
            time.time_ns() // 1000 if pane_us is None else pane_us]
    if viral is not None:
        call_keys += [alerts_stream(prefix), f'{prefix}:alerted:{window_start}:{content_id}']
        args += [window_start, viral.window_seconds, viral.trailing_windows, repr(float(viral.multiple)),
                 viral.min_events, f'{prefix}:stats:', viral.stream_length, f'{prefix}:totals:']
    return call_keys, args
