"""The state of the local REST API receiver (launch/standins/api_receiver.py), apart from HTTP: the idempotency keys
and counters in one sqlite file (durable across a kill of the receiver), and the credentials, tokens (in memory:
a restarted receiver answers old tokens with 401) and fault settings in force, with their seeded draws.
"""
from __future__ import annotations

import hmac
import json
import random
import secrets
import sqlite3
import threading
import time
from pathlib import Path

FAULT_DEFAULTS = {'error_rate': 0.0, 'status': 503, 'timeout_rate': 0.0, 'timeout_seconds': 5.0,
                  'rate_limit_rate': 0.0, 'retry_after': 1, 'lost_response_rate': 0.0, 'latency_ms': 0,
                  'down': False, 'seed': None}
_RATES = ('error_rate', 'timeout_rate', 'rate_limit_rate', 'lost_response_rate')
COUNTERS = ('requests', 'duplicates', 'rejected', 'token_requests', 'tokens_issued', 'unauthorized',
            'injected_down', 'injected_rate_limit', 'injected_error', 'injected_timeout', 'injected_lost_response')


class FaultError(ValueError):
    """A fault setting is out of range; the message names it."""


def validate_faults(body: object) -> dict:
    """The full fault settings from a (partial) request body; raises FaultError naming a bad key."""
    if not isinstance(body, dict):
        raise FaultError('expected a JSON object')
    unknown = sorted(set(body) - set(FAULT_DEFAULTS))
    if unknown:
        raise FaultError(f'unknown fault settings {unknown}; known: {sorted(FAULT_DEFAULTS)}')
    faults = {**FAULT_DEFAULTS, **body}
    for name in _RATES:
        value = faults[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise FaultError(f'{name}={value!r}: expected a number in 0..1')
    if sum(faults[name] for name in ('error_rate', 'timeout_rate', 'rate_limit_rate')) > 1:
        raise FaultError('error_rate + timeout_rate + rate_limit_rate must not exceed 1 (one draw decides)')
    if not isinstance(faults['status'], int) or not 500 <= faults['status'] <= 599:
        raise FaultError(f'status={faults["status"]!r}: expected a 5xx status code')
    for name, high in (('timeout_seconds', 600), ('retry_after', 3600), ('latency_ms', 600_000)):
        value = faults[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
            raise FaultError(f'{name}={value!r}: expected a number in 0..{high}')
    if not isinstance(faults['down'], bool):
        raise FaultError(f'down={faults["down"]!r}: expected true or false')
    if faults['seed'] is not None and not isinstance(faults['seed'], int):
        raise FaultError(f'seed={faults["seed"]!r}: expected a whole number or null')
    return faults


class Store:
    """Idempotency keys and counters in one sqlite file (WAL), shared by the request threads under a lock."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute('PRAGMA journal_mode=WAL')
        self._db.execute('PRAGMA synchronous=NORMAL')  # WAL + NORMAL: durable across a process kill
        self._db.execute('CREATE TABLE IF NOT EXISTS events (key TEXT PRIMARY KEY, received INTEGER NOT NULL, '
                         'first_seen REAL NOT NULL, request_id TEXT, event TEXT NOT NULL)')
        self._db.execute('CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)')
        self._db.execute('CREATE TABLE IF NOT EXISTS request_calls (request_id TEXT PRIMARY KEY, '
                         'calls INTEGER NOT NULL)')

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._bump(name, n)

    def _bump(self, name: str, n: int) -> None:
        self._db.execute('INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?',
                         (name, n, n))

    def request_call(self, request_id: str | None) -> None:
        """Count one call of the events endpoint (and one more call of `request_id`, when given)."""
        with self._lock:
            self._db.execute('BEGIN')
            self._bump('requests', 1)
            if request_id:
                self._db.execute('INSERT INTO request_calls VALUES (?, 1) '
                                 'ON CONFLICT(request_id) DO UPDATE SET calls = calls + 1', (request_id,))
            self._db.execute('COMMIT')

    def record(self, items: list, request_id: str | None) -> list[dict]:
        """Store every new key of a batch in one transaction; the per-item results in order."""
        results, now = [], time.time()
        with self._lock:
            self._db.execute('BEGIN')
            try:
                for item in items:
                    key = item.get('idempotency_key') if isinstance(item, dict) else None
                    if isinstance(key, int) and not isinstance(key, bool):
                        key = str(key)
                    if not isinstance(key, str) or not key.strip() or len(key) > 255:
                        results.append({'idempotency_key': key if isinstance(key, str) else None,
                                        'status': 'rejected', 'error': 'idempotency_key: expected a non-empty '
                                                                       'string of at most 255 characters'})
                        continue
                    if not isinstance(item.get('event'), dict):
                        results.append({'idempotency_key': key, 'status': 'rejected',
                                        'error': 'event: expected a JSON object'})
                        continue
                    inserted = self._db.execute(
                        'INSERT INTO events VALUES (?, 1, ?, ?, ?) ON CONFLICT(key) DO NOTHING',
                        (key, now, request_id, json.dumps(item['event'], separators=(',', ':')))).rowcount
                    if inserted:
                        results.append({'idempotency_key': key, 'status': 'accepted'})
                    else:
                        self._db.execute('UPDATE events SET received = received + 1 WHERE key = ?', (key,))
                        results.append({'idempotency_key': key, 'status': 'duplicate'})
                duplicates = sum(r['status'] == 'duplicate' for r in results)
                rejected = sum(r['status'] == 'rejected' for r in results)
                if duplicates:
                    self._bump('duplicates', duplicates)
                if rejected:
                    self._bump('rejected', rejected)
                self._db.execute('COMMIT')
            except BaseException:
                self._db.execute('ROLLBACK')
                raise
        return results

    def stats(self) -> dict:
        with self._lock:
            counters = dict.fromkeys(COUNTERS, 0)
            counters.update(self._db.execute('SELECT name, value FROM counters').fetchall())
            accepted = self._db.execute('SELECT count(*) FROM events').fetchone()[0]
            max_calls = self._db.execute('SELECT coalesce(max(calls), 0) FROM request_calls').fetchone()[0]
            per_calls = self._db.execute('SELECT calls, count(*) FROM request_calls GROUP BY calls '
                                         'ORDER BY calls').fetchall()
        injected = {name.removeprefix('injected_'): counters.pop(name) for name in list(counters)
                    if name.startswith('injected_')}
        injected['total'] = sum(injected.values())
        return {'accepted_events': accepted, **counters, 'injected': injected, 'max_calls_per_request': max_calls,
                'calls_per_request': {str(calls): n for calls, n in per_calls}}

    def keys(self, only: list[str] | None = None) -> dict[str, int]:
        """Every stored key with how often it was received; with `only`, just those of them that are stored."""
        with self._lock:
            if only is None:
                rows = self._db.execute('SELECT key, received FROM events ORDER BY first_seen, key').fetchall()
            else:
                rows = []
                for start in range(0, len(only), 500):  # sqlite's limit on bound parameters
                    chunk = only[start:start + 500]
                    rows += self._db.execute(f'SELECT key, received FROM events WHERE key IN '
                                             f'({",".join("?" * len(chunk))}) ORDER BY first_seen, key',
                                             chunk).fetchall()
        return dict(rows)

    def reset(self) -> None:
        with self._lock:
            self._db.execute('BEGIN')
            for table in ('events', 'counters', 'request_calls'):
                self._db.execute(f'DELETE FROM {table}')
            self._db.execute('COMMIT')

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Receiver:
    """State shared by the request handlers: credentials, tokens, faults, the store."""

    def __init__(self, store: Store, client_id: str, client_secret: str, token_ttl_seconds: int, max_batch: int):
        self.store = store
        self.client_id = client_id
        self._secret = client_secret
        self.token_ttl = token_ttl_seconds
        self.max_batch = max_batch
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._lock = threading.Lock()
        self.faults = dict(FAULT_DEFAULTS)
        self._rng = random.Random()

    def credentials_ok(self, client_id: str | None, client_secret: str | None) -> bool:
        return (client_id is not None and client_secret is not None
                and hmac.compare_digest(client_id.encode(), self.client_id.encode())
                and hmac.compare_digest(client_secret.encode(), self._secret.encode()))

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.token_ttl
        return token

    def token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and expiry > time.monotonic()

    def revoke_tokens(self) -> int:
        with self._lock:
            revoked, self._tokens = len(self._tokens), {}
        return revoked

    def set_faults(self, faults: dict) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults['seed'])

    def draw(self) -> tuple[dict, str | None, bool]:
        """The faults in force, the injected outcome of this request (None, 'rate_limit', 'error' or 'timeout')
        and whether its response is to be lost after recording."""
        with self._lock:
            faults, r, lost = self.faults, self._rng.random(), self._rng.random()
        outcome, edge = None, 0.0
        for name, rate in (('rate_limit', faults['rate_limit_rate']), ('error', faults['error_rate']),
                           ('timeout', faults['timeout_rate'])):
            edge += rate
            if r < edge:
                outcome = name
                break
        return faults, outcome, outcome is None and lost < faults['lost_response_rate']
