"""One JSON object per log line, for the pipeline and the services beside it.

    {"time": "2026-12-03T14:30:00.123Z", "level": "WARNING", "logger": "connectors.http_api.client",
     "message": "api_retry", "request_id": "...", "first_event_id": 42, "attempt": 1, ...}

Our modules log an event as a JSON object (`_LOG.warning(json.dumps({'event': 'api_retry', ...}))`): its fields,
the correlation ids among them (event id, source topic/partition/offset, pane key, API request id), become fields of
the line and `event` its message. Any other record (Beam's, a library's) keeps its text as the message. Secrets the
process knows of (the values of `SECRET_VARIABLES`) are replaced by `***` in every line, whatever logged them.

Written here rather than taken from python-json-logger: that library emits `extra=` fields, while our log calls
carry their fields inside the message, and the secret scrubbing has to see the finished line anyway.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import sys

from connectors import credentials

SECRET_VARIABLES = ('ENGAGEMENT_API_CLIENT_SECRET', 'KAFKA_SASL_PASSWORD', 'PGPASSWORD', 'REDIS_PASSWORD',
                    'ENGAGEMENT_QUERY_API_KEYS')


def known_secrets(environ=None) -> list[str]:
    """The secret values this process was given, longest first (so a secret inside another is replaced whole)."""
    environ = os.environ if environ is None else environ
    values: set[str] = set()
    for name in SECRET_VARIABLES:
        try:
            value = credentials.secret(name, environ) or ''  # the variable, or the file its *_FILE variable names
        except ValueError:
            value = ''
        # ENGAGEMENT_QUERY_API_KEYS is client:key,client:key: the keys are the secrets
        parts = [p.partition(':')[2] for p in value.split(',')] if name == 'ENGAGEMENT_QUERY_API_KEYS' else [value]
        values.update(p.strip() for p in parts if len(p.strip()) >= 6)
    return sorted(values, key=len, reverse=True)


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self._secrets = known_secrets() if secrets is None else secrets

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        entry: dict = {'time': when.strftime('%Y-%m-%dT%H:%M:%S.') + f'{when.microsecond // 1000:03d}Z',
                       'level': record.levelname, 'logger': record.name}
        message = record.getMessage()
        fields = None
        if message.startswith('{'):
            try:
                fields = json.loads(message)
            except ValueError:
                fields = None
        if isinstance(fields, dict):
            entry['message'] = str(fields.pop('event', ''))
            entry.update({k: v for k, v in fields.items() if k not in entry})
        else:
            entry['message'] = message
        if record.exc_info:
            entry['exception'] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str, ensure_ascii=False)
        for secret in self._secrets:
            line = line.replace(secret, '***').replace(json.dumps(secret, ensure_ascii=False)[1:-1], '***')
        return line


def configure(level: str | int = 'INFO', stream=None) -> None:
    """Send every logger's records to `stream` (stderr) as JSON lines, at `level`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
