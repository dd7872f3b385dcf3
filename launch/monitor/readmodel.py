"""Queries over the Redis read model the pipeline writes (docs/pipeline.md, "Redis data model"): the top contents
of a window per content type, one content's stats over recent windows, a window's totals. Read-only."""
from __future__ import annotations

import dataclasses
import time
from decimal import Decimal
from typing import Any

from schemas.events import EVENT_TYPES

CONTENT_TYPES = ('video', 'podcast', 'newsletter')   # the order the live page and the dashboard show them in


def window_start(now: float, window_seconds: int, back: int = 0) -> int:
    """Start (epoch seconds) of the window holding `now`, or of the one `back` windows before it."""
    return (int(now) // window_seconds - back) * window_seconds


@dataclasses.dataclass(frozen=True)
class ReadModel:
    client: Any              # redis.Redis with decode_responses=True
    prefix: str = 'engagement'
    window_seconds: int = 60

    def top(self, content_type: str, n: int, start: int) -> list[dict]:
        """The `n` contents with the most events in the window at `start`, most first; `content_type` 'all' for
        every type. Each entry has the content's stats hash, so one call renders a leaderboard."""
        ranked = self.client.zrevrange(f'{self.prefix}:top:{start}:{content_type}', 0, n - 1, withscores=True)
        pipe = self.client.pipeline(transaction=False)
        for content_id, _ in ranked:
            pipe.hgetall(f'{self.prefix}:stats:{start}:{content_id}')
        return [{'rank': rank, 'content_id': content_id, 'events': int(score), **_stats(fields)}
                for rank, ((content_id, score), fields) in enumerate(zip(ranked, pipe.execute()), start=1)]

    def content(self, content_id: str, windows: int, now: float | None = None) -> list[dict]:
        """The content's stats in each of the last `windows` windows up to the current one, newest first; windows
        without an event of it are left out."""
        now = time.time() if now is None else now
        starts = [window_start(now, self.window_seconds, back) for back in range(windows)]
        pipe = self.client.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(f'{self.prefix}:stats:{start}:{content_id}')
        return [{'window_start': start, 'window_end': start + self.window_seconds, **_stats(fields)}
                for start, fields in zip(starts, pipe.execute()) if fields]

    def totals(self, start: int) -> dict:
        """Events of the window at `start` over all contents, in total and per event type (zeros when none)."""
        fields = self.client.hgetall(f'{self.prefix}:totals:{start}')
        return {'window_start': start, 'window_end': start + self.window_seconds,
                'events': int(fields.get('events', 0)), **{t: int(fields.get(t, 0)) for t in EVENT_TYPES}}


    def user(self, user_id: str) -> dict:
        """The user's recent contents (newest first) and engagement seconds per content type (per-user keys:
        connectors/redis_users.py)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrevrange(f'{self.prefix}:user:{user_id}:recent', 0, -1, withscores=True)
        pipe.hgetall(f'{self.prefix}:user:{user_id}:ms')
        recent, ms = pipe.execute()
        return {'user_id': user_id,
                'recent': [{'content_id': c, 'last_event_ts': ts / 1000} for c, ts in recent],
                'engagement_seconds': {t: int(v) / 1000 for t, v in ms.items() if int(v)}}


def _stats(fields: dict) -> dict:
    if not fields:
        return {}
    return {'title': fields.get('title'), 'content_type': fields.get('content_type'),
            'events': int(fields.get('events', 0)), **{t: int(fields.get(t, 0)) for t in EVENT_TYPES},
            'engagement_seconds': float(Decimal(fields.get('engagement_seconds', '0')))}
