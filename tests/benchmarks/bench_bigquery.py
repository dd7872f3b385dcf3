"""BigQuery sink into the local emulators: rows/s with streaming inserts and with file loads (a batch pipeline on
Prism writing N enriched events), the emulator's start time and its RSS. Starts its own BigQuery and Storage
emulators on free ports (launch.stack components) and stops them at the end.

    python -m tests.benchmarks.bench_bigquery [--rows 20000] [--methods streaming_inserts,file_loads]
"""
from __future__ import annotations

import argparse
import shutil
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from connectors.bigquery import clients, sink, tables
from launch.stack.bigquery import BigQuery, Storage
from launch.stack.processes import tree_rss_mb
from tests.conftest import private_config
from tests.connectors.bigquery.support import enriched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rows', type=int, default=20000)
    parser.add_argument('--methods', default='streaming_inserts,file_loads')
    args = parser.parse_args()
    cfg = private_config()
    storage, bigquery = Storage(cfg), BigQuery(cfg)
    try:
        storage.start()
        started = time.monotonic()
        bigquery.start()
        print(f'bigquery emulator: ready (incl. creating the tables) in {time.monotonic() - started:.1f} s, '
              f'RSS {tree_rss_mb(bigquery.proc.pid()):.0f} MB; storage emulator RSS '
              f'{tree_rss_mb(storage.proc.pid()):.0f} MB')
        rows = [enriched(i) for i in range(1, args.rows + 1)]
        for method in args.methods.split(','):
            dataset = f'bench_{method}'
            tables.ensure_tables(cfg.bq_project, dataset, cfg.bq_endpoint)
            started = time.monotonic()
            with beam.Pipeline(runner='PrismRunner', options=PipelineOptions([])) as p:
                (p | beam.Create(rows) | sink.WriteEventsToBigQuery(
                    cfg.bq_project, dataset, method=method, endpoint=cfg.bq_endpoint,
                    storage_endpoint=cfg.gcs_endpoint, temp_location=cfg.bq_temp_location))
            elapsed = time.monotonic() - started
            client = clients.gcp_client(cfg.bq_project, cfg.bq_endpoint)
            count = list(client.query(f'SELECT COUNT(*) AS n FROM {dataset}.events_enriched_raw').result())[0]['n']
            print(f'{method:<18} {count} rows in {elapsed:.1f} s = {count / elapsed:,.0f} rows/s (whole pipeline incl. '
                  f'Prism start); emulator RSS after: {tree_rss_mb(bigquery.proc.pid()):.0f} MB')
    finally:
        bigquery.stop()
        storage.stop()
        shutil.rmtree(cfg.state_dir, ignore_errors=True)


if __name__ == '__main__':
    main()
