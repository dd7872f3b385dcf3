"""The local API receiver as a client sees it: OAuth2 client credentials, idempotent per-event accounting that
survives a restart, statistics, fault injection switched at run time."""
from __future__ import annotations

import base64
import http.client
import subprocess
import sys
import time

import pytest

from tests.api_support import RECEIVER_SECRET, ReceiverProcess, batch, post_events

pytestmark = pytest.mark.integration


def test_token_by_form_or_basic_and_refusals(fresh):
    form = f'grant_type=client_credentials&client_id=engagement-local&client_secret={RECEIVER_SECRET}'
    status, headers, body = fresh.call('POST', '/oauth/token', raw=form.encode())
    assert status == 200 and body['token_type'] == 'Bearer' and body['expires_in'] == 300
    assert headers['Cache-Control'] == 'no-store'
    basic = base64.b64encode(f'engagement-local:{RECEIVER_SECRET}'.encode()).decode()
    status, _, body = fresh.call('POST', '/oauth/token', raw=b'grant_type=client_credentials',
                                 headers={'Authorization': f'Basic {basic}'})
    assert status == 200 and len(body['access_token']) > 20

    status, _, body = fresh.call('POST', '/oauth/token', raw=form.replace(RECEIVER_SECRET, 'wrong-secret').encode())
    assert (status, body) == (401, {'error': 'invalid_client'})
    status, _, body = fresh.call('POST', '/oauth/token', raw=form.replace('client_credentials', 'password').encode())
    assert (status, body) == (400, {'error': 'unsupported_grant_type'})
    assert fresh.stats()['tokens_issued'] == 2
    assert RECEIVER_SECRET not in fresh.log_file.read_text()


def test_events_need_a_valid_bearer_token(fresh):
    assert post_events(fresh, batch(1), 'made-up')[0] == 401
    status, headers, _ = fresh.call('POST', '/v1/events', batch(1))
    assert status == 401 and 'invalid_token' in headers['WWW-Authenticate']
    assert fresh.stats()['unauthorized'] == 2 and fresh.keys() == {}


def test_each_key_is_stored_once_and_duplicates_are_answered_idempotently(fresh):
    token = fresh.token()
    status, _, body = post_events(fresh, batch(1, 2, 2) + [{'event': {'id': 9}}, {'idempotency_key': '3'}], token)
    assert status == 200
    assert [(r['idempotency_key'], r['status']) for r in body['results']] == [
        ('1', 'accepted'), ('2', 'accepted'), ('2', 'duplicate'), (None, 'rejected'), ('3', 'rejected')]
    assert (body['accepted'], body['duplicates'], body['rejected']) == (2, 1, 2)
    status, _, body = post_events(fresh, batch(2, 4, key_type=int), token)  # integer keys are the same keys
    assert [r['status'] for r in body['results']] == ['duplicate', 'accepted']
    assert fresh.keys() == {'1': 1, '2': 3, '4': 1}
    assert fresh.get('/v1/events/keys?key=2&key=3&key=4') == {'count': 2, 'keys': {'2': 3, '4': 1}}
    assert fresh.get('/v1/events/keys?key=') == {'count': 0, 'keys': {}}
    stats = fresh.stats()
    assert (stats['accepted_events'], stats['duplicates'], stats['rejected'], stats['requests']) == (3, 2, 2, 2)


def test_a_batch_that_is_not_a_list_or_too_large_is_refused(fresh):
    token = fresh.token()
    assert post_events(fresh, {'events': []}, token)[0] == 400
    assert post_events(fresh, batch(*range(1001)), token)[0] == 413
    assert fresh.keys() == {}


def test_injected_errors_record_nothing_and_are_counted(fresh):
    token = fresh.token()
    fresh.set_faults(error_rate=1.0, status=502)
    assert post_events(fresh, batch(1, 2), token, 'req-a')[0] == 502
    fresh.set_faults(rate_limit_rate=1.0, retry_after=7)
    status, headers, _ = post_events(fresh, batch(1, 2), token, 'req-a')
    assert (status, headers['Retry-After']) == (429, '7')
    fresh.set_faults(timeout_rate=1.0, timeout_seconds=0.3)
    started = time.monotonic()
    assert post_events(fresh, batch(1, 2), token, 'req-a')[0] == 504
    assert time.monotonic() - started >= 0.3
    assert fresh.keys() == {}
    fresh.set_faults()
    assert post_events(fresh, batch(1, 2), token, 'req-a')[0] == 200
    stats = fresh.stats()
    assert stats['injected'] == {'down': 0, 'rate_limit': 1, 'error': 1, 'timeout': 1, 'lost_response': 0,
                                 'total': 3}
    assert stats['max_calls_per_request'] == 4 and stats['accepted_events'] == 2
    assert post_events(fresh, batch(3), token, 'req-b')[0] == 200
    assert fresh.stats()['calls_per_request'] == {'1': 1, '4': 1}


def test_a_lost_response_was_recorded_and_the_retry_is_a_duplicate(fresh):
    token = fresh.token()
    fresh.set_faults(lost_response_rate=1.0)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        post_events(fresh, batch(5), token)
    assert fresh.keys() == {'5': 1}
    fresh.set_faults()
    assert post_events(fresh, batch(5), token)[2]['results'] == [{'idempotency_key': '5', 'status': 'duplicate'}]


def test_down_drops_every_connection_until_switched_back(fresh):
    token = fresh.token()
    fresh.set_faults(down=True)
    for path, body in (('/v1/events', batch(1)), ('/oauth/token', None)):
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            fresh.call('POST', path, body, headers={'Authorization': f'Bearer {token}'})
    assert fresh.get('/health')['faults']['down'] is True
    fresh.set_faults()
    assert post_events(fresh, batch(1), token)[0] == 200


def test_latency_and_seeded_draws(fresh):
    token = fresh.token()
    fresh.set_faults(latency_ms=300)
    started = time.monotonic()
    assert post_events(fresh, batch(1), token)[0] == 200
    assert time.monotonic() - started >= 0.3

    def statuses():
        return [post_events(fresh, batch(1), token)[0] for _ in range(20)]
    fresh.set_faults(error_rate=0.5, seed=42)
    first = statuses()
    fresh.set_faults(error_rate=0.5, seed=42)
    assert statuses() == first and set(first) == {200, 503}


@pytest.mark.parametrize('faults, complaint', [
    ({'error_rate': 1.5}, 'error_rate=1.5: expected a number in 0..1'),
    ({'status': 404}, 'status=404: expected a 5xx status code'),
    ({'errors': 0.1}, "unknown fault settings ['errors']"),
    ({'error_rate': 0.6, 'timeout_rate': 0.6}, 'must not exceed 1'),
])
def test_bad_fault_settings_are_refused_naming_the_setting(fresh, faults, complaint):
    status, _, body = fresh.call('POST', '/admin/faults', faults)
    assert status == 400 and complaint in body['error_description']
    assert fresh.get('/admin/faults')['error_rate'] == 0


def test_keys_survive_a_restart_tokens_do_not():
    with ReceiverProcess() as r:
        token = r.token()
        post_events(r, batch(1, 2), token)
        r.stop()
        r.start()
        assert r.keys() == {'1': 1, '2': 1}
        assert post_events(r, batch(2), token)[0] == 401
        assert post_events(r, batch(2), r.token())[2]['results'][0]['status'] == 'duplicate'


def test_binds_to_loopback_only(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'launch.standins.api_receiver', '--host', '0.0.0.0', '--port', '0',
                           '--state-dir', str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        'error: --host 0.0.0.0: the receiver binds to a loopback address only (127.0.0.1)'
