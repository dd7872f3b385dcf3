"""The emulator client Beam's sink gets as `test_client`."""
from __future__ import annotations

import pickle

from connectors.bigquery import clients


def test_emulator_client_pickles_as_its_addresses():
    client = clients.EmulatorClient('http://127.0.0.1:1/', 'p', 'http://127.0.0.1:2')
    copy = pickle.loads(pickle.dumps(client))
    assert (copy.endpoint, copy.project, copy.storage_endpoint) == ('http://127.0.0.1:1', 'p', 'http://127.0.0.1:2')
    assert copy._v2 is None and copy.test_clock() > 0
