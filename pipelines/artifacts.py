"""Where `make install` puts what the local runners start: the Flink job server, its embedded Flink's settings
and java launcher, and the cross-language Kafka reader's expansion service, all under `$ENGAGEMENT_HOME`.

The pipeline looks them up here (shipped code), `launch.stack.install` writes them here: one definition of each path.
Standard library only, since `launch.stack.install` runs before the virtualenv exists.
"""
from __future__ import annotations

import os
from pathlib import Path


def engagement_home(environ: dict[str, str] | None = None) -> Path:
    """$ENGAGEMENT_HOME, else `$XDG_CACHE_HOME/engagement`, else `~/.cache/engagement`."""
    env = os.environ if environ is None else environ
    if env.get('ENGAGEMENT_HOME'):
        return Path(env['ENGAGEMENT_HOME']).expanduser()
    return Path(env.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'engagement'


def flink_job_server_jar(home: Path) -> Path:
    """The launcher jar `--flink_job_server_jar` points at; its manifest puts `lib/*.jar` on the class path."""
    return home / 'flink-job-server' / 'beam-flink-job-server.jar'


def flink_conf_dir(home: Path) -> Path:
    """`--flink_conf_dir` of an embedded Flink (`--flink_master=[local]`)."""
    return home / 'flink-job-server' / 'conf'


def flink_java_launcher(home: Path) -> Path:
    """Beam's `--job_server_java_launcher` for our pipelines: java, bound to the process that starts it."""
    return home / 'flink-job-server' / 'java-bound-to-parent'


def loopback_shim(home: Path) -> Path:
    """The LD_PRELOAD library that binds a JVM's wildcard listeners to 127.0.0.1 (launch/stack/native.py)."""
    return home / 'native' / 'loopback_bind.so'


def kafka_expansion_service_jar(home: Path) -> Path:
    """The launcher jar of the cross-language Kafka reader's expansion service (`java -jar <it> <port>`)."""
    return home / 'kafka-expansion-service' / 'beam-kafka-expansion-service.jar'


def prism_cache_zip(beam_version: str) -> Path:
    """Where Beam's PrismRunner looks before it tries to download (apache_beam/runners/portability/prism_runner.py)."""
    name = f'apache_beam-v{beam_version}-prism-linux-amd64'
    return Path.home() / '.apache_beam' / 'cache' / 'prism' / 'bin' / f'{name}.zip'
