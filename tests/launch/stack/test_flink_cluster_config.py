"""The local Flink session cluster's settings (launch/stack/flink.py): every address 127.0.0.1, the ports and sizes
of the stack's settings, checkpoints as files under the state directory; `--with flink` adds its processes."""
from __future__ import annotations

import yaml

from launch.stack import config as stack_config
from launch.stack.flink import FlinkJobManager, FlinkTaskManager, FlinkWorkerPool, cluster_config
from launch.stack.stack import COMPONENTS, Stack


def test_the_cluster_config_binds_loopback_with_the_stacks_ports(tmp_path):
    cfg = stack_config.load({'state_dir': str(tmp_path), 'flink_rest_port': 28081, 'flink_rpc_port': 26123,
                             'flink_blob_port': 26124, 'flink_taskmanagers': 3, 'flink_slots': 2}, environ={})
    conf = yaml.safe_load(cluster_config(cfg))
    assert {k: v for k, v in conf.items() if k.endswith(('address', 'bind-host', '.host'))} == {
        'jobmanager.rpc.address': '127.0.0.1', 'jobmanager.bind-host': '127.0.0.1', 'rest.address': '127.0.0.1',
        'rest.bind-address': '127.0.0.1', 'taskmanager.host': '127.0.0.1', 'taskmanager.bind-host': '127.0.0.1'}
    assert (conf['rest.port'], conf['jobmanager.rpc.port'], conf['blob.server.port']) == (28081, 26123, 26124)
    assert (conf['taskmanager.numberOfTaskSlots'], conf['parallelism.default']) == (2, 6)
    assert conf['state.backend.type'] == 'hashmap'
    assert conf['state.checkpoints.dir'] == (tmp_path / 'flink-checkpoints').as_uri()


def test_up_with_flink_adds_the_pool_the_jobmanager_and_each_taskmanager(tmp_path):
    cfg = stack_config.load({'state_dir': str(tmp_path), 'flink_taskmanagers': 2}, environ={})
    assert [c.name for c in Stack(cfg).components] == list(COMPONENTS)  # nothing of Flink runs: not shown
    with_flink = Stack(cfg, with_=('flink',)).components
    assert [c.name for c in with_flink] == [*COMPONENTS, 'flink-workers', 'flink-jm', 'flink-tm1', 'flink-tm2']
    assert [type(c) for c in with_flink[-4:]] == [FlinkWorkerPool, FlinkJobManager, FlinkTaskManager,
                                                  FlinkTaskManager]
    assert with_flink[-4].ports == {'flink_worker_pool_port': cfg.flink_worker_pool_port}
