"""The stack's component `api`: the local REST API receiver (launch/standins/api_receiver.py), started as a child
process of the stack's Python with the client secret in its environment (never on its command line).
"""
from __future__ import annotations

import os
import sys
import urllib.error

from launch.stack import config as stack_config
from launch.stack.component import Component, http_json, wait_ready


class ApiReceiver(Component):
    """The local REST API receiver (launch/standins/api_receiver.py): the target of the pipeline's API sink."""
    name = 'api'
    port_settings = ('api_port',)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, 'PYTHONPATH': str(stack_config.REPO_ROOT),
               stack_config.API_CLIENT_SECRET_ENV: self.cfg.api_client_secret}
        self.proc.spawn([sys.executable, '-m', 'launch.standins.api_receiver', '--host', '127.0.0.1',
                         '--port', str(self.cfg.api_port), '--state-dir', str(self.dir),
                         '--client-id', stack_config.API_CLIENT_ID,
                         '--client-secret-env', stack_config.API_CLIENT_SECRET_ENV], env=env)
        wait_ready('GET /health', self.proc,
                   lambda: http_json(f'{self.cfg.api_url}/health', timeout=1)['status'] == 'ok')

    def health(self):
        rows = super().health()
        if rows[0][1]:
            try:
                stats = http_json(f'{self.cfg.api_url}/v1/stats', timeout=2)
                injected = stats['injected']['total']
                rows.append(('events received', True, f"{stats['accepted_events']} accepted (unique keys), "
                                                      f"{stats['duplicates']} duplicates, {stats['requests']} "
                                                      f"requests, {injected} injected failures"))
            except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                rows.append(('events received', False, f'{type(exc).__name__}: {exc}'))
        return rows
