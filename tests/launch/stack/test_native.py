"""What `make install` builds to keep listeners on loopback (launch/stack/native.py): the Prism patch, the
LD_PRELOAD library, the job server's java launcher."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launch.stack import native


def test_the_prism_patch_binds_its_job_server_to_loopback(tmp_path):
    server = tmp_path / native.PRISM_SERVER_GO
    server.parent.mkdir(parents=True)
    server.write_text(f'func NewServer(port int) {{\n\tlis, err := {native.PRISM_LISTEN}\n}}\n')
    native.patch_prism_source(tmp_path)
    assert native.PRISM_LISTEN_LOOPBACK in server.read_text() and native.PRISM_LISTEN not in server.read_text()
    with pytest.raises(native.NativeBuildError, match='Beam version changed'):
        native.patch_prism_source(tmp_path)  # the line is gone (Beam changed it): the build stops


def _run(cmd, log, env=None):
    subprocess.run(cmd, check=True, env=env, stdout=open(log, 'ab'), stderr=subprocess.STDOUT)


PROBE = '''
import socket
v6 = socket.socket(socket.AF_INET6); v6.bind(('::', 0)); v6.listen()
v6only = socket.socket(socket.AF_INET6); v6only.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
v6only.bind(('::', 0)); v6only.listen()
v4 = socket.socket(); v4.bind(('0.0.0.0', 0)); v4.listen()
chosen = socket.socket(); chosen.bind(('127.0.0.2', 0))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(('0.0.0.0', 0))
print([s.getsockname()[0] for s in (v6, v6only, v4, chosen, udp)])
socket.create_connection(('127.0.0.1', v6.getsockname()[1])).close()
'''


def test_the_preloaded_library_binds_wildcard_stream_sockets_to_loopback(tmp_path):
    shim = tmp_path / 'loopback_bind.so'
    native.build_shim(shim, _run, tmp_path / 'cc.log')
    out = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, 'LD_PRELOAD': str(shim)}).stdout
    # dual-stack :: -> ::ffff:127.0.0.1 (still reached over 127.0.0.1), v6-only :: -> ::1, 0.0.0.0 -> 127.0.0.1;
    # an explicit address and a UDP socket as asked
    assert eval(out) == ['::ffff:127.0.0.1', '::1', '127.0.0.1', '127.0.0.2', '0.0.0.0']
    without = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True, check=True).stdout
    assert eval(without)[:3] == ['::', '::', '0.0.0.0']


def test_the_job_servers_java_preloads_the_library_and_dies_with_its_parent(tmp_path):
    script = native.flink_java_launcher_script(Path('/opt/x/loopback_bind.so'))
    assert script.startswith('#!/bin/sh\n')
    launcher = tmp_path / 'java'
    launcher.write_text(script.replace('"${JAVA_HOME:+$JAVA_HOME/bin/}java"', 'env'))
    launcher.chmod(0o755)
    env = subprocess.run([str(launcher)], capture_output=True, text=True, check=True,
                         env={**os.environ, 'LD_PRELOAD': ''}).stdout
    assert 'LD_PRELOAD=/opt/x/loopback_bind.so\n' in env
    assert 'setpriv --pdeathsig TERM --' in script
