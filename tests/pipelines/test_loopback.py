"""The driver's gRPC servers bind wildcard addresses to loopback (pipelines/loopback.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.loopback import loopback_address


@pytest.mark.parametrize('asked, bound', [
    ('[::]:0', 'localhost:0'), ('0.0.0.0:8099', 'localhost:8099'), (':5', 'localhost:5'), ('*:7', 'localhost:7'),
    ('127.0.0.1:9', '127.0.0.1:9'), ('10.0.0.4:9', '10.0.0.4:9'), ('[::1]:3', '[::1]:3'),
    ('localhost:0', 'localhost:0'),
])
def test_only_wildcard_hosts_are_replaced(asked, bound):
    assert loopback_address(asked) == bound


PROBE = '''
import concurrent.futures, subprocess, grpc
from pipelines.loopback import bind_grpc_servers_to_loopback
bind_grpc_servers_to_loopback()
bind_grpc_servers_to_loopback()  # idempotent
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
address, server = BeamFnExternalWorkerPoolServicer.start()
port = address.rsplit(':', 1)[1]
out = subprocess.run(['ss', '-ltnH', f'sport = :{port}'], capture_output=True, text=True).stdout
print(address, sorted(line.split()[3] for line in out.splitlines()))
server.stop(0)
'''


def test_beams_loopback_worker_pool_listens_on_loopback_only():
    """The worker pool Beam starts for --environment_type=LOOPBACK asks for [::]:0."""
    out = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True, check=True).stdout
    address, bound = out.split(' ', 1)
    port = address.rsplit(':', 1)[1]
    assert address.startswith('localhost:')
    assert eval(bound) and set(eval(bound)) <= {f'[::1]:{port}', f'127.0.0.1:{port}', f'[::ffff:127.0.0.1]:{port}'}
