"""`make install` (`python3 -m launch.stack.install`): everything the project needs on this machine, idempotent and
cached under $ENGAGEMENT_HOME. Steps, each printed with its duration: missing Debian packages (apt-get); the
virtualenv `.venv` from requirements.txt; Kafka, Kafka Connect and Debezium (Maven, the pinned poms in maven/);
Beam's Prism runner (built from Beam's Go module, its job server bound to 127.0.0.1), packed where Beam's
DirectRunner looks for it; loopback_bind.so (launch/stack/native.py); the BigQuery and GCS emulators in a virtualenv
of their own (launch/standins/bq-emulator-requirements.txt); Beam's Flink job server and Kafka
expansion service (Maven) with their launcher jars (the latter compiles java/LoopbackExpansionService.java). A
step redoes its work only when its inputs changed; build caches are deleted once their results are in place.
What goes where: docs/operations.md#install. Standard library only: it runs before the virtualenv exists.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

from launch.stack import config as stack_config
from launch.stack import native
from pipelines.artifacts import (
    flink_conf_dir,
    flink_java_launcher,
    flink_job_server_jar,
    kafka_expansion_service_jar,
    loopback_shim,
    prism_cache_zip,
)

BEAM_VERSION = '2.77.0'
PRISM_MODULE = f'github.com/apache/beam/sdks/v2@v{BEAM_VERSION}'
MAVEN_DEPENDENCY_PLUGIN = 'org.apache.maven.plugins:maven-dependency-plugin:3.8.1'
PG_BIN = Path('/usr/lib/postgresql/15/bin')
VENV = stack_config.REPO_ROOT / '.venv'
REQUIREMENTS = stack_config.REPO_ROOT / 'requirements.txt'
HERE = Path(__file__).resolve().parent
MAVEN_DIR = HERE / 'maven'  # the pinned poms
BQ_EMULATOR_REQUIREMENTS = HERE.parent / 'standins' / 'bq-emulator-requirements.txt'

# pom file -> (folder under $ENGAGEMENT_HOME, extra copy-dependencies arguments)
MAVEN_BUNDLES = {
    'kafka.pom.xml': ('kafka/lib', []),
    'connect.pom.xml': ('connect/lib', []),
    'debezium-postgres.pom.xml': ('connect/plugins/debezium-postgres',
                                  ['-DexcludeGroupIds=org.apache.kafka,org.slf4j']),
}


class InstallError(Exception):
    pass


def prism_binary(home: Path) -> Path:
    """Prism with its job server on 127.0.0.1 (launch/stack/native.py); the `-loopback` directory keeps a build of
    Beam's unchanged Prism from an older install from being taken for it."""
    return home / 'prism' / f'v{BEAM_VERSION}-loopback' / 'prism'


def bq_venv(home: Path) -> Path:
    """The virtualenv of the BigQuery and GCS emulators (kept apart from .venv: see bq-emulator-requirements.txt)."""
    return home / 'bq-venv'


FLINK_JOB_SERVER_POM = 'flink-job-server.pom.xml'
FLINK_JOB_SERVER_MAIN = 'org.apache.beam.runners.flink.FlinkJobServerDriver'
# What Flink 1.19's own launch scripts open on JDK 17 (env.java.opts.all); without them a streaming job fails with
# InaccessibleObjectException ("module java.base does not "opens java.util" to unnamed module").
FLINK_ADD_OPENS = tuple(f'java.base/{package}' for package in (
    'java.lang', 'java.net', 'java.io', 'java.nio', 'sun.nio.ch', 'java.lang.reflect', 'java.text', 'java.time',
    'java.util', 'java.util.concurrent', 'java.util.concurrent.atomic', 'java.util.concurrent.locks'))
FLINK_ADD_EXPORTS = ('java.base/sun.net.util',)


def _manifest(attributes: dict[str, str]) -> bytes:
    """A JAR manifest: lines of at most 72 bytes, continued on lines that start with one space."""
    lines = []
    for key, value in attributes.items():
        raw = f'{key}: {value}'.encode()
        lines.append(raw[:72])
        lines.extend(b' ' + raw[i:i + 71] for i in range(72, len(raw), 71))
    return b'\r\n'.join(lines) + b'\r\n\r\n'


def flink_launcher_members(lib: Path) -> dict[str, bytes]:
    """The launcher jar's content: a manifest, and the settings of slf4j-simple (the closure's only logging
    binding): warnings and errors, less one warning the job server logs at every checkpoint although the
    finalization it reports succeeded ("Dropped unknown InstructionResponse finalize_bundle")."""
    jars = sorted(p.name for p in lib.glob('*.jar'))
    manifest = _manifest({'Manifest-Version': '1.0', 'Created-By': 'launch.stack.install',
                          'Main-Class': FLINK_JOB_SERVER_MAIN,
                          'Class-Path': ' '.join(f'{lib.name}/{jar}' for jar in jars),
                          'Add-Opens': ' '.join(FLINK_ADD_OPENS), 'Add-Exports': ' '.join(FLINK_ADD_EXPORTS)})
    logging = ('org.slf4j.simpleLogger.defaultLogLevel=warn\n'
               'org.slf4j.simpleLogger.log.org.apache.beam.runners.fnexecution.control.FnApiControlClient=error\n')
    return {'META-INF/MANIFEST.MF': manifest, 'simplelogger.properties': logging.encode()}


# Flink 1.19 reads config.yaml (flat keys are valid there). Embedded Flink starts a REST endpoint (the web UI's
# API) and a blob server that listen on every interface unless told otherwise.
FLINK_CONFIG_YAML = '''# Embedded Flink of Beam's Flink job server (--flink_master=[local]); written by `make install`.
rest.bind-address: 127.0.0.1
rest.address: 127.0.0.1
jobmanager.bind-host: 127.0.0.1
taskmanager.bind-host: 127.0.0.1
# After a task failure the job restarts from its last checkpoint, with a back-off from 1 s to 60 s, for as long as
# it takes (a streaming job; the sinks ride out their own outages, so a restart means a lost worker or a JVM fault).
restart-strategy.type: exponential-delay
restart-strategy.exponential-delay.initial-backoff: 1 s
restart-strategy.exponential-delay.max-backoff: 60 s
restart-strategy.exponential-delay.backoff-multiplier: 2.0
restart-strategy.exponential-delay.reset-backoff-threshold: 10 min
restart-strategy.exponential-delay.jitter-factor: 0.1
'''


# Beam stops the job server from an atexit hook, which a driver killed with SIGKILL never runs: the JVM (and the
# embedded Flink job, restarting without its SDK worker) would live on. The kernel's parent-death signal
# (setpriv, util-linux) sends the JVM SIGTERM when the thread that started it dies, however it dies.
KAFKA_EXPANSION_SERVICE_POM = 'kafka-expansion-service.pom.xml'
KAFKA_EXPANSION_SERVICE_SOURCE = HERE / 'java' / 'LoopbackExpansionService.java'
KAFKA_EXPANSION_SERVICE_MAIN = 'engagement.xlang.LoopbackExpansionService'
# slf4j-simple at WARN, less the expansion service's warning at every expansion that KafkaIO's configuration class
# "has no schema registered" (it then uses the setters, as designed).
KAFKA_EXPANSION_SERVICE_LOGGING = (
    'org.slf4j.simpleLogger.defaultLogLevel=warn\n'
    'org.slf4j.simpleLogger.log.org.apache.beam.sdk.expansion.service.ExpansionService=error\n')


def _sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _run(cmd: list[str], log: Path, env: dict | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, 'ab') as out:
        out.write(f'\n$ {" ".join(cmd)}\n'.encode())
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = log.read_text(errors='replace').splitlines()[-15:]
        raise InstallError(f'{cmd[0]} failed (exit {proc.returncode}); last lines of {log}:\n  ' + '\n  '.join(tail))


class Installer:
    def __init__(self, home: Path):
        self.home = home
        self.logs = home / 'logs'

    def step(self, title: str, fn) -> None:
        started = time.monotonic()
        print(f'==> {title} ...', flush=True)
        outcome = fn()
        print(f'    {outcome} ({time.monotonic() - started:.1f} s)', flush=True)

    # 1. Debian packages
    def apt_packages(self) -> str:
        missing = []
        if not shutil.which('redis-server'):
            missing.append('redis-server')
        if not (PG_BIN / 'postgres').exists():
            missing.append('postgresql-15')
        for tool, package in (('java', 'openjdk-17-jdk-headless'), ('javac', 'openjdk-17-jdk-headless'),
                              ('mvn', 'maven'), ('promtool', 'prometheus'), ('chromium', 'chromium'),
                              ('cc', 'gcc'),  # builds loopback_bind.so (launch/stack/native.py)
                              ('shellcheck', 'shellcheck')):  # lints launch/dataflow/template.sh (a test)
            if not shutil.which(tool) and package not in missing:
                missing.append(package)
        if not missing:
            return 'all present'
        if os.geteuid() != 0:
            raise InstallError(f'missing Debian packages {missing}; install them with sudo apt-get install -y '
                               + ' '.join(missing))
        _run(['apt-get', 'update', '-qq'], self.logs / 'apt.log')
        _run(['apt-get', 'install', '-y', '-qq', *missing], self.logs / 'apt.log',
             env={**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'})
        return 'installed ' + ', '.join(missing)

    # 2. virtualenv
    def venv(self) -> str:
        marker = VENV / '.requirements.sha256'
        wanted = _sha256(REQUIREMENTS)
        if marker.exists() and marker.read_text() == wanted and (VENV / 'bin' / 'python').exists():
            return f'{VENV} up to date'
        if not (VENV / 'bin' / 'python').exists():
            _run([sys.executable, '-m', 'venv', str(VENV)], self.logs / 'pip.log')
        _run([str(VENV / 'bin' / 'pip'), 'install', '-q', '-r', str(REQUIREMENTS)], self.logs / 'pip.log')
        marker.write_text(wanted)
        return f'{VENV} installed from requirements.txt'

    # 3. Maven bundles
    def maven(self) -> str:
        done = []
        repo = self.home / 'build' / 'm2'
        for pom_name, (folder, extra) in MAVEN_BUNDLES.items():
            pom = MAVEN_DIR / pom_name
            target = self.home / folder
            marker = target / '.pom.sha256'
            wanted = _sha256(pom)
            if marker.exists() and marker.read_text() == wanted:
                continue
            staging = target.with_name(target.name + '.partial')
            shutil.rmtree(staging, ignore_errors=True)
            _run(['mvn', '-q', '-B', '-f', str(pom), f'-Dmaven.repo.local={repo}',
                  f'{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies', '-DincludeScope=runtime',
                  f'-DoutputDirectory={staging}', *extra], self.logs / 'maven.log')
            (staging / '.pom.sha256').write_text(wanted)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            done.append(f'{folder} ({len(list(target.glob("*.jar")))} jars)')
        shutil.rmtree(repo, ignore_errors=True)
        return 'resolved ' + ', '.join(done) if done else 'all bundles cached'

    # 4. Prism
    def prism(self) -> str:
        binary = prism_binary(self.home)
        built = False
        if not binary.exists():
            build = self.home / 'build'
            env = {**os.environ, 'GOMODCACHE': str(build / 'gomod'), 'GOCACHE': str(build / 'gocache'),
                   'GOFLAGS': '-modcacherw -buildvcs=false'}
            try:
                native.build_prism(PRISM_MODULE, binary, build, _run, self.logs / 'prism.log', env)
            except native.NativeBuildError as exc:
                raise InstallError(str(exc)) from None
            for cache in ('gomod', 'gocache'):
                shutil.rmtree(build / cache, ignore_errors=True)
            built = True
        cache_zip = prism_cache_zip(BEAM_VERSION)
        member = cache_zip.stem
        if not _zip_holds(cache_zip, member, binary):
            cache_zip.parent.mkdir(parents=True, exist_ok=True)
            partial = cache_zip.with_suffix('.partial')
            with zipfile.ZipFile(partial, 'w', zipfile.ZIP_DEFLATED) as zf:
                info = zipfile.ZipInfo(member, date_time=time.localtime(binary.stat().st_mtime)[:6])
                info.external_attr = 0o755 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, binary.read_bytes())
            partial.rename(cache_zip)
        unpacked = cache_zip.with_suffix('')  # Beam runs this copy once it exists; replace an outdated one
        if unpacked.exists() and unpacked.read_bytes() != binary.read_bytes():
            unpacked.unlink()
        return ('built ' if built else 'cached ') + f'{binary}; DirectRunner finds it at {cache_zip}'

    # 4b. loopback_bind.so for the job server's JVM
    def loopback_shim(self) -> str:
        target = loopback_shim(self.home)
        marker = target.with_suffix('.sha256')
        wanted = _sha256(native.SHIM_SOURCE)
        if target.exists() and marker.exists() and marker.read_text() == wanted:
            return f'cached {target}'
        try:
            native.build_shim(target, _run, self.logs / 'native.log')
        except native.NativeBuildError as exc:
            raise InstallError(str(exc)) from None
        marker.write_text(wanted)
        return f'built {target}'

    # 5. BigQuery + GCS emulators
    def bq_emulator(self) -> str:
        venv = bq_venv(self.home)
        marker = venv / '.requirements.sha256'
        wanted = _sha256(BQ_EMULATOR_REQUIREMENTS)
        if marker.exists() and marker.read_text() == wanted and (venv / 'bin' / 'python').exists():
            return f'{venv} up to date'
        if not (venv / 'bin' / 'python').exists():
            _run([sys.executable, '-m', 'venv', str(venv)], self.logs / 'pip-bq.log')
        _run([str(venv / 'bin' / 'pip'), 'install', '-q', '-r', str(BQ_EMULATOR_REQUIREMENTS)],
             self.logs / 'pip-bq.log')
        marker.write_text(wanted)
        return f'{venv} installed from {BQ_EMULATOR_REQUIREMENTS.name}'

    def _maven_closure(self, pom_name: str, lib: Path, repo_name: str) -> bool:
        """Resolve the runtime closure of maven/<pom_name> into `lib` unless `lib` holds it already (its
        marker is the pom's hash); True if it was resolved now. A Maven repository of its own under build/
        (another step deletes build/m2 when it is done), deleted afterwards."""
        pom = MAVEN_DIR / pom_name
        marker = lib / '.pom.sha256'
        wanted = _sha256(pom)
        if marker.exists() and marker.read_text() == wanted:
            return False
        repo = self.home / 'build' / repo_name
        staging = lib.with_name(lib.name + '.partial')
        shutil.rmtree(staging, ignore_errors=True)
        _run(['mvn', '-q', '-B', '-f', str(pom), f'-Dmaven.repo.local={repo}',
              f'{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies', '-DincludeScope=runtime',
              f'-DoutputDirectory={staging}'], self.logs / 'maven.log')
        (staging / '.pom.sha256').write_text(wanted)
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        shutil.rmtree(repo, ignore_errors=True)
        return True

    # 6. Beam's Flink job server
    def flink_job_server(self) -> str:
        launcher = flink_job_server_jar(self.home)
        lib = launcher.parent / 'lib'
        resolved = self._maven_closure(FLINK_JOB_SERVER_POM, lib, 'm2-flink')
        java = flink_java_launcher(self.home)
        script = native.flink_java_launcher_script(loopback_shim(self.home))
        if not (java.exists() and java.read_text() == script):
            java.write_text(script)
            java.chmod(0o755)
        conf = flink_conf_dir(self.home) / 'config.yaml'
        if not (conf.exists() and conf.read_text() == FLINK_CONFIG_YAML):
            conf.parent.mkdir(exist_ok=True)
            conf.write_text(FLINK_CONFIG_YAML)
        members = flink_launcher_members(lib)
        if resolved or not _zip_has_exactly(launcher, members):
            partial = launcher.with_suffix('.partial')
            with zipfile.ZipFile(partial, 'w', zipfile.ZIP_DEFLATED) as zf:
                for name, content in members.items():
                    zf.writestr(name, content)
            partial.rename(launcher)
            jars = len(list(lib.glob('*.jar')))
            return f'{"resolved" if resolved else "cached"} {lib} ({jars} jars); built {launcher}'
        return f'cached {launcher}'

    # 7. Beam's Java expansion service with KafkaIO
    def kafka_expansion_service(self) -> str:
        pom = MAVEN_DIR / KAFKA_EXPANSION_SERVICE_POM
        launcher = kafka_expansion_service_jar(self.home)
        lib = launcher.parent / 'lib'
        resolved = self._maven_closure(KAFKA_EXPANSION_SERVICE_POM, lib, 'm2-kafka-expansion')
        built = launcher.parent / '.launcher.sha256'
        wanted_launcher = _sha256(pom, KAFKA_EXPANSION_SERVICE_SOURCE) + hashlib.sha256(
            KAFKA_EXPANSION_SERVICE_LOGGING.encode()).hexdigest()
        if not resolved and launcher.exists() and built.exists() and built.read_text() == wanted_launcher:
            return f'cached {launcher}'
        classes = self.home / 'build' / 'kafka-expansion-classes'
        shutil.rmtree(classes, ignore_errors=True)
        _run(['javac', '-nowarn', '--release', '11', '-cp', f'{lib}/*', '-d', str(classes),
              str(KAFKA_EXPANSION_SERVICE_SOURCE)], self.logs / 'javac.log')
        jars = sorted(p.name for p in lib.glob('*.jar'))
        manifest = _manifest({'Manifest-Version': '1.0', 'Created-By': 'launch.stack.install',
                              'Main-Class': KAFKA_EXPANSION_SERVICE_MAIN,
                              'Class-Path': ' '.join(f'{lib.name}/{jar}' for jar in jars)})
        partial = launcher.with_suffix('.partial')
        with zipfile.ZipFile(partial, 'w', zipfile.ZIP_DEFLATED) as zf:
            zf.writestr('META-INF/MANIFEST.MF', manifest)
            zf.writestr('simplelogger.properties', KAFKA_EXPANSION_SERVICE_LOGGING)
            for path in sorted(classes.rglob('*.class')):
                zf.write(path, path.relative_to(classes).as_posix())
        partial.rename(launcher)
        shutil.rmtree(classes, ignore_errors=True)
        built.write_text(wanted_launcher)
        return f'{"resolved" if resolved else "cached"} {lib} ({len(jars)} jars); built {launcher}'

    def run(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.step('Debian packages (redis-server, shellcheck, PostgreSQL 15, JDK, Maven, Prometheus, Chromium, gcc)',
                  self.apt_packages)
        self.step('Python virtualenv .venv (requirements.txt)', self.venv)
        self.step('Kafka 4.1.1, Kafka Connect 4.1.1, Debezium Postgres 3.6.1.Final (Maven)', self.maven)
        self.step(f'Beam Prism runner v{BEAM_VERSION} (go build, job server on 127.0.0.1)', self.prism)
        self.step('loopback_bind.so (cc), which keeps the Flink job server\'s listeners on 127.0.0.1',
                  self.loopback_shim)
        self.step('BigQuery + GCS emulators (bqemulator 1.4.0, gcp-storage-emulator 2026.7.19)', self.bq_emulator)
        self.step('Beam Flink job server (beam-runners-flink-1.19 2.62.0, Maven) + launcher jar', self.flink_job_server)
        self.step('Beam Kafka expansion service (KafkaIO 2.73.0, Maven) + launcher jar', self.kafka_expansion_service)
        print(f'install complete in {time.monotonic() - started:.1f} s; downloads and builds in {self.home}')


def _zip_has_exactly(path: Path, members: dict[str, bytes]) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return {name: zf.read(name) for name in zf.namelist()} == members
    except (OSError, KeyError, zipfile.BadZipFile):
        return False


def _zip_holds(path: Path, member: str, content: Path) -> bool:
    """Whether the zip `path` holds `member` with the bytes of the file `content` (size and CRC-32)."""
    data = content.read_bytes()
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(member)
            return info.file_size == len(data) and info.CRC == zlib.crc32(data)
    except (OSError, KeyError, zipfile.BadZipFile):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python3 -m launch.stack.install', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    stack_config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = stack_config.from_args(args)
        Installer(cfg.home).run()
    except (stack_config.ConfigError, InstallError) as exc:
        print(f'install failed: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
