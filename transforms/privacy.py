"""Pseudonymous user ids: the user id replaced by a keyed hash before the event leaves for BigQuery and the REST API
(`--pseudonymize_user_ids`).

    pseudonym(user_id, key) = the first 16 bytes of HMAC-SHA256(key, user_id), written as a UUID

so the column keeps its type and every table and system that joins on it still can; the same user always gets the
same pseudonym under one key, and without the key it cannot be turned back or recomputed from a guessed id (a plain
hash could: user ids are few enough to enumerate). The key comes from the environment of the process that applies
it (`ENGAGEMENT_PSEUDONYM_KEY`, or a file named by `ENGAGEMENT_PSEUDONYM_KEY_FILE`), never from a flag or the
pipeline's graph: on a cluster or Dataflow it must be in the workers' environment (a secret). It is read in the
worker's `setup()`; a worker without it fails its setup with a message naming the variables, never the value.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import uuid

import apache_beam as beam

from schemas.trusted import trusted

KEY_ENV = 'ENGAGEMENT_PSEUDONYM_KEY'
KEY_FILE_ENV = 'ENGAGEMENT_PSEUDONYM_KEY_FILE'
MIN_KEY_BYTES = 16


class MissingPseudonymKey(RuntimeError):
    """The pseudonymisation key is not in this process' environment, or too short."""


def pseudonym_key() -> bytes:
    """The key from $ENGAGEMENT_PSEUDONYM_KEY, else the file $ENGAGEMENT_PSEUDONYM_KEY_FILE names."""
    key = os.environ.get(KEY_ENV, '').encode()
    if not key and os.environ.get(KEY_FILE_ENV):
        try:
            with open(os.environ[KEY_FILE_ENV], 'rb') as f:
                key = f.read().strip()
        except OSError as exc:
            raise MissingPseudonymKey(f'{KEY_FILE_ENV} names a file that cannot be read ({exc.strerror})') from None
    if not key:
        raise MissingPseudonymKey(f'--pseudonymize_user_ids needs a key: set {KEY_ENV}, or {KEY_FILE_ENV} to a file '
                                  'holding it, in the environment of the pipeline and of its workers')
    if len(key) < MIN_KEY_BYTES:
        raise MissingPseudonymKey(f'the pseudonymisation key ({KEY_ENV} or {KEY_FILE_ENV}) must be at least '
                                  f'{MIN_KEY_BYTES} bytes')
    return key


def pseudonym(user_id: str, key: bytes) -> str:
    """The pseudonym of `user_id` (a canonical UUID string) under `key`, itself a canonical UUID string."""
    return str(uuid.UUID(bytes=hmac.new(key, user_id.encode(), hashlib.sha256).digest()[:16]))


class PseudonymizeFn(beam.DoFn):
    def setup(self):
        self._key = pseudonym_key()

    def process(self, event):
        yield trusted(type(event), {**event.__dict__, 'user_id': pseudonym(event.user_id, self._key)})


class Pseudonymize(beam.PTransform):
    """PCollection of events (any model with `user_id`) -> the same events with the user id's pseudonym."""

    def expand(self, events):
        return events | 'HashUserIds' >> beam.ParDo(PseudonymizeFn())
