"""The components `storage` (Cloud Storage emulator, where BigQuery file loads stage their files) and `bigquery`
(the BigQuery emulator through launch/standins/bigquery_emulator.py), both run from their own virtualenv
$ENGAGEMENT_HOME/bq-venv; `bigquery` creates the dataset, tables and views of connectors/bigquery/tables.py on start.
"""
from __future__ import annotations

import urllib.error
from pathlib import Path

from launch.stack.component import Component, StackError, http_json, wait_ready
from launch.stack.config import StackConfig

EMULATOR_LAUNCHER = Path(__file__).resolve().parents[1] / 'standins' / 'bigquery_emulator.py'


def _bq_venv_bin(cfg: StackConfig, program: str) -> str:
    from launch.stack.install import bq_venv
    path = bq_venv(cfg.home) / 'bin' / program
    if not path.exists():
        raise StackError(f'{path} not found: run `make install` (it installs the BigQuery and GCS emulators).')
    return str(path)


class Storage(Component):
    """Cloud Storage emulator (PyPI gcp-storage-emulator): where BigQuery file loads stage their files. Its files
    live under <dir>/.cloudstorage/<bucket>/..., which the BigQuery emulator reads gs:// URIs from."""
    name = 'storage'
    port_settings = ('gcs_port',)

    @property
    def root(self) -> Path:
        return self.dir / '.cloudstorage'

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc.spawn([_bq_venv_bin(self.cfg, 'gcp-storage-emulator'), '--data-dir', str(self.dir), 'start',
                         '--host', '127.0.0.1', '--port', str(self.cfg.gcs_port),
                         '--default-bucket', self.cfg.gcs_temp_bucket, '--quiet'])
        wait_ready(f'bucket {self.cfg.gcs_temp_bucket}', self.proc, self._bucket)

    def _bucket(self) -> bool:
        return http_json(f'{self.cfg.gcs_endpoint}/storage/v1/b/{self.cfg.gcs_temp_bucket}',
                         timeout=1)['name'] == self.cfg.gcs_temp_bucket

    def health(self):
        rows = super().health()
        if rows[0][1]:
            try:
                rows.append((f'bucket {self.cfg.gcs_temp_bucket}', self._bucket(), 'present'))
            except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                rows.append((f'bucket {self.cfg.gcs_temp_bucket}', False, f'{type(exc).__name__}: {exc}'))
        return rows


class BigQuery(Component):
    """BigQuery emulator (PyPI bqemulator, launch/standins/bigquery_emulator.py); on start, the dataset, tables
    and views of connectors/bigquery/tables.py are created where missing."""
    name = 'bigquery'
    port_settings = ('bq_port',)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc.spawn([_bq_venv_bin(self.cfg, 'python'), str(EMULATOR_LAUNCHER),
                         '--port', str(self.cfg.bq_port), '--data-dir', str(self.dir / 'data'),
                         '--project', self.cfg.bq_project, '--gcs-root', str(Storage(self.cfg).root)])
        wait_ready('GET /readyz', self.proc,
                   lambda: http_json(f'{self.cfg.bq_endpoint}/readyz', timeout=1)['status'] == 'ok')
        from connectors.bigquery.tables import ensure_tables
        try:
            ensure_tables(self.cfg.bq_project, self.cfg.bq_dataset, self.cfg.bq_endpoint)
        except Exception as exc:  # the emulator answered but refused the DDL: say which and where its log is
            raise StackError(f'bigquery: creating the tables failed ({type(exc).__name__}: {exc}); '
                             f'see {self.proc.log_file}') from None

    def table_rows(self) -> dict[str, int]:
        """numRows of every table and view of the dataset, from the emulator's catalog."""
        base = f'{self.cfg.bq_endpoint}/bigquery/v2/projects/{self.cfg.bq_project}/datasets/{self.cfg.bq_dataset}'
        listed = http_json(f'{base}/tables', timeout=2).get('tables') or []
        out = {}
        for entry in listed:
            name = entry['tableReference']['tableId']
            if entry.get('type') == 'VIEW':
                continue
            out[name] = int(http_json(f'{base}/tables/{name}', timeout=2).get('numRows') or 0)
        return out

    def health(self):
        rows = super().health()
        if rows[0][1]:
            try:
                counts = self.table_rows()
                rows.append((f'dataset {self.cfg.bq_dataset}', bool(counts),
                             ', '.join(f'{t}={n} rows' for t, n in counts.items()) or 'no tables'))
            except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                rows.append((f'dataset {self.cfg.bq_dataset}', False, f'{type(exc).__name__}: {exc}'))
        return rows
