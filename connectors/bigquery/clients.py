"""BigQuery clients: Application Default Credentials for real BigQuery, or anonymous ones for a local emulator.

`EmulatorClient` is what Beam's BigQuery sink gets as `test_client` with `--bq_endpoint`: apitools' `BigqueryV2`
without credentials plus `insert_rows_json` through `google.cloud.bigquery`. No credential lookup, OAuth flow or
metadata-server wait can start (`activate_local_gcp`); Cloud Storage goes to the storage emulator through
`STORAGE_EMULATOR_HOST`. The client pickles as its addresses and is rebuilt lazily on each worker.
"""
from __future__ import annotations

import os
import time

_EMULATOR_INSERT_DEADLINE_S = 60.0  # the client library's default retries a 500 for 600 s


def activate_local_gcp(storage_endpoint: str | None) -> None:
    """Make this process talk to local emulators without credentials (see the module docstring). Idempotent."""
    os.environ['NO_GCE_CHECK'] = 'True'
    if storage_endpoint:
        os.environ['STORAGE_EMULATOR_HOST'] = storage_endpoint
    from apache_beam.internal.gcp import auth
    with auth._Credentials._credentials_lock:
        if not auth._Credentials._credentials_init:
            auth._Credentials._credentials = None
            auth._Credentials._credentials_init = True


class EmulatorClient:
    """Beam's `test_client` for a BigQuery emulator: apitools' BigqueryV2 without credentials (tables, jobs, ...)
    plus `insert_rows_json` (what Beam's streaming inserts call) and `test_clock` (what file loads call). Built
    lazily in each worker; pickles as its three addresses."""

    def __init__(self, endpoint: str, project: str, storage_endpoint: str | None = None):
        self.endpoint = endpoint.rstrip('/')
        self.project = project
        self.storage_endpoint = storage_endpoint
        self._v2 = None
        self._gcp = None

    def __getstate__(self):
        return {'endpoint': self.endpoint, 'project': self.project, 'storage_endpoint': self.storage_endpoint}

    def __setstate__(self, state):
        self.__init__(**state)

    def _apitools(self):
        if self._v2 is None:
            activate_local_gcp(self.storage_endpoint)
            from apache_beam.io.gcp.internal.clients import bigquery as bigquery_v2
            self._v2 = bigquery_v2.BigqueryV2(url=f'{self.endpoint}/bigquery/v2/', get_credentials=False)
        return self._v2

    def __getattr__(self, name):
        if name.startswith('_'):
            raise AttributeError(name)
        return getattr(self._apitools(), name)

    def insert_rows_json(self, table, json_rows, row_ids=None, timeout=None, **kwargs):
        from google.api_core.retry import Retry
        if self._gcp is None:
            self._gcp = gcp_client(self.project, self.endpoint)
        return self._gcp.insert_rows_json(table, json_rows, row_ids=row_ids, timeout=timeout,
                                          retry=Retry(deadline=_EMULATOR_INSERT_DEADLINE_S), **kwargs)

    def test_clock(self) -> float:
        return time.time()


def gcp_client(project: str, endpoint: str | None):
    """A google.cloud.bigquery Client: anonymous against `endpoint`, Application Default Credentials without."""
    from google.cloud import bigquery
    if not endpoint:
        return bigquery.Client(project=project)
    activate_local_gcp(None)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=endpoint.rstrip('/')))
