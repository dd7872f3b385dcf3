"""`--runner=FlinkRunner` works out of the box: the job server `make install` assembles, embedded Flink, a LOOPBACK
worker, a heap cap and checkpointing are preset; what the user gives wins; a missing job server is one clear
line; the job server JVM is stopped with the pipeline. (The run on Flink itself: tests/e2e/test_flink_e2e.py.)"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from apache_beam.options.pipeline_options import FlinkRunnerOptions, JobServerOptions, PipelineOptions, PortableOptions

from launch.stack import install, native
from pipelines import flink_cluster, runners


@pytest.fixture
def installed_home(tmp_path, monkeypatch):
    """An ENGAGEMENT_HOME laid out as `make install` leaves it (the jars themselves are not needed here)."""
    monkeypatch.setenv('ENGAGEMENT_HOME', str(tmp_path))
    jar = install.flink_job_server_jar(tmp_path)
    jar.parent.mkdir(parents=True)
    jar.write_bytes(b'PK')
    launcher = install.flink_java_launcher(tmp_path)
    launcher.write_text(native.flink_java_launcher_script(install.loopback_shim(tmp_path)))
    launcher.chmod(0o755)
    install.flink_conf_dir(tmp_path).mkdir()
    return tmp_path


def flink(*argv) -> PipelineOptions:
    options = PipelineOptions(['--runner=FlinkRunner', '--streaming', *argv])
    assert runners.select_runner(options) == 'FlinkRunner'
    return options


def test_embedded_flink_needs_no_flag(installed_home, tmp_path, monkeypatch):
    monkeypatch.setenv('ENGAGEMENT_STATE_DIR', str(tmp_path / 'state'))
    options = flink()
    assert options.view_as(FlinkRunnerOptions).flink_job_server_jar == str(installed_home / 'flink-job-server' /
                                                                           'beam-flink-job-server.jar')
    assert options.view_as(FlinkRunnerOptions).flink_master == '[local]'
    assert options.view_as(FlinkRunnerOptions).flink_version == '1.19'
    assert options.view_as(PortableOptions).environment_type == 'LOOPBACK'
    job_server = options.view_as(JobServerOptions)
    assert job_server.job_server_jvm_properties == [runners.FLINK_JOB_SERVER_HEAP]
    assert job_server.job_server_java_launcher == str(install.flink_java_launcher(installed_home))
    assert job_server.expansion_port == -1  # no Java expansion service: nothing cross-language here
    # What the portable runner sends to the job server: checkpointing is on, so bundles get finalized.
    sent = options.get_all_options(retain_unknown_options=True)
    assert sent['checkpointing_interval'] == 5000
    assert sent['finish_bundle_before_checkpointing'] is True
    assert (sent['max_bundle_size'], sent['max_bundle_time_mills']) == (40_000, 2000)
    assert sent['flink_conf_dir'] == str(install.flink_conf_dir(installed_home))  # Flink's ports on loopback
    # Checkpoints as files under the stack's state directory, not in the JobManager's memory (5 MB of state at most)
    checkpoints = tmp_path / 'state' / 'flink-checkpoints'
    assert (sent['state_backend'], sent['state_backend_storage_path']) == ('filesystem', checkpoints.as_uri())
    assert checkpoints.is_dir()


def test_what_the_user_gives_wins(installed_home, tmp_path):
    own_jar = tmp_path / 'own-job-server.jar'
    own_jar.write_bytes(b'PK')
    options = flink('--flink_master=flink.example:8081', f'--flink_job_server_jar={own_jar}',
                    '--job_server_jvm_properties=-Xmx3g', '--checkpointing_interval=-1',
                    '--environment_type=PROCESS', '--job_server_java_launcher=/opt/jdk/bin/java',
                    '--state_backend_storage_path=file:///mnt/checkpoints')
    assert options.view_as(FlinkRunnerOptions).flink_master == 'flink.example:8081'
    assert options.view_as(FlinkRunnerOptions).flink_job_server_jar == str(own_jar)
    assert options.view_as(PortableOptions).environment_type == 'PROCESS'
    assert options.view_as(JobServerOptions).job_server_jvm_properties == ['-Xmx3g']
    assert options.view_as(JobServerOptions).job_server_java_launcher == '/opt/jdk/bin/java'
    assert options.get_all_options()['checkpointing_interval'] == -1
    assert options.get_all_options()['state_backend_storage_path'] == 'file:///mnt/checkpoints'


def test_the_stacks_session_cluster_gets_the_worker_pool_and_checkpoints_under_the_state_dir(installed_home,
                                                                                            tmp_path, monkeypatch):
    monkeypatch.setenv('ENGAGEMENT_FLINK_REST_PORT', '28081')
    monkeypatch.setenv('ENGAGEMENT_FLINK_WORKER_POOL_PORT', '25100')
    monkeypatch.setenv('ENGAGEMENT_STATE_DIR', str(tmp_path / 'state'))
    options = flink('--flink_master=[cluster]')
    assert options.view_as(FlinkRunnerOptions).flink_master == '127.0.0.1:28081'
    portable = options.view_as(PortableOptions)
    assert (portable.environment_type, portable.environment_config) == ('EXTERNAL', '127.0.0.1:25100')
    sent = options.get_all_options(retain_unknown_options=True)
    assert sent['state_backend_storage_path'] == (tmp_path / 'state' / 'flink-checkpoints').as_uri()
    assert sent['flink_conf_dir'] is None  # the cluster has its own (launch/stack/flink.py)
    # The same address written out counts as the stack's cluster; another port on this machine does not.
    assert flink_cluster.is_local_cluster('http://localhost:28081/')
    assert not flink_cluster.is_local_cluster('127.0.0.1:8081') and flink_cluster.is_local_flink('127.0.0.1:8081')
    assert flink('--flink_master=127.0.0.1:8081').view_as(PortableOptions).environment_type is None


def test_a_remote_cluster_gets_no_loopback_worker(installed_home):
    options = flink('--flink_master=flink.example:8081')
    assert options.view_as(PortableOptions).environment_type is None  # Beam's default for a cluster (DOCKER)
    assert options.get_all_options()['flink_conf_dir'] is None  # the cluster's own configuration applies
    assert options.get_all_options()['state_backend_storage_path'] is None  # not a path on this machine


def test_missing_job_server_names_make_install(tmp_path, monkeypatch):
    monkeypatch.setenv('ENGAGEMENT_HOME', str(tmp_path))
    with pytest.raises(runners.FlinkJobServerUnavailable, match=r'not installed at .*beam-flink-job-server.jar; '
                                                                  r'run `make install`'):
        runners.select_runner(PipelineOptions(['--runner=FlinkRunner']))
    with pytest.raises(runners.FlinkJobServerUnavailable, match=r'--flink_job_server_jar=.*/nope.jar does not exist'):
        runners.select_runner(PipelineOptions(['--runner=FlinkRunner', f'--flink_job_server_jar={tmp_path}/nope.jar']))


def test_the_pipeline_command_prints_one_line_without_a_job_server(tmp_path):
    out = subprocess.run([sys.executable, '-m', 'pipelines.engagement', '--runner=FlinkRunner', '--streaming'],
                         env={**os.environ, 'ENGAGEMENT_HOME': str(tmp_path)}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().startswith('error: the Flink job server is not installed at')
    assert 'run `make install`' in out.stderr and 'Traceback' not in out.stderr


def test_launcher_jar_manifest_lists_every_lib_jar(tmp_path):
    lib = tmp_path / 'lib'
    lib.mkdir()
    names = [f'some-rather-long-artifact-name-{i}-1.2.{i}.jar' for i in range(40)]
    for name in names:
        (lib / name).write_bytes(b'')
    manifest = install.flink_launcher_members(lib)['META-INF/MANIFEST.MF']
    lines = manifest.split(b'\r\n')
    assert max(len(line) for line in lines) <= 72
    unfolded = b''.join(line[1:] if line.startswith(b' ') else b'\n' + line for line in lines).decode()
    attributes = dict(line.split(': ', 1) for line in unfolded.strip().splitlines())
    assert attributes['Main-Class'] == 'org.apache.beam.runners.flink.FlinkJobServerDriver'
    assert attributes['Class-Path'].split() == [f'lib/{name}' for name in sorted(names)]
    assert 'java.base/java.util' in attributes['Add-Opens'].split()


def test_install_step_is_cached(tmp_path, monkeypatch):
    """A second run changes nothing; a launcher jar that lost its manifest is rebuilt without resolving again."""
    installer = install.Installer(tmp_path)
    lib = install.flink_job_server_jar(tmp_path).parent / 'lib'
    lib.mkdir(parents=True)
    (lib / 'beam-runners-flink-1.19-2.62.0.jar').write_bytes(b'')
    pom = install.MAVEN_DIR / install.FLINK_JOB_SERVER_POM
    (lib / '.pom.sha256').write_text(install._sha256(pom))
    monkeypatch.setattr(install, '_run', lambda *a, **k: pytest.fail(f'resolved again: {a}'))
    assert installer.flink_job_server().startswith('cached')  # lib cached, launcher built
    jar = install.flink_job_server_jar(tmp_path)
    assert installer.flink_job_server() == f'cached {jar}'
    with zipfile.ZipFile(jar, 'w') as zf:
        zf.writestr('META-INF/MANIFEST.MF', 'Manifest-Version: 1.0\r\n\r\n')
    assert 'built' in installer.flink_job_server()
    with zipfile.ZipFile(jar) as zf:
        assert b'lib/beam-runners-flink-1.19-2.62.0.jar' in zf.read('META-INF/MANIFEST.MF')


def test_stop_job_server_children_stops_our_job_server_only(tmp_path):
    jar = str(tmp_path / 'beam-flink-job-server.jar')
    ours = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '-jar', jar])
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '-jar', str(tmp_path / 'x.jar')])
    try:
        options = PipelineOptions(['--runner=FlinkRunner', f'--flink_job_server_jar={jar}'])
        assert runners.stop_job_server_children(options, timeout=5) == [ours.pid]
        assert ours.wait(5) is not None
        assert other.poll() is None
        assert runners.stop_job_server_children(PipelineOptions(['--runner=DirectRunner'])) == []
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


def test_no_wait_is_refused_with_embedded_flink(capsys):
    """The embedded Flink dies with the command: submitting without waiting would start a job that ends at once."""
    from pipelines.engagement import run
    assert run(['--runner=FlinkRunner', '--no_wait_until_finish', '--flink_job_server_jar=/bin/true']) == 2
    assert '--no_wait_until_finish with --flink_master=[local]' in capsys.readouterr().err
