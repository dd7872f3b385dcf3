"""A real `launch.standins.api_receiver` process on a free port with a private state directory, for the API tests."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from launch.stack import config as stack_config
from launch.stack.processes import stop_tree
from tests.conftest import free_ports

REPO = Path(__file__).resolve().parents[1]


RECEIVER_SECRET = 'receiver-test-secret-7f3a'  # the client secret of the receivers the `receiver` fixture starts


class ReceiverProcess:
    """Start with `start()` (or as a context manager); `stop()` stops exactly the process it started."""

    def __init__(self, token_ttl_seconds: int = 300, secret: str = stack_config.LOCAL_API_CLIENT_SECRET,
                 extra_args: tuple[str, ...] = ()):
        self.port = free_ports(1)[0]
        self.url = f'http://127.0.0.1:{self.port}'
        self.state_dir = Path(tempfile.mkdtemp(prefix='engagement-api-test-'))
        self.secret = secret
        self.token_ttl_seconds = token_ttl_seconds
        self.extra_args = extra_args
        self.log_file = self.state_dir / 'receiver.log'
        self.proc: subprocess.Popen | None = None

    def start(self) -> 'ReceiverProcess':
        env = {**os.environ, 'PYTHONPATH': str(REPO), 'ENGAGEMENT_TEST_API_SECRET': self.secret}
        with open(self.log_file, 'ab') as log:
            self.proc = subprocess.Popen(
                [sys.executable, '-m', 'launch.standins.api_receiver', '--port', str(self.port), '--state-dir',
                 str(self.state_dir), '--client-secret-env', 'ENGAGEMENT_TEST_API_SECRET',
                 '--token-ttl-seconds', str(self.token_ttl_seconds), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f'receiver exited: {self.log_file.read_text()}')
            try:
                if self.get('/health')['status'] == 'ok':
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError('receiver did not answer /health within 20 s')

    def stop(self) -> None:
        if self.proc is not None:
            stop_tree(self.proc, timeout=5)
            self.proc = None

    def __enter__(self) -> 'ReceiverProcess':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # --- HTTP helpers (stdlib, so that the receiver is checked with a client other than the sink's)
    def call(self, method: str, path: str, body: object = None, headers: dict | None = None,
             raw: bytes | None = None, timeout: float = 10) -> tuple[int, dict, object]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), json.loads(resp.read() or b'null')
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), json.loads(err.read() or b'null')

    def get(self, path: str) -> object:
        return self.call('GET', path)[2]

    def stats(self) -> dict:
        return self.get('/v1/stats')

    def keys(self) -> dict[str, int]:
        return self.get('/v1/events/keys')['keys']

    def set_faults(self, **faults) -> dict:
        status, _, body = self.call('POST', '/admin/faults', faults)
        assert status == 200, body
        return body

    def token(self) -> str:
        form = f'grant_type=client_credentials&client_id={stack_config.API_CLIENT_ID}&client_secret={self.secret}'
        status, _, body = self.call('POST', '/oauth/token', raw=form.encode(),
                                    headers={'Content-Type': 'application/x-www-form-urlencoded'})
        assert status == 200, body
        return body['access_token']


def batch(*ids, key_type=str) -> list[dict]:
    """An events request body: one item per id, the id as idempotency key."""
    return [{'idempotency_key': key_type(i), 'event': {'id': i}} for i in ids]


def post_events(receiver: ReceiverProcess, body, token: str, request_id: str | None = None):
    headers = {'Authorization': f'Bearer {token}', 'Content-Type': 'application/json'}
    if request_id:
        headers['X-Request-Id'] = request_id
    return receiver.call('POST', '/v1/events', body, headers=headers)
