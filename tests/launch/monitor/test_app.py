"""The query API over a real Redis holding the read model as the pipeline writes it: top contents, one content
over windows, totals; API keys, the rate limit per client, validation errors that name the parameter, Redis down
as 503; /health naming what is down; the API reference with cURL examples."""
from __future__ import annotations

import html

import pytest
import redis
from fastapi.testclient import TestClient

from launch.monitor.app import RateLimiter, Settings, create_app, parse_api_keys
from launch.monitor.probes import Targets
from launch.monitor.readmodel import window_start
from tests.conftest import free_ports

KEY = 'test-query-key-0123456789'
NOW_WINDOW = 'current'
VIDEO_A, VIDEO_B, PODCAST = ('0a0a0a0a-0000-4000-8000-00000000000a', '0b0b0b0b-0000-4000-8000-00000000000b',
                             '0c0c0c0c-0000-4000-8000-00000000000c')


def targets(redis_url: str, **more) -> Targets:
    dead = free_ports(1)[0]   # nothing listens there
    return Targets(kafka_bootstrap=f'127.0.0.1:{dead}', pg_dsn=f'host=127.0.0.1 port={dead} dbname=x user=x',
                   redis_url=redis_url, group='g', topics=('t',), **more)


def write_pane(r, prefix, start, content_id, content_type, title, play, click, engagement_seconds='1.5'):
    """A pane as the pipeline's Lua script leaves it (docs/pipeline.md, Redis data model)."""
    events = play + click
    r.hset(f'{prefix}:stats:{start}:{content_id}', mapping={
        'events': events, 'play': play, 'pause': 0, 'finish': 0, 'click': click,
        'engagement_seconds': engagement_seconds, 'title': title, 'content_type': content_type, 'pane_us': 1})
    r.zadd(f'{prefix}:top:{start}:{content_type}', {content_id: events})
    r.zadd(f'{prefix}:top:{start}:all', {content_id: events})
    r.hincrby(f'{prefix}:totals:{start}', 'events', events)
    r.hincrby(f'{prefix}:totals:{start}', 'play', play)
    r.hincrby(f'{prefix}:totals:{start}', 'click', click)


@pytest.fixture
def api(redis_only, request):
    prefix = f'monitor-{request.node.name[:20]}'
    r = redis.Redis.from_url(redis_only.redis_url, decode_responses=True)
    now = window_start(__import__('time').time(), 60)
    write_pane(r, prefix, now, VIDEO_A, 'video', 'A', play=5, click=1)
    write_pane(r, prefix, now, VIDEO_B, 'video', 'B', play=9, click=0, engagement_seconds='12.25')
    write_pane(r, prefix, now, PODCAST, 'podcast', 'P', play=2, click=0)
    write_pane(r, prefix, now - 60, VIDEO_A, 'video', 'A', play=1, click=0)
    settings = Settings(targets(redis_only.redis_url), {KEY: 'tester'}, redis_prefix=prefix, rate_per_second=1000,
                        burst=1000, probe_timeout_s=1.0)
    with TestClient(create_app(settings)) as client:
        client.headers['X-API-Key'] = KEY
        client.window = now
        yield client
    r.close()


@pytest.mark.integration
def test_top_contents_of_the_current_window_per_type(api):
    body = api.get('/v1/top', params={'content_type': 'video', 'n': 10}).json()
    assert body['window_start'] == api.window and body['window_end'] == api.window + 60
    assert [(t['rank'], t['content_id'], t['events'], t['title']) for t in body['top']] == [
        (1, VIDEO_B, 9, 'B'), (2, VIDEO_A, 6, 'A')]
    assert body['top'][0]['engagement_seconds'] == 12.25
    everything = api.get('/v1/top', params={'n': 2}).json()['top']
    assert [t['content_id'] for t in everything] == [VIDEO_B, VIDEO_A]
    previous = api.get('/v1/top', params={'window': 'previous'}).json()
    assert [t['content_id'] for t in previous['top']] == [VIDEO_A] and previous['window_start'] == api.window - 60


@pytest.mark.integration
def test_one_content_over_windows_and_the_totals(api):
    body = api.get(f'/v1/contents/{VIDEO_A.upper()}/stats', params={'windows': 3}).json()
    assert body['content_id'] == VIDEO_A
    assert [(w['window_start'], w['events']) for w in body['windows']] == [(api.window, 6), (api.window - 60, 1)]
    totals = api.get('/v1/totals', params={'window': str(api.window + 59)}).json()   # any time in the window
    assert totals['window_start'] == api.window
    assert (totals['events'], totals['play'], totals['click'], totals['pause']) == (17, 16, 1, 0)


@pytest.mark.integration
@pytest.mark.parametrize('path, params, message', [
    ('/v1/top', {'n': 0}, 'n: Input should be greater than or equal to 1'),
    ('/v1/top', {'content_type': 'music'}, 'content_type: Input should be'),
    ('/v1/top', {'window': 'yesterday'}, 'window: String should match pattern'),
    ('/v1/contents/not-a-uuid/stats', {}, 'content_id: String should match pattern'),
    ('/v1/contents/' + VIDEO_A + '/stats', {'windows': 5000}, 'windows: Input should be less than or equal'),
])
def test_bad_parameters_are_422_naming_the_parameter(api, path, params, message):
    response = api.get(path, params=params)
    assert response.status_code == 422 and response.json()['error'] == 'invalid_parameter'
    assert message in response.json()['message']


@pytest.mark.integration
def test_no_key_or_an_unknown_key_is_401_and_the_key_is_not_echoed(api):
    assert api.get('/v1/top', headers={'X-API-Key': ''}).status_code == 401
    response = api.get('/v1/totals', headers={'X-API-Key': 'guess-guess-guess-guess'})
    assert response.status_code == 401 and 'guess' not in response.text
    assert response.json()['error'] == 'unauthorized'


def test_the_rate_limit_is_a_token_bucket_per_client():
    now = [0.0]
    limiter = RateLimiter(rate=2, burst=3, clock=lambda: now[0])
    assert [limiter.wait_seconds('a') for _ in range(3)] == [0, 0, 0]
    assert limiter.wait_seconds('a') == pytest.approx(0.5)
    assert limiter.wait_seconds('b') == 0                     # another client has its own bucket
    now[0] += 0.5
    assert limiter.wait_seconds('a') == 0 and limiter.wait_seconds('a') > 0


@pytest.mark.integration
def test_too_many_requests_are_429_with_retry_after(redis_only):
    settings = Settings(targets(redis_only.redis_url), {KEY: 'tester'}, rate_per_second=0.1, burst=2)
    with TestClient(create_app(settings)) as client:
        statuses = [client.get('/v1/totals', headers={'X-API-Key': KEY}) for _ in range(3)]
    assert [s.status_code for s in statuses] == [200, 200, 429]
    assert statuses[2].headers['Retry-After'] == '10' and statuses[2].json()['error'] == 'rate_limited'


def test_redis_down_is_503_and_health_names_what_is_down():
    dead = free_ports(1)[0]
    settings = Settings(targets(f'redis://127.0.0.1:{dead}/0'), {KEY: 'tester'}, probe_timeout_s=1.0)
    with TestClient(create_app(settings)) as client:
        response = client.get('/v1/totals', headers={'X-API-Key': KEY})
        assert response.status_code == 503 and response.json()['error'] == 'unavailable'
        health = client.get('/health')
        assert client.get('/health/live').status_code == 200
    assert health.status_code == 503
    body = health.json()
    assert body['status'] == 'not_ready' and body['down'] == ['kafka', 'postgres', 'redis']
    assert not body['checks']['redis']['ok'] and 'ConnectionError' in body['checks']['redis']['detail']


def test_the_openapi_document_and_the_reference_page():
    settings = Settings(targets('redis://127.0.0.1:1/0'), {KEY: 'tester'})
    with TestClient(create_app(settings)) as client:
        spec = client.get('/openapi.json').json()
        page = html.unescape(client.get('/docs').text)
    assert spec['openapi'].startswith('3.') and spec['components']['securitySchemes']['APIKeyHeader']['in'] == 'header'
    assert {'/v1/top', '/v1/totals', '/v1/contents/{content_id}/stats', '/health', '/metrics'} <= set(spec['paths'])
    assert set(spec['paths']['/v1/top']['get']['responses']) >= {'200', '401', '422', '429', '503'}
    assert ("curl -s -H \"X-API-Key: $ENGAGEMENT_QUERY_API_KEY\" "
            "'http://127.0.0.1:18095/v1/top?content_type=video&n=10&window=current'") in page
    assert "curl -s 'http://127.0.0.1:18095/health'" in page and '<script' not in page


def test_api_keys_come_as_client_colon_key_and_errors_never_show_a_key():
    assert parse_api_keys('web:0123456789abcdef, ops:fedcba9876543210') == {
        '0123456789abcdef': 'web', 'fedcba9876543210': 'ops'}
    with pytest.raises(ValueError) as err:
        parse_api_keys('web:0123456789abcdef,ops:short-key')
    assert 'entry 2' in str(err.value) and 'short-key' not in str(err.value)


@pytest.mark.integration
def test_the_live_page_and_its_summary(api):
    page = api.get('/', headers={'X-API-Key': ''})
    assert page.status_code == 200 and "fetch('/ui/summary'" in page.text and '<script src' not in page.text
    summary = api.get('/ui/summary', headers={'X-API-Key': ''}).json()   # no key needed, like /health
    assert summary['window_start'] == api.window
    assert [row['content_id'] for row in summary['top']['video']] == [VIDEO_B, VIDEO_A]
    assert [row['content_id'] for row in summary['top']['podcast']] == [PODCAST] and summary['top']['newsletter'] == []
    assert summary['pipeline_up'] is False and summary['read_per_s'] is None and summary['consumer_lag'] is None


@pytest.mark.integration
def test_a_users_recent_contents_and_seconds_as_the_sink_wrote_them(api, redis_only, request):
    from tests.connectors.test_redis_users import CONTENTS, USER, event, write
    write(redis_only, [event(1, 0, 'video', 1500), event(2, 1, 'podcast', 250), event(3, 0, 'video', 500)],
          f'monitor-{request.node.name[:20]}')
    body = api.get(f'/v1/users/{USER.upper()}').json()
    assert [r['content_id'] for r in body['recent']] == [CONTENTS[0], CONTENTS[1]]
    assert body['engagement_seconds'] == {'video': 2.0, 'podcast': 0.25}
    unknown = api.get('/v1/users/' + '1' * 8 + '-1111-4111-8111-' + '1' * 12).json()
    assert unknown['recent'] == [] and unknown['engagement_seconds'] == {}
    assert api.get('/v1/users/nobody').status_code == 422
