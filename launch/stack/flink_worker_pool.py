"""`python -m launch.stack.flink_worker_pool --port N`: Beam's Python worker pool for the local Flink session cluster
(launch/stack/flink.py), bound to 127.0.0.1.

Beam's `apache_beam.runners.worker.worker_pool_main` listens on every interface and starts its SDK workers with a
state cache of 0 bytes (every read of a stateful DoFn's state goes back to Flink). This starts the same servicer with
the gRPC server bound to loopback (pipelines/loopback.py), one SDK worker *process* per request (each TaskManager's
environment gets its own process, so two TaskManagers use two cores), and the state cache the LOOPBACK environment
gets by default. The workers are `python` from PATH: the stack puts the pipeline's virtualenv first.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

STATE_CACHE_BYTES = 100 << 20
DATA_BUFFER_TIME_LIMIT_MS = -1  # Beam's default: flush by size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--port', type=int, required=True, help='gRPC port on 127.0.0.1')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s %(message)s')

    from pipelines import loopback
    loopback.bind_grpc_servers_to_loopback()
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
    address, server = BeamFnExternalWorkerPoolServicer.start(
        use_process=True, port=args.port, state_cache_size=STATE_CACHE_BYTES,
        data_buffer_time_limit_ms=DATA_BUFFER_TIME_LIMIT_MS)
    logging.info('Beam worker pool listening at %s', address)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(5).wait()
    return 0  # atexit (Beam's) stops the SDK worker processes


if __name__ == '__main__':
    sys.exit(main())
