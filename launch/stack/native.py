"""The two native pieces `make install` builds so that nothing our commands start listens beyond 127.0.0.1
(docs/operations.md#loopback-only):

- Beam's Prism runner, built from the Beam Go module with one line changed: its job server (which also serves the
  Fn API to the SDK workers) listens on `:<job port>`, every interface, and has no flag for the address. The build
  makes it `127.0.0.1:<job port>`; everything else is Beam's source as published on the Go module proxy.
- `loopback_bind.so` (native/loopback_bind.c), an LD_PRELOAD library for the JVMs of Beam's Java job server, whose
  gRPC servers listen on every interface with no flag either: it binds wildcard stream sockets to loopback.

Python gRPC servers in the driver (the LOOPBACK worker pool) are bound by `pipelines.loopback` at run time.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIM_SOURCE = HERE / 'native' / 'loopback_bind.c'
PRISM_SERVER_GO = 'go/pkg/beam/runners/prism/internal/jobservices/server.go'
PRISM_LISTEN = 'net.Listen("tcp", fmt.Sprintf(":%d", port))'
PRISM_LISTEN_LOOPBACK = 'net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))'

Run = Callable[..., None]


class NativeBuildError(Exception):
    pass


def build_shim(target: Path, run: Run, log: Path) -> None:
    """Compile native/loopback_bind.c into `target` with the C compiler (`cc`)."""
    compiler = shutil.which('cc') or shutil.which('gcc')
    if compiler is None:
        raise NativeBuildError('a C compiler (cc) is needed to build loopback_bind.so; apt-get install gcc')
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix('.partial')
    run([compiler, '-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', '-o', str(partial), str(SHIM_SOURCE),
         '-ldl'], log)
    partial.rename(target)


def patch_prism_source(source: Path) -> None:
    """Bind Prism's job server to 127.0.0.1 in an unpacked Beam Go module; fails loudly if Beam moved the line."""
    server = source / PRISM_SERVER_GO
    text = server.read_text()
    if text.count(PRISM_LISTEN) != 1:
        raise NativeBuildError(f'{server}: expected one `{PRISM_LISTEN}` to bind to 127.0.0.1, found '
                               f'{text.count(PRISM_LISTEN)}; the Beam version changed, review the patch in '
                               f'{__file__}')
    server.write_text(text.replace(PRISM_LISTEN, PRISM_LISTEN_LOOPBACK))


def build_prism(module: str, binary: Path, build: Path, run: Run, log: Path, env: dict[str, str]) -> None:
    """Download Beam's Go module `module` (`path@version`) from the Go module proxy, patch it
    (patch_prism_source) and build `go/cmd/prism` into `binary`."""
    if not shutil.which('go'):
        raise NativeBuildError('Go is needed to build Beam\'s Prism runner; install Go 1.22+.')
    listing = subprocess.run(['go', 'mod', 'download', '-json', module], capture_output=True, text=True, env=env)
    if listing.returncode != 0:
        raise NativeBuildError(f'go mod download {module} failed: {(listing.stderr or listing.stdout).strip()}')
    source = build / 'prism-src'
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(json.loads(listing.stdout)['Dir'], source)
    for path in [source, *source.rglob('*')]:
        path.chmod(path.stat().st_mode | 0o200)
    patch_prism_source(source)
    binary.parent.mkdir(parents=True, exist_ok=True)
    run(['go', 'build', '-C', str(source), '-o', str(binary), './go/cmd/prism'], log, env=env)
    shutil.rmtree(source, ignore_errors=True)


def flink_java_launcher_script(shim: Path) -> str:
    """java for Beam's Flink job server: SIGTERM when the pipeline process that started it dies, and its wildcard
    listeners bound to 127.0.0.1 (loopback_bind.so)."""
    return f'''#!/bin/sh
# java for Beam's Flink job server, sent SIGTERM when the pipeline process that started it dies, its listeners on
# 127.0.0.1 only (written by `make install`; see launch/stack/native.py).
LD_PRELOAD="{shim}${{LD_PRELOAD:+:$LD_PRELOAD}}"
export LD_PRELOAD
exec setpriv --pdeathsig TERM -- "${{JAVA_HOME:+$JAVA_HOME/bin/}}java" "$@"
'''
