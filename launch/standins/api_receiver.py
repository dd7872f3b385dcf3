"""The local receiving service of the pipeline's REST API sink: an OAuth2 token endpoint (client credentials), an
events endpoint that records idempotency keys durably (launch/standins/api_state.py), statistics, and fault
injection switched at run time; the endpoints and the faults: docs/operations.md#the-rest-api-receiver.

    python -m launch.standins.api_receiver --port 18090 --state-dir .state/api \
        [--client-id engagement-local] [--client-secret-env ENGAGEMENT_API_CLIENT_SECRET] [--token-ttl-seconds 300]

`python -m launch.stack up` starts it (component `api`). Standard library only (ThreadingHTTPServer, sqlite3);
binds to a loopback address only. The client secret comes from the environment variable named by
--client-secret-env (never from a flag, never logged); unset, the documented local default applies.
"""
from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import logging
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from launch.standins.api_state import FaultError, Receiver, Store, validate_faults
from pipelines import logs
from pipelines.local_stack import API_CLIENT_ID, API_CLIENT_SECRET_ENV, LOCAL_API_CLIENT_SECRET

_LOG = logging.getLogger('launch.standins.api_receiver')
MAX_BODY_BYTES = 32 * 1024 * 1024


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
    parser = argparse.ArgumentParser(prog='python -m launch.standins.api_receiver', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--host', default='127.0.0.1', help='loopback address to bind (default 127.0.0.1)')
    parser.add_argument('--port', type=int, default=18090, help='port (default 18090, ENGAGEMENT_API_PORT)')
    parser.add_argument('--state-dir', required=True, type=Path, help='directory of the sqlite key store')
    parser.add_argument('--client-id', default=API_CLIENT_ID, help=f'OAuth2 client id (default {API_CLIENT_ID})')
    parser.add_argument('--client-secret-env', default=API_CLIENT_SECRET_ENV,
                        help=f'environment variable holding the client secret (default {API_CLIENT_SECRET_ENV}; '
                             'unset: the documented local default)')
    parser.add_argument('--token-ttl-seconds', type=int, default=300, help='access token lifetime (default 300)')
    parser.add_argument('--max-batch', type=int, default=1000, help='largest batch accepted (default 1000)')
    args = parser.parse_args(argv)
    logs.configure('INFO')
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
