"""Build Prism for the image as `make install` does (Beam's Go module from the proxy, patched to bind 127.0.0.1,
launch/stack/native.py) and pack it where Beam's DirectRunner looks:
`<out>/apache_beam-v<version>-prism-linux-amd64.zip`.

    python3 deploy/build_prism.py <beam version> <out dir>

Run by deploy/Dockerfile's first stage (Go + Python, no project dependencies).
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'launch' / 'stack'))
import native  # noqa: E402  (stdlib only; imported by path so that no project dependency is needed here)


def run(argv, log, env=None):
    with open(log, 'ab') as out:
        subprocess.run(argv, check=True, stdout=out, stderr=subprocess.STDOUT, env=env)


def main() -> None:
    version, out = sys.argv[1], Path(sys.argv[2])
    build = Path('/tmp/prism-build')
    build.mkdir(parents=True, exist_ok=True)
    binary = build / 'prism'
    native.build_prism(f'github.com/apache/beam/sdks/v2@v{version}', binary, build, run, build / 'build.log',
                       dict(os.environ))
    member = f'apache_beam-v{version}-prism-linux-amd64'
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out / f'{member}.zip', 'w', zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(member)
        info.external_attr = 0o755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, binary.read_bytes())


if __name__ == '__main__':
    main()
