"""What every peer job shares (imported from the peer's own virtualenv: the standard library, orjson, psycopg2 and
redis only, never this repository's packages): settings from the environment, the catalogue loaded once from
Postgres, the per-event validation and enrichment, and the Redis write of one window's figures."""
from __future__ import annotations

import os
from datetime import datetime

BOOTSTRAP = os.environ['PEER_BOOTSTRAP']
TOPIC = os.environ['PEER_TOPIC']
PG_DSN = os.environ['PEER_PG_DSN']
REDIS_URL = os.environ['PEER_REDIS_URL']
PREFIX = os.environ['PEER_PREFIX']
WINDOW_S = int(os.environ.get('PEER_WINDOW_S', '60'))
GRACE_S = int(os.environ.get('PEER_GRACE_S', '30'))
EVENT_TYPES = frozenset({'play', 'pause', 'finish', 'click'})


def load_catalogue() -> dict[str, tuple[str, str, int | None]]:
    """{content id: (title, content type, length in seconds)}, once, at start."""
    import psycopg2
    with psycopg2.connect(PG_DSN) as conn, conn.cursor() as cur:
        cur.execute('SELECT id::text, title, content_type, length_seconds FROM content')
        return {row[0]: (row[1], row[2], row[3]) for row in cur.fetchall()}


def validate(event) -> dict | None:
    """The event with `ts` (a datetime) when every field has its type and range, else None."""
    if not isinstance(event, dict):
        return None
    duration = event.get('duration_ms')
    if (not isinstance(event.get('id'), int) or not isinstance(event.get('content_id'), str)
            or not isinstance(event.get('user_id'), str) or event.get('event_type') not in EVENT_TYPES
            or not (duration is None or (isinstance(duration, int) and duration >= 0))
            or not isinstance(event.get('event_ts'), str)):
        return None
    try:
        event['ts'] = datetime.fromisoformat(event['event_ts'])
    except ValueError:
        return None
    return event


def enrich(event: dict, catalogue: dict) -> dict | None:
    """Title, type, length and the engagement figures; None for a content the catalogue does not hold."""
    content = catalogue.get(event['content_id'])
    if content is None:
        return None
    title, content_type, length = content
    seconds = event['duration_ms'] / 1000 if event['duration_ms'] is not None else None
    event['content_title'], event['content_type'], event['length_seconds'] = title, content_type, length
    event['engagement_seconds'] = seconds
    event['engagement_percentage'] = round(seconds / length * 100, 2) if seconds is not None and length else None
    return event


def write_windows(client, rows) -> None:
    """rows: (window start in seconds, content id, events, engagement seconds), one pipeline round trip."""
    pipe = client.pipeline(transaction=False)
    for start, content_id, events, engagement in rows:
        pipe.hset(f'{PREFIX}:stats:{start}:{content_id}',
                  mapping={'events': events, 'engagement_seconds': round(engagement, 3)})
    pipe.execute()
