"""Real records as they arrive on the local stack's topics (captured from Debezium 3.6.1 and
launch.scenarios.generate)."""
import json

EVENTS_TOPIC = 'engagement.public.engagement_events'
CONTENT_TOPIC = 'engagement.public.content'
RAW_TOPIC = 'engagement.raw_events'

CDC_EVENT_KEY = b'{"id":1}'
CDC_EVENT_VALUE = (
    b'{"before":null,"after":{"id":1,"content_id":"d068a28b-4955-2c13-9bfb-a2aa15ea55fc",'
    b'"user_id":"b9e9f0e5-0d4a-5be2-ba97-637d2f1f1fd7","event_type":"play","event_ts":"2026-11-24T12:10:12.509201Z",'
    b'"duration_ms":660295,"device":"web","raw_payload":"{\\"referrer\\": \\"push\\", \\"session_id\\": '
    b'\\"s-b84d86402e10\\", \\"app_version\\": \\"6.0.0-beta\\"}"},"source":{"version":"3.6.1.Final",'
    b'"connector":"postgresql","name":"engagement","ts_ms":1795522212516,"snapshot":"false","db":"engagement",'
    b'"sequence":"[null,\\"26621312\\"]","ts_us":1795522212516545,"ts_ns":1795522212516545000,"schema":"public",'
    b'"table":"engagement_events","txId":730,"lsn":26621312,"xmin":null,"origin":null,"origin_lsn":null},'
    b'"transaction":null,"op":"c","ts_ms":1795522213403,"ts_us":1795522213403486,"ts_ns":1795522213403486901}')

CONTENT_AFTER = {"id": "a51d444e-e690-fb8c-ac33-cf8ddd89c590", "slug": "content-12",
                 "title": "A Short History Of Privacy #12", "content_type": "podcast", "length_seconds": 1464,
                 "publish_ts": "2026-01-04T12:00:00.000000Z"}

DIRECT_EVENT = {"id": 1795522214408970001, "content_id": "a51d444e-e690-fb8c-ac33-cf8ddd89c590",
                "user_id": "b9e9f0e5-0d4a-5be2-ba97-637d2f1f1fd7", "event_type": "pause",
                "event_ts": "2026-11-24T12:10:14.536825+00:00", "duration_ms": 369895, "device": "web",
                "raw_payload": {"referrer": "home", "session_id": "s-0c2f1e9a7b31", "app_version": "5.3.0"}}


def cdc_value(op='c', **after_changes) -> bytes:
    """The sample CDC value with another operation and/or changed `after` fields (None removes `after`)."""
    envelope = json.loads(CDC_EVENT_VALUE)
    envelope['op'] = op
    if after_changes.pop('no_after', False):
        envelope['after'] = None
    else:
        envelope['after'].update(after_changes)
    return json.dumps(envelope).encode()


def content_envelope(op='r') -> bytes:
    return json.dumps({"before": None, "after": CONTENT_AFTER, "source": {"lsn": 100, "table": "content"},
                       "op": op, "ts_ms": 1795522213403}).encode()
