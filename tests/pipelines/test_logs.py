"""Log lines are JSON objects: our JSON events become fields with `event` as the message, other records keep their
text, exceptions come with their traceback, and configured secrets are masked whoever logged them."""
from __future__ import annotations

import io
import json
import logging

from pipelines import logs


def logged(*calls, secrets=(), exc=False) -> list[dict]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter(list(secrets)))
    logger = logging.getLogger('test.logs')
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for level, message in calls:
        logger.log(level, message)
    if exc:
        try:
            raise ValueError('boom')
        except ValueError:
            logger.exception('failed')
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_an_event_becomes_fields_with_its_name_as_the_message():
    [line] = logged((logging.WARNING, json.dumps({'event': 'api_retry', 'request_id': 'r1', 'first_event_id': 42,
                                                  'level': 'not-overwritten'})))
    assert line['message'] == 'api_retry' and line['request_id'] == 'r1' and line['first_event_id'] == 42
    assert line['level'] == 'WARNING' and line['logger'] == 'test.logs' and line['time'].endswith('Z')


def test_plain_records_keep_their_text_and_exceptions_their_traceback():
    plain, failed = logged((logging.INFO, 'Discarding unparseable args {not json'), exc=True)
    assert plain['message'] == 'Discarding unparseable args {not json'
    assert failed['message'] == 'failed' and 'ValueError: boom' in failed['exception']


def test_secrets_are_masked_in_every_line():
    lines = logged((logging.INFO, 'connecting with password hunter2-secret'),
                   (logging.INFO, json.dumps({'event': 'x', 'url': 'redis://:hunter2-secret@h/0'})),
                   secrets=['hunter2-secret'])
    assert all('hunter2' not in json.dumps(line) for line in lines)
    assert lines[0]['message'] == 'connecting with password ***'


def test_the_secrets_come_from_the_environment():
    environ = {'ENGAGEMENT_API_CLIENT_SECRET': 'api-secret-1', 'KAFKA_SASL_PASSWORD': 'sasl-pass',
               'ENGAGEMENT_QUERY_API_KEYS': 'web:key-of-web-123456,ops:key-of-ops-123456', 'PGPASSWORD': ''}
    assert sorted(logs.known_secrets(environ)) == ['api-secret-1', 'key-of-ops-123456', 'key-of-web-123456',
                                                   'sasl-pass']
