"""Runner selection, with the DirectRunner's silent fallback made impossible.

Beam 2.77's `DirectRunner` tries Prism first and, when Prism cannot start (binary missing and not downloadable,
as on a machine without internet) or the graph holds something it thinks Prism lacks, logs one INFO line and runs
the pipeline on the FnApiRunner instead. For a streaming job that is a silent disaster: the FnApiRunner emits
results only at the end. So for `--runner=DirectRunner` we check that the Prism binary is there (the one
`make install` builds, found at Beam's cache path or `--prism_location`) and hand the pipeline to `PrismRunner`
directly: if Prism fails, the run fails with Prism's error instead of quietly running elsewhere. Beam stops Prism
from an atexit hook, which a driver killed with SIGKILL never runs: Prism would live on, listening on its job port.
So Prism starts under `setpriv --pdeathsig TERM` (util-linux), as the Flink job server's java does: the kernel
sends it SIGTERM when the thread that started it (the one that runs the pipeline) dies, however it dies.

For `--runner=FlinkRunner` we preset what Beam cannot find or guess here (`flink_presets`): the job server jar that
`make install` assembles (Beam would try to download one, and none is published for this version), an embedded
Flink (`--flink_master=[local]`) with the SDK worker inside the driver (`--environment_type=LOOPBACK`), a heap cap for
the job server JVM, a java launcher that stops the job server when this process dies (even by SIGKILL), and
checkpointing: Flink calls bundle finalization, where the Kafka reader commits its offsets, only when a checkpoint
completes. `stop_job_server_children()` stops the job server JVM explicitly (Beam does it only at interpreter
exit).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import (
    DebugOptions,
    FlinkRunnerOptions,
    JobServerOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)
from apache_beam.runners.portability import job_server
from apache_beam.runners.portability.prism_runner import PrismJobServer, PrismRunner
from apache_beam.utils import shared
from apache_beam.version import __version__ as BEAM_VERSION

from pipelines import artifacts, flink_cluster, local_stack, loopback
from pipelines.flink_cluster import is_local_cluster, is_local_flink, local_cluster_master
from pipelines.processes import descendants

_LOG = logging.getLogger(__name__)
DIRECT_NAMES = {None, 'DirectRunner', 'direct', 'Direct', 'PrismRunner', 'prism', 'Prism'}
FLINK_NAMES = {'FlinkRunner', 'flink', 'Flink'}
DATAFLOW_NAMES = {'DataflowRunner', 'dataflow', 'Dataflow'}
# The Flink version inside the job server `make install` assembles (beam-runners-flink-1.19:2.62.0).
FLINK_VERSION = '1.19'
# The job server JVM runs embedded Flink, with the pipeline's state (windows, SDF residuals) on its heap. Uncapped,
# the JVM sizes its heap from the machine's memory and grew to 1.1 GB on a 200k-event backlog.
FLINK_JOB_SERVER_HEAP = '-Xmx1g'
FLINK_CHECKPOINT_INTERVAL_MS = 5000
FLINK_CHECKPOINTS_DIR = local_stack.FLINK_CHECKPOINTS_DIR
LOCAL_CLUSTER = '[cluster]'  # --flink_master alias: the stack's session cluster
# Flink closes a bundle after 1000 elements or 1 s by default. The windows pre-aggregate per bundle and the sinks
# flush per bundle, so small bundles cost: a 200k-event backlog was exact after 168 s with the defaults and after
# 98 s with these (same machine, busy), the reader's own bundle bounds then (pipelines/engagement.py; the reader
# has read a backlog in 4 s bundles since 7426965, measured on Prism only).
FLINK_MAX_BUNDLE_SIZE = 40_000
FLINK_MAX_BUNDLE_TIME_MS = 2000


class RunnerUnavailable(RuntimeError):
    """The chosen runner cannot start on this machine; the message says what to do."""


class PrismUnavailable(RunnerUnavailable):
    pass


class FlinkJobServerUnavailable(RunnerUnavailable):
    """A PrismUnavailable only so that callers catching that (pipelines/engagement.py) print it as one line."""


class FlinkPresetOptions(PipelineOptions):
    """The Flink options we preset that Beam's Python SDK does not declare (the job server's own options are learnt
    only when the job is submitted, too late to give them a default)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument('--checkpointing_interval', type=int, default=None,
                            help='Flink checkpoint interval in milliseconds. Bundle finalization, where the Kafka '
                                 'reader commits its offsets, runs when a checkpoint completes, so without '
                                 f'checkpoints no offset is ever committed. Default {FLINK_CHECKPOINT_INTERVAL_MS} '
                                 'on --runner=FlinkRunner; -1 disables checkpointing.')
        parser.add_argument('--state_backend', default=None, choices=('filesystem', 'rocksdb'),
                            help='Where Flink keeps the job\'s state and writes its checkpoints. Default on '
                                 '--runner=FlinkRunner: filesystem (state on the heap, checkpoints as files under '
                                 '--state_backend_storage_path); Flink\'s own default keeps checkpoints in the '
                                 'JobManager\'s memory, limited to 5 MB of state, which a backlog\'s windows '
                                 'outgrow. rocksdb needs the RocksDB jar, which the installed job server lacks.')
        parser.add_argument('--state_backend_storage_path', default=None,
                            help='URI of the checkpoint directory. Default on --runner=FlinkRunner: '
                                 f'file://<state dir>/{FLINK_CHECKPOINTS_DIR} (<state dir>: '
                                 f'${local_stack.STATE_DIR_ENV}, default <repo>/.state); Flink adds a directory per '
                                 'job and keeps its last completed checkpoint.')
        parser.add_argument('--savepoint_path', default=None,
                            help='Start the Flink job from this savepoint (its windows and the Kafka reader\'s '
                                 'positions): what `python -m launch.tools.flink_savepoint` printed.')
        parser.add_argument('--allow_non_restored_state', action='store_true', default=None,
                            help='With --savepoint_path: start even if some state of the savepoint belongs to no '
                                 'step of the new graph (a step was removed or renamed).')
        parser.add_argument('--flink_conf_dir', default=None,
                            help='Directory of a Flink config.yaml for the Flink the job server starts or submits '
                                 'to. Default for --flink_master=[local]: the one `make install` writes (REST '
                                 'endpoint on 127.0.0.1).')
        parser.add_argument('--max_bundle_size', type=int, default=None,
                            help='Elements per Flink bundle at most. Default {} on --runner=FlinkRunner (Flink: '
                                 '1000).'.format(FLINK_MAX_BUNDLE_SIZE))
        parser.add_argument('--max_bundle_time_mills', type=int, default=None,
                            help='Milliseconds a Flink bundle stays open at most. Default {} on '
                                 '--runner=FlinkRunner (Flink: 1000).'.format(FLINK_MAX_BUNDLE_TIME_MS))
        parser.add_argument('--finish_bundle_before_checkpointing', action='store_true', default=None,
                            help='Finish the bundle in flight before Flink takes a checkpoint, instead of buffering '
                                 'its output in the checkpoint. Always on for --runner=FlinkRunner: without it a '
                                 'backlog read in large bundles stalled for good in 6 of 10 runs (nothing reached '
                                 'Redis), with it none of 3 did.')


def prism_cache_zip() -> str:
    return str(artifacts.prism_cache_zip(BEAM_VERSION))


def prism_source(options: PipelineOptions) -> str:
    """Where Prism will be loaded from; raises PrismUnavailable with what to do when it is not there."""
    location = options.view_as(PrismRunnerOptions).prism_location
    if location:
        if not os.path.isfile(location):
            raise PrismUnavailable(f'--prism_location={location} does not exist; run `make install` or fix the path.')
        return location
    cached = prism_cache_zip()
    if not os.path.isfile(cached):
        raise PrismUnavailable(
            f'the Prism runner (Beam v{BEAM_VERSION}) is not installed at {cached}, and this machine cannot '
            'download it; run `make install` (it builds Prism with go install), or pass --prism_location=<binary>. '
            'Refusing to let the DirectRunner fall back to the FnApiRunner, which emits streaming results only at '
            'the end.')
    return cached


def flink_job_server_jar() -> Path:
    return artifacts.flink_job_server_jar(artifacts.engagement_home())


def flink_conf_dir() -> Path:
    return artifacts.flink_conf_dir(artifacts.engagement_home())


def flink_cluster_url(options: PipelineOptions) -> str | None:
    """The REST address of the Flink cluster a FlinkRunner pipeline is submitted to; None when it runs embedded
    (or on another runner)."""
    master = options.view_as(FlinkRunnerOptions).flink_master
    if _runner_name(options) not in FLINK_NAMES or master in ('[local]', '[auto]'):
        return None
    return (master if '://' in master else f'http://{master}').rstrip('/')


def is_prism(options: PipelineOptions) -> bool:
    """Whether the pipeline runs on Prism (the DirectRunner here)."""
    return _runner_name(options) in DIRECT_NAMES


def enrichment_mode(options: PipelineOptions) -> str:
    """--content_enrichment resolved: `auto` is Beam's slowly-updating side input on Dataflow, the runner that
    documents the pattern for streaming Python, and the DoFn's cache elsewhere. On Prism 2.77 and on the Flink runner
    of Beam 2.77 a refreshed side input does not reach live elements (`python -m launch.scenarios.side_input_probe`
    shows it), and Flink also fails every checkpoint of the side input's state (docs/runners.md, "The catalogue as a
    side input")."""
    mode = options.view_as(PipelineOptions).get_all_options().get('content_enrichment') or 'auto'
    if mode != 'auto':
        return mode
    return 'side_input' if _runner_name(options) in DATAFLOW_NAMES else 'cache'


def default_read_splits(options: PipelineOptions) -> int:
    """How many elements the Kafka reader splits its partitions into when --kafka_read_splits is 0: a Flink job's
    parallelism (--parallelism, else the slots of the cluster it is submitted to), 1 on the other runners (Prism
    runs one SDK worker; on Dataflow give the flag)."""
    if _runner_name(options) not in FLINK_NAMES:
        return 1
    parallelism = options.view_as(FlinkRunnerOptions).parallelism
    if parallelism and parallelism > 0:
        return parallelism
    url = flink_cluster_url(options)
    return 1 if url is None else flink_cluster.slots_total(url)


def flink_checkpoint_dir() -> Path:
    """The default checkpoint directory of a local Flink: under the stack's state directory."""
    path = local_stack.state_dir() / FLINK_CHECKPOINTS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def flink_java_launcher() -> Path:
    return artifacts.flink_java_launcher(artifacts.engagement_home())


def flink_presets(options: PipelineOptions) -> dict[str, Any]:
    """Fill in the Flink options the user did not give; returns what was preset (for the log).

    Raises FlinkJobServerUnavailable when the job server jar is neither given nor installed."""
    flink = options.view_as(FlinkRunnerOptions)
    portable = options.view_as(PortableOptions)
    job_server = options.view_as(JobServerOptions)
    presets_in = options.view_as(FlinkPresetOptions)
    preset: dict[str, Any] = {}
    if flink.flink_job_server_jar:
        if '://' not in flink.flink_job_server_jar and not os.path.isfile(flink.flink_job_server_jar):
            raise FlinkJobServerUnavailable(
                f'--flink_job_server_jar={flink.flink_job_server_jar} does not exist; fix the path, or leave the '
                'flag out to use the job server `make install` assembles.')
    elif not flink.flink_submit_uber_jar:
        jar = flink_job_server_jar()
        if not jar.is_file():
            raise FlinkJobServerUnavailable(
                f'the Flink job server is not installed at {jar}; run `make install` (it assembles Beam\'s Flink '
                'job server from Maven), or pass --flink_job_server_jar=<jar>.')
        preset['flink_job_server_jar'] = flink.flink_job_server_jar = str(jar)
        preset['flink_version'] = flink.flink_version = FLINK_VERSION
    if flink.flink_master == '[auto]':
        preset['flink_master'] = flink.flink_master = '[local]'
    if flink.flink_master == LOCAL_CLUSTER:
        preset['flink_master'] = flink.flink_master = local_cluster_master()
    if is_local_cluster(flink.flink_master) and not portable.environment_type:
        # The stack's worker pool starts the SDK workers the TaskManagers ask for (launch/stack/flink.py).
        preset['environment_type'] = portable.environment_type = 'EXTERNAL'
        pool = f'{local_stack.HOST}:{local_stack.port("flink_worker_pool_port")}'
        preset['environment_config'] = portable.environment_config = pool
        # The job server reads the cluster's own config.yaml: its default parallelism (TaskManagers x slots;
        # without it Beam submits with parallelism 1) and checkpoint directory.
        conf_dir = local_stack.state_dir() / 'flink' / 'conf'
        if presets_in.flink_conf_dir is None and conf_dir.is_dir():
            preset['flink_conf_dir'] = presets_in.flink_conf_dir = str(conf_dir)
    if flink.flink_master in ('[local]', '[auto]'):
        if not portable.environment_type:
            # The SDK worker runs inside this driver process: no Docker image, no worker to install.
            preset['environment_type'] = portable.environment_type = 'LOOPBACK'
        conf_dir = flink_conf_dir()
        if presets_in.flink_conf_dir is None and conf_dir.is_dir():
            preset['flink_conf_dir'] = presets_in.flink_conf_dir = str(conf_dir)
    if job_server.expansion_port == 0:
        # The job server would also serve a Java expansion service (cross-language transforms): we use none.
        preset['expansion_port'] = job_server.expansion_port = -1
    bound_java = flink_java_launcher()
    if job_server.job_server_java_launcher == 'java' and bound_java.is_file() and shutil.which('setpriv'):
        # java that gets SIGTERM when this process dies, even by SIGKILL (Beam's own stop runs only at exit).
        preset['job_server_java_launcher'] = job_server.job_server_java_launcher = str(bound_java)
    if not any(p.startswith('-Xmx') for p in job_server.job_server_jvm_properties):
        job_server.job_server_jvm_properties = [*job_server.job_server_jvm_properties, FLINK_JOB_SERVER_HEAP]
        preset['job_server_jvm_properties'] = FLINK_JOB_SERVER_HEAP
    if presets_in.checkpointing_interval is None:  # batch runs ignore it; this pipeline always streams
        preset['checkpointing_interval'] = presets_in.checkpointing_interval = FLINK_CHECKPOINT_INTERVAL_MS
    if is_local_flink(flink.flink_master):  # a remote cluster's own configuration applies
        if presets_in.state_backend is None:
            preset['state_backend'] = presets_in.state_backend = 'filesystem'
        if presets_in.state_backend_storage_path is None:
            path = flink_checkpoint_dir()
            preset['state_backend_storage_path'] = presets_in.state_backend_storage_path = path.as_uri()
    if presets_in.max_bundle_size is None:
        preset['max_bundle_size'] = presets_in.max_bundle_size = FLINK_MAX_BUNDLE_SIZE
    if presets_in.max_bundle_time_mills is None:
        preset['max_bundle_time_mills'] = presets_in.max_bundle_time_mills = FLINK_MAX_BUNDLE_TIME_MS
    if not presets_in.finish_bundle_before_checkpointing:
        preset['finish_bundle_before_checkpointing'] = presets_in.finish_bundle_before_checkpointing = True
    return preset


def runner_name(runner) -> str | None:
    """The class name of a runner given as a runner object, a name (`FlinkRunner`, `dataflow`) or a dotted path;
    None for Beam's default."""
    if runner is None or not isinstance(runner, str):
        return None if runner is None else type(runner).__name__
    return runner.rsplit('.', 1)[1] if '.' in runner else runner


def is_dataflow(runner) -> bool:
    """Whether `runner` (as runner_name takes it) is Dataflow, whose pipelines the SDK submits and round-trips
    through its own trigger classes."""
    return runner_name(runner) in DATAFLOW_NAMES


def _runner_name(options: PipelineOptions):
    return runner_name(options.view_as(StandardOptions).runner)


def select_runner(options: PipelineOptions):
    """The runner object to build the pipeline with: PrismRunner for the DirectRunner, FlinkRunner with our
    presets for Flink, else the runner as named. On the local runners, this process's gRPC servers (the LOOPBACK
    worker pool) listen on loopback only (pipelines/loopback.py)."""
    name = _runner_name(options)
    if name in FLINK_NAMES or name in DIRECT_NAMES:
        loopback.bind_grpc_servers_to_loopback()
    if name in FLINK_NAMES:
        _LOG.info('FlinkRunner: presets %s', flink_presets(options))
        return 'FlinkRunner'
    if name not in DIRECT_NAMES:
        return options.view_as(StandardOptions).runner
    source = prism_source(options)
    _LOG.info('DirectRunner: running on Prism from %s', source)
    return bound_prism_runner()


class BoundPrismJobServer(PrismJobServer):
    """Prism started under `setpriv --pdeathsig TERM` (module docstring)."""

    def subprocess_cmd_and_endpoint(self):
        cmd, endpoint = super().subprocess_cmd_and_endpoint()
        return [shutil.which('setpriv'), '--pdeathsig', 'TERM', '--', *cmd], endpoint


class BoundPrismRunner(PrismRunner):
    """Beam's PrismRunner with a BoundPrismJobServer, shared by the pipelines of a process as Beam shares its own
    (a plain PrismRunner in the same process keeps its own Prism)."""
    shared_handle = shared.Shared()

    def default_job_server(self, options):
        new = lambda: job_server.StopOnExitJobServer(BoundPrismJobServer(options))  # noqa: E731
        if options.view_as(DebugOptions).lookup_experiment('disable_prism_server_singleton'):
            return new()
        return BoundPrismRunner.shared_handle.acquire(new)


def bound_prism_runner() -> PrismRunner:
    """A PrismRunner whose Prism stops with this process (BoundPrismRunner), or Beam's own where setpriv is
    missing."""
    if shutil.which('setpriv') is None:
        _LOG.warning('setpriv (util-linux) not found: Prism will outlive this process if it is killed by SIGKILL')
        return PrismRunner()
    return BoundPrismRunner()


def _job_server_pids(jar: str) -> list[int]:
    found = []
    for pid in descendants(os.getpid()):
        try:
            argv = Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0')
        except OSError:
            continue
        if b'-jar' in argv and jar.encode() in argv:
            found.append(pid)
    return found


def stop_job_server_children(options: PipelineOptions, timeout: float = 15.0) -> list[int]:
    """Stop the Flink job server JVM(s) this process started; returns their PIDs.

    Beam stops the job server it started only from an atexit hook, which does not run when the driver is killed,
    and a JVM running embedded Flink may take longer than Beam waits. Call this when the pipeline has stopped
    (after `wait_until_finish()` returned or the job was cancelled). Only our own children running the job server
    jar are stopped: SIGTERM (the JVM runs its shutdown hooks), SIGKILL after `timeout`."""
    if _runner_name(options) not in FLINK_NAMES:
        return []
    jar = options.view_as(FlinkRunnerOptions).flink_job_server_jar or str(flink_job_server_jar())
    pids = _job_server_pids(jar)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _running(pid)]
    for pid in alive:
        _LOG.warning('Flink job server (pid %d) still running %.0f s after SIGTERM: killing it', pid, timeout)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if pids:
        _LOG.info('stopped the Flink job server (pid %s)', ', '.join(map(str, pids)))
    return pids


def _running(pid: int) -> bool:
    """False once `pid` has exited (a zombie waiting for Beam's Popen to collect it counts as exited)."""
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False
