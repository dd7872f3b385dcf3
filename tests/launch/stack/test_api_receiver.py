"""The stack's component `api`: it starts the local API receiver with the secret from the environment (never on the
command line nor in its log), reports what the receiver holds in `status` and stops it."""
from __future__ import annotations

import json
import shutil
import socket

import pytest

from launch.stack import config as stack_config
from launch.stack.api_receiver import ApiReceiver
from tests.api_support import ReceiverProcess, batch, post_events
from tests.conftest import private_config

pytestmark = pytest.mark.integration


def test_the_stack_component_starts_reports_and_stops(monkeypatch):
    monkeypatch.setenv(stack_config.API_CLIENT_SECRET_ENV, 'component-test-secret')
    cfg = private_config()
    component = ApiReceiver(cfg)
    try:
        component.start()
        assert cfg.env()['ENGAGEMENT_API_URL'] == cfg.api_url
        with socket.create_connection(('127.0.0.1', cfg.api_port), timeout=2):
            pass
        r = ReceiverProcess.__new__(ReceiverProcess)
        r.url, r.secret = cfg.api_url, 'component-test-secret'
        post_events(r, batch(1, 2, 2), r.token())
        rows = {check: (ok, detail) for check, ok, detail in component.health()}
        assert rows['events received'] == (True, '2 accepted (unique keys), 1 duplicates, 1 requests, '
                                                 '0 injected failures')
        assert (cfg.state_dir / 'api' / 'receiver.sqlite').exists()
        assert component.stop() == 'stopped' and not component.running()
        log = cfg.log_file('api').read_text()
        assert 'component-test-secret' not in log
        events = [json.loads(line) for line in log.splitlines() if line.startswith('{')]
        assert any(e.get('secret_from') == 'env ENGAGEMENT_API_CLIENT_SECRET' for e in events)
    finally:
        component.stop()
        shutil.rmtree(cfg.state_dir, ignore_errors=True)
