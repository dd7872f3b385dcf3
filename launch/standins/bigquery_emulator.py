"""Start the local BigQuery emulator (PyPI `bqemulator`, DuckDB underneath) without its network dependencies.

    $ENGAGEMENT_HOME/bq-venv/bin/python launch/standins/bigquery_emulator.py --port 19050 --data-dir <dir> \
        --project engagement-local --gcs-root <storage dir>/.cloudstorage

The stack runs this (component `bigquery`) in the emulator's own virtualenv, so it imports nothing of the project.
bqemulator insists on `INSTALL spatial` at start, which downloads a DuckDB extension: this machine cannot, so
`DuckDBEngine._load_spatial` is replaced by a no-op (no GEOGRAPHY; nothing here uses it); the automatic time-travel
snapshot after every write is skipped (it copies the whole table each time: see below); and
`BQEMU_ENABLE_FORMAT_EXTENSIONS=false` keeps it from trying the Avro extension (load jobs use JSON). `gs://bucket/path`
in load jobs resolve to `<gcs-root>/bucket/path`, the GCS emulator's files. Data persists in `<data-dir>` (one DuckDB
file). The gRPC API (Storage Read/Write) listens on a free port; nothing uses it (docs/operations.md#bigquery-locally).
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--port', type=int, required=True, help='REST port (127.0.0.1)')
    parser.add_argument('--data-dir', required=True, help='directory of the persistent DuckDB catalog')
    parser.add_argument('--project', required=True, help='default project id')
    parser.add_argument('--gcs-root', required=True, help='local directory gs:// URIs resolve under')
    args = parser.parse_args(argv)

    os.environ['BQEMU_ENABLE_FORMAT_EXTENSIONS'] = 'false'
    os.environ['BQEMU_GCS_LOCAL_ROOT'] = args.gcs_root
    os.environ.setdefault('BQEMU_LOG_LEVEL', 'warning')

    from bqemulator.cli import main as bqemulator_main
    from bqemulator.storage.engine import DuckDBEngine
    from bqemulator.versioning.snapshots import SnapshotManager
    DuckDBEngine._load_spatial = lambda self: None
    # Time travel's AUTO snapshots copy the whole table after every write (`CREATE TABLE ... AS SELECT *` per
    # insertAll): O(rows) per insert, so memory and CPU grow with the square of the rows; nothing here queries
    # FOR SYSTEM_TIME AS OF. Snapshots a user asks for (CREATE SNAPSHOT TABLE) are kept.
    capture = SnapshotManager.capture
    SnapshotManager.capture = lambda self, project_id, dataset_id, table_id, *, kind='AUTO': (  # type: ignore
        None if kind == 'AUTO' else capture(self, project_id, dataset_id, table_id, kind=kind))

    sys.argv = ['bqemulator', 'start', '--rest-host', '127.0.0.1', '--rest-port', str(args.port),
                '--grpc-host', '127.0.0.1', '--grpc-port', '0', '--data-dir', args.data_dir,
                '--project', args.project]
    bqemulator_main()


if __name__ == '__main__':
    main()
