"""The Flink session cluster of the local stack (`python -m launch.stack up --with flink`): one JobManager, N
TaskManager processes and a Beam Python worker pool, from the jars of Beam's Flink job server that `make install`
assembles (Flink 1.19.0; no flink-dist is served here, and the job server's closure holds flink-runtime with both
entrypoints). Every listener on 127.0.0.1: the JobManager's REST, RPC and blob ports are settings; the TaskManagers'
RPC and data ports are picked by Flink, bound to 127.0.0.1 by `taskmanager.bind-host`.

A pipeline runs on it with `--runner=FlinkRunner --flink_master=127.0.0.1:<flink rest port>` (pipelines/runners.py
presets the rest): the job server the pipeline starts submits the job over REST, and each TaskManager asks the
worker pool (environment EXTERNAL, as the Beam worker-pool sidecar on Kubernetes) for a Python SDK worker process.
Checkpoints go to `<state dir>/flink-checkpoints` (hashmap state, files), as on embedded Flink.
"""
from __future__ import annotations

import os
import subprocess
import sys

from launch.stack import config as stack_config
from launch.stack.component import Component, StackError, http_json, java_binary, wait_ready
from pipelines import artifacts
from pipelines.local_stack import FLINK_CHECKPOINTS_DIR

ENTRYPOINT = 'org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint'
TASK_MANAGER = 'org.apache.flink.runtime.taskexecutor.TaskManagerRunner'
BASH_JAVA_UTILS = 'org.apache.flink.runtime.util.bash.BashJavaUtils'
JOB_MANAGER_MEMORY = '1024m'
TASK_MANAGER_MEMORY = '1536m'
# The cluster's own log lines worth keeping (slf4j-simple, the job server closure's binding): start-up, the
# registrations of TaskManagers, job state changes, checkpoints and restarts.
LOGGING = '\n'.join([
    'org.slf4j.simpleLogger.defaultLogLevel=warn',
    'org.slf4j.simpleLogger.showDateTime=true',
    'org.slf4j.simpleLogger.log.org.apache.flink.runtime.entrypoint=warn',
    'org.slf4j.simpleLogger.log.org.apache.flink.runtime.resourcemanager=info',
    'org.slf4j.simpleLogger.log.org.apache.flink.runtime.jobmaster.JobMaster=info',
    'org.slf4j.simpleLogger.log.org.apache.flink.runtime.checkpoint.CheckpointCoordinator=info',
    'org.slf4j.simpleLogger.log.org.apache.flink.runtime.taskexecutor.TaskExecutor=info',
    'org.slf4j.simpleLogger.log.org.apache.beam.runners.fnexecution.control.FnApiControlClient=error',
]) + '\n'


def cluster_config(cfg: stack_config.StackConfig) -> str:
    """config.yaml of the JobManager and the TaskManagers."""
    checkpoints = (cfg.state_dir / FLINK_CHECKPOINTS_DIR).resolve().as_uri()
    return '\n'.join([
        '# The local Flink session cluster (launch/stack/flink.py); written at every start.',
        'jobmanager.rpc.address: 127.0.0.1', f'jobmanager.rpc.port: {cfg.flink_rpc_port}',
        'jobmanager.bind-host: 127.0.0.1', f'jobmanager.memory.process.size: {JOB_MANAGER_MEMORY}',
        'rest.address: 127.0.0.1', 'rest.bind-address: 127.0.0.1', f'rest.port: {cfg.flink_rest_port}',
        f'blob.server.port: {cfg.flink_blob_port}',
        'taskmanager.host: 127.0.0.1', 'taskmanager.bind-host: 127.0.0.1',
        f'taskmanager.numberOfTaskSlots: {cfg.flink_slots}',
        f'taskmanager.memory.process.size: {TASK_MANAGER_MEMORY}',
        f'parallelism.default: {cfg.flink_taskmanagers * cfg.flink_slots}',
        'state.backend.type: hashmap', f'state.checkpoints.dir: {checkpoints}',
        # Beam's runner classes are on the cluster's class path already (the job server's closure): load them
        # from there rather than from the jar the job server ships with each job.
        'classloader.resolve-order: parent-first',
        'restart-strategy.type: exponential-delay',
        'restart-strategy.exponential-delay.initial-backoff: 1 s',
        'restart-strategy.exponential-delay.max-backoff: 60 s',
        'restart-strategy.exponential-delay.backoff-multiplier: 2.0',
        'restart-strategy.exponential-delay.reset-backoff-threshold: 10 min',
        'restart-strategy.exponential-delay.jitter-factor: 0.1',
        # A lost TaskManager is noticed within 10 s (default 50 s), so a killed one restarts the job quickly.
        'heartbeat.timeout: 10000', 'heartbeat.interval: 2000',
    ]) + '\n'


class _FlinkProcess(Component):
    """A JVM of the cluster: class path = the job server's jars, plus the config directory (logging)."""

    @property
    def conf_dir(self):
        return self.cfg.state_dir / 'flink' / 'conf'

    def _classpath(self) -> str:
        lib = artifacts.flink_job_server_jar(self.cfg.home).parent / 'lib'
        if not any(lib.glob('flink-runtime-*.jar')):
            raise StackError(f'Flink jars not found under {lib}: run `make install`.')
        return f'{self.conf_dir}:{lib}/*'

    def _env(self) -> dict[str, str]:
        """Beam's Fn API servers in a TaskManager (control, data, state, logging) listen on every interface, as in
        the job server: the same LD_PRELOAD library binds them to 127.0.0.1 (launch/stack/native.py)."""
        shim = artifacts.loopback_shim(self.cfg.home)
        if not shim.is_file():
            raise StackError(f'{shim} not found: run `make install`.')
        return {**os.environ, 'LD_PRELOAD': str(shim)}

    def _write_conf(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / 'config.yaml').write_text(cluster_config(self.cfg))
        (self.conf_dir / 'simplelogger.properties').write_text(LOGGING)
        (self.cfg.state_dir / FLINK_CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)

    def _resource_params(self, which: str) -> tuple[list[str], list[str]]:
        """Flink's own memory and CPU settings for a JobManager or TaskManager (what its start scripts compute
        with BashJavaUtils): JVM flags, and `-D key=value` dynamic properties."""
        result = subprocess.run([java_binary(), '-Xmx128m', '-cp', self._classpath(), BASH_JAVA_UTILS, which,
                                 '--configDir', str(self.conf_dir)], capture_output=True, text=True, timeout=60)
        lines = [line.split(':', 1)[1] for line in result.stdout.splitlines()
                 if line.startswith('BASH_JAVA_UTILS_EXEC_RESULT:')]
        if result.returncode != 0 or len(lines) < 2:
            raise StackError(f'{self.name}: Flink\'s BashJavaUtils {which} failed: '
                             f'{(result.stderr or result.stdout).strip()[-500:]}')
        return lines[0].split(), lines[1].split()

    def overview(self) -> dict:
        return http_json(f'http://127.0.0.1:{self.cfg.flink_rest_port}/overview', timeout=2)


class FlinkJobManager(_FlinkProcess):
    name = 'flink-jm'
    port_settings = ('flink_rest_port', 'flink_rpc_port', 'flink_blob_port')

    def start(self) -> None:
        self._write_conf()
        jvm, _ = self._resource_params('GET_JM_RESOURCE_PARAMS')
        self.proc.spawn([java_binary(), *jvm, '-cp', self._classpath(), ENTRYPOINT, '--configDir',
                         str(self.conf_dir)], env=self._env())
        wait_ready('REST GET /overview', self.proc, lambda: 'taskmanagers' in self.overview())

    def health(self):
        rows = super().health()
        if rows[0][1]:
            try:
                o = self.overview()
                rows.append(('cluster', o['taskmanagers'] == self.cfg.flink_taskmanagers,
                             f"{o['taskmanagers']} TaskManagers, {o['slots-total']} slots "
                             f"({o['slots-available']} free), {o['jobs-running']} jobs running "
                             f"(web UI API http://127.0.0.1:{self.cfg.flink_rest_port})"))
            except Exception as exc:
                rows.append(('cluster', False, f'REST API not answering ({type(exc).__name__})'))
        return rows


class FlinkTaskManager(_FlinkProcess):
    port_settings = ()

    def __init__(self, cfg: stack_config.StackConfig, index: int):
        self.index = index
        self.name = f'flink-tm{index}'
        super().__init__(cfg)

    def start(self) -> None:
        self._write_conf()
        jm = FlinkJobManager(self.cfg)
        before = jm.overview()['taskmanagers']
        jvm, dynamic = self._resource_params('GET_TM_RESOURCE_PARAMS')
        self.proc.spawn([java_binary(), *jvm, '-cp', self._classpath(), TASK_MANAGER, '--configDir',
                         str(self.conf_dir), *dynamic, '-D', f'taskmanager.resource-id={self.name}'],
                        env=self._env())
        wait_ready('registered with the JobManager', self.proc, lambda: jm.overview()['taskmanagers'] > before)


class FlinkWorkerPool(Component):
    """Beam's Python worker pool (launch/stack/flink_worker_pool.py) on 127.0.0.1: each TaskManager's environment
    gets its own SDK worker process from it, running this repository's code with the pipeline's virtualenv."""
    name = 'flink-workers'
    port_settings = ('flink_worker_pool_port',)

    def start(self) -> None:
        venv_bin = os.path.dirname(sys.executable)
        env = {**os.environ, 'PATH': f'{venv_bin}:{os.environ.get("PATH", "")}',
               'PYTHONPATH': str(stack_config.REPO_ROOT)}
        self.proc.spawn([sys.executable, '-m', 'launch.stack.flink_worker_pool',
                         '--port', str(self.cfg.flink_worker_pool_port)], env=env)
        from launch.stack.processes import port_answers
        wait_ready('gRPC port', self.proc, lambda: port_answers(self.cfg.flink_worker_pool_port))


def cluster_components(cfg: stack_config.StackConfig) -> list[Component]:
    """In start order: the worker pool, the JobManager, then the TaskManagers."""
    return [FlinkWorkerPool(cfg), FlinkJobManager(cfg),
            *(FlinkTaskManager(cfg, i) for i in range(1, cfg.flink_taskmanagers + 1))]
