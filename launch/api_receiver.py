"""The local receiving service of the pipeline's REST API sink: an OAuth2 token endpoint, an events endpoint that
records idempotency keys durably, statistics, and fault injection switched at run time.

    python -m launch.api_receiver --port 18090 --state-dir .state/api \
        [--client-id engagement-local] [--client-secret-env ENGAGEMENT_API_CLIENT_SECRET] [--token-ttl-seconds 300]

`launch.stack up` starts it (component `api`, port ENGAGEMENT_API_PORT, default 18090). Standard library only
(ThreadingHTTPServer, sqlite3); binds to a loopback address only.

Endpoints
  POST /oauth/token        OAuth2 client credentials: form body grant_type=client_credentials with client_id and
                           client_secret, or the credentials as HTTP Basic. -> {access_token, token_type: "Bearer",
                           expires_in}. Tokens live in memory: a restarted receiver answers old tokens with 401.
  POST /v1/events          `Authorization: Bearer <token>`; body: a JSON list of
                               {"idempotency_key": "<event id>", "event": {...}}
                           The key travels with each event in the body (one HTTP header cannot carry one key per event
                           of a batch). The optional `X-Request-Id` header names the logical request, the same on each
                           of its retries: the receiver counts calls per request id (stats `max_calls_per_request`).
                           -> 200 {"accepted": n, "duplicates": n, "rejected": n, "results": [{"idempotency_key",
                           "status": "accepted"|"duplicate"|"rejected", "error"?}, ...]} in the order sent. A key seen
                           before (in any earlier request, or earlier in the same batch) is answered "duplicate" and
                           not stored again; an item without a key or without an object event is "rejected".
                           400: not a JSON list; 413: more than --max-batch items; 401: missing/invalid/expired token.
  GET  /health             {"status": "ok", "faults": {...}}
  GET  /v1/stats           accepted_events (unique keys stored), duplicates, rejected, requests (calls of
                           /v1/events, any outcome), token_requests,
                           tokens_issued, unauthorized, injected (per kind and total), max_calls_per_request,
                           calls_per_request ({"<calls>": <requests>}: how many request ids made 1, 2, ... calls)
  GET  /v1/events/keys     {"count": n, "keys": {"<key>": <times received>}} (received = accepted once + duplicates);
                           `?key=K&key=L...` answers only those keys it holds (a cheap lookup for latency probes)
  GET  /admin/faults       the fault settings in force
  POST /admin/faults       replace them (keys left out go back to "no fault"; {} clears all):
                           {"error_rate": 0.5, "status": 503, "timeout_rate": 0.1, "timeout_seconds": 5,
                            "rate_limit_rate": 0.1, "retry_after": 1, "lost_response_rate": 0, "latency_ms": 200,
                            "down": false, "seed": null}
  POST /admin/revoke-tokens  forget every issued token (the next call with one gets 401)
  POST /admin/reset        delete every stored key and zero the statistics

Faults apply to /v1/events (and `down` also to /oauth/token); /health, /v1/stats and /admin always answer so that
a test can switch faults off again. Per request, in this order: `down` drops the connection without an answer;
`latency_ms` delays the request; then one draw decides rate limiting (429 + Retry-After), an error (`status`,
default 503) or a timeout (the request is held `timeout_seconds`, then answered 504). All of these are decided
BEFORE anything is recorded: a 429/5xx/504 stored nothing. `lost_response_rate` is the one exception, on purpose:
the batch IS recorded and then the connection is dropped without an answer, the case only idempotency keys make
safe (the client's retry is answered "duplicate"). `seed` makes the draws reproducible.

The client secret comes from the environment variable named by --client-secret-env (never from a flag, never
logged); unset, the documented local default of launch.config applies. Logs: one JSON line per event of interest.
"""
from __future__ import annotations

import argparse
import base64
import hmac
import ipaddress
import json
import logging
import os
import random
import secrets
import signal
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from launch.config import API_CLIENT_ID, API_CLIENT_SECRET_ENV, LOCAL_API_CLIENT_SECRET

_LOG = logging.getLogger('launch.api_receiver')

FAULT_DEFAULTS = {'error_rate': 0.0, 'status': 503, 'timeout_rate': 0.0, 'timeout_seconds': 5.0,
                  'rate_limit_rate': 0.0, 'retry_after': 1, 'lost_response_rate': 0.0, 'latency_ms': 0,
                  'down': False, 'seed': None}
_RATES = ('error_rate', 'timeout_rate', 'rate_limit_rate', 'lost_response_rate')
COUNTERS = ('requests', 'duplicates', 'rejected', 'token_requests', 'tokens_issued', 'unauthorized',
            'injected_down', 'injected_rate_limit', 'injected_error', 'injected_timeout', 'injected_lost_response')
MAX_BODY_BYTES = 32 * 1024 * 1024


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


def _log(event: str, **fields) -> None:
    _LOG.info(json.dumps({'event': event, **fields}, separators=(',', ':')))


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'  # keep-alive: the sink uses a pooled session
    server_version = 'engagement-api-receiver/1'
    receiver: Receiver  # set on the subclass made by make_server

    def log_message(self, format, *args):  # the default writes every request to stderr; we log what matters
        pass

    # --- plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get('Content-Length') or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError(f'body larger than {MAX_BODY_BYTES} bytes')
        return self.rfile.read(length) if length else b''

    def _send(self, status: int, body: object, headers: dict | None = None) -> None:
        data = json.dumps(body, separators=(',', ':')).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing to do

    def _drop(self) -> None:
        """End the connection without an answer (a crashed server, a lost response)."""
        self.close_connection = True

    def _json_body(self):
        raw = self._body()
        try:
            return json.loads(raw or b'null')
        except (ValueError, UnicodeDecodeError):
            return ValueError

    # --- routing
    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path
        store = self.receiver.store
        if path == '/health':
            self._send(200, {'status': 'ok', 'faults': self.receiver.faults})
        elif path == '/v1/stats':
            self._send(200, {**store.stats(), 'faults': self.receiver.faults})
        elif path == '/v1/events/keys':
            params = parse_qsl(url.query, keep_blank_values=True)
            keys = store.keys([v for n, v in params if n == 'key'] if any(n == 'key' for n, _ in params) else None)
            self._send(200, {'count': len(keys), 'keys': keys})
        elif path == '/admin/faults':
            self._send(200, self.receiver.faults)
        else:
            self._send(404, {'error': 'not_found', 'path': path})

    def do_POST(self):
        path = urlsplit(self.path).path
        try:
            if path == '/oauth/token':
                self._token()
            elif path == '/v1/events':
                self._events()
            elif path == '/admin/faults':
                self._set_faults()
            elif path == '/admin/revoke-tokens':
                self._body()
                revoked = self.receiver.revoke_tokens()
                _log('tokens_revoked', count=revoked)
                self._send(200, {'revoked': revoked})
            elif path == '/admin/reset':
                self._body()
                self.receiver.store.reset()
                _log('reset')
                self._send(200, {'reset': True})
            else:
                self._body()
                self._send(404, {'error': 'not_found', 'path': path})
        except ValueError as exc:
            self._send(400, {'error': 'invalid_request', 'error_description': str(exc)})

    def _token(self):
        raw = self._body()
        receiver = self.receiver
        if receiver.faults['down']:
            receiver.store.count('injected_down')
            return self._drop()
        receiver.store.count('token_requests')
        form = dict(parse_qsl(raw.decode('utf-8', errors='replace')))
        if form.get('grant_type') != 'client_credentials':
            return self._send(400, {'error': 'unsupported_grant_type'})
        client_id, client_secret = form.get('client_id'), form.get('client_secret')
        auth = self.headers.get('Authorization', '')
        if auth.startswith('Basic '):
            try:
                client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(':')
            except (ValueError, UnicodeDecodeError):
                client_id = client_secret = None
        if not receiver.credentials_ok(client_id, client_secret):
            _log('token_refused', client_id=client_id)
            return self._send(401, {'error': 'invalid_client'}, {'WWW-Authenticate': 'Basic realm="token"'})
        token = receiver.issue_token()
        receiver.store.count('tokens_issued')
        _log('token_issued', client_id=client_id, expires_in=receiver.token_ttl)
        self._send(200, {'access_token': token, 'token_type': 'Bearer', 'expires_in': receiver.token_ttl},
                   {'Cache-Control': 'no-store'})

    def _events(self):
        receiver, store = self.receiver, self.receiver.store
        body = self._json_body()
        request_id = self.headers.get('X-Request-Id')
        store.request_call(request_id)
        faults, outcome, lose_response = receiver.draw()
        if faults['down']:
            store.count('injected_down')
            return self._drop()
        if faults['latency_ms']:
            time.sleep(faults['latency_ms'] / 1000)
        auth = self.headers.get('Authorization', '')
        if not (auth.startswith('Bearer ') and receiver.token_valid(auth[7:].strip())):
            store.count('unauthorized')
            return self._send(401, {'error': 'invalid_token'},
                              {'WWW-Authenticate': 'Bearer error="invalid_token"'})
        if outcome == 'rate_limit':
            store.count('injected_rate_limit')
            return self._send(429, {'error': 'rate_limited'}, {'Retry-After': str(faults['retry_after'])})
        if outcome == 'error':
            store.count('injected_error')
            return self._send(faults['status'], {'error': 'injected_failure'})
        if outcome == 'timeout':
            store.count('injected_timeout')
            time.sleep(faults['timeout_seconds'])
            return self._send(504, {'error': 'injected_timeout'})
        if body is ValueError or not isinstance(body, list):
            return self._send(400, {'error': 'invalid_request',
                                    'error_description': 'expected a JSON list of {"idempotency_key", "event"}'})
        if len(body) > receiver.max_batch:
            return self._send(413, {'error': 'batch_too_large', 'max_batch': receiver.max_batch})
        results = store.record(body, request_id)
        counts = {label: sum(r['status'] == status for r in results)
                  for label, status in (('accepted', 'accepted'), ('duplicates', 'duplicate'),
                                        ('rejected', 'rejected'))}
        _log('events_received', request_id=request_id, events=len(body), **counts)
        if lose_response:
            store.count('injected_lost_response')
            return self._drop()
        self._send(200, {**counts, 'results': results})

    def _set_faults(self):
        body = self._json_body()
        try:
            faults = validate_faults(body)
        except FaultError as exc:
            return self._send(400, {'error': 'invalid_faults', 'error_description': str(exc)})
        self.receiver.set_faults(faults)
        _log('faults_set', **faults)
        self._send(200, faults)


def make_server(host: str, port: int, receiver: Receiver) -> ThreadingHTTPServer:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f'--host {host}: the receiver binds to a loopback address only (127.0.0.1)')
    handler = type('BoundHandler', (Handler,), {'receiver': receiver})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.api_receiver', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--host', default='127.0.0.1', help='loopback address to bind (default 127.0.0.1)')
    parser.add_argument('--port', type=int, default=18090, help='port (default 18090, ENGAGEMENT_API_PORT)')
    parser.add_argument('--state-dir', required=True, type=Path, help='directory of the sqlite key store')
    parser.add_argument('--client-id', default=API_CLIENT_ID, help=f'OAuth2 client id (default {API_CLIENT_ID})')
    parser.add_argument('--client-secret-env', default=API_CLIENT_SECRET_ENV,
                        help=f'environment variable holding the client secret (default {API_CLIENT_SECRET_ENV}; '
                             'unset: the local default of launch.config)')
    parser.add_argument('--token-ttl-seconds', type=int, default=300, help='access token lifetime (default 300)')
    parser.add_argument('--max-batch', type=int, default=1000, help='largest batch accepted (default 1000)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s %(message)s')
    if not 1 <= args.token_ttl_seconds <= 86400:
        parser.error('--token-ttl-seconds: expected 1..86400')
    if not 1 <= args.max_batch <= 100_000:
        parser.error('--max-batch: expected 1..100000')
    secret = os.environ.get(args.client_secret_env) or LOCAL_API_CLIENT_SECRET
    store = Store(args.state_dir / 'receiver.sqlite')
    try:
        server = make_server(args.host, args.port, Receiver(store, args.client_id, secret,
                                                            args.token_ttl_seconds, args.max_batch))
    except (ValueError, OSError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _log('listening', url=f'http://{args.host}:{args.port}', client_id=args.client_id,
         secret_from='env ' + args.client_secret_env if os.environ.get(args.client_secret_env) else 'local default',
         token_ttl_seconds=args.token_ttl_seconds, state=str(args.state_dir))
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        store.close()
        _log('stopped')
    return 0


if __name__ == '__main__':
    sys.exit(main())
