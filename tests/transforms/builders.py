"""Small builders for events and contents in transform tests (valid by default, override what matters)."""
import uuid
from datetime import datetime, timezone

from schemas import Content, EnrichedEvent, IngestedEvent

PODCAST = 'a51d444e-e690-fb8c-ac33-cf8ddd89c590'
VIDEO = 'd068a28b-4955-2c13-9bfb-a2aa15ea55fc'
USER = 'b9e9f0e5-0d4a-5be2-ba97-637d2f1f1fd7'


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def content(content_id=PODCAST, length_seconds=1464, content_type='podcast', title='A Short History Of Privacy #12'):
    return Content(id=content_id, slug=f'slug-{content_id[:8]}', title=title, content_type=content_type,
                   length_seconds=length_seconds, publish_ts=at(1767528000))


def ingested(id=1, content_id=PODCAST, event_type='play', ts=1795522212.5, duration_ms=60_000, offset=None,
             lsn=None, source='direct', watermark_ms=None):
    return IngestedEvent(id=id, content_id=content_id, user_id=USER, event_type=event_type, event_ts=at(ts),
                         duration_ms=duration_ms, device='web', raw_payload={'referrer': 'push'}, source=source,
                         source_topic='engagement.raw_events', source_partition=0,
                         source_offset=id if offset is None else offset, source_lsn=lsn, ingest_ts=at(ts + 0.1),
                         watermark_ms=watermark_ms)


def enriched(id=1, content_id=PODCAST, event_type='play', ts=10.0, duration_ms=1000, offset=None, lsn=None,
             title='A Short History Of Privacy #12', content_type='podcast', watermark_ms=None):
    """An enriched event; `watermark_ms` plays the Kafka reader's watermark stamp (None: unstamped)."""
    event = ingested(id=id, content_id=content_id, event_type=event_type, ts=ts, duration_ms=duration_ms,
                     offset=offset, lsn=lsn, source='direct' if lsn is None else 'cdc', watermark_ms=watermark_ms)
    return EnrichedEvent(**dict(event), content_title=title, content_type=content_type, length_seconds=1464)


def random_uuid() -> str:
    return str(uuid.uuid4())
