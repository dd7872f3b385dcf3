"""WriteContentStatsToRedis against a real Redis of the stack (fixture `redis_only`): the data model, idempotent
re-fired panes, exact totals, dead letters, outages, and one run inside a Beam pipeline (Prism)."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import socket
import threading
import time

import apache_beam as beam
import prometheus_client
import pytest
import redis
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.display import DisplayData
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PANE_INFO_UNKNOWN

from connectors.redis import (
    RedisSinkUnavailable,
    UpsertContentStatsFn,
    WriteContentStatsToRedis,
    redact_url,
)
from connectors.redis_script import exact_seconds
from tests.dofn_support import run_bundles

W = 1_764_000_000  # a window start, epoch seconds UTC
COUNTERS = ('events', 'play', 'pause', 'finish', 'click')


@dataclasses.dataclass(frozen=True)
class Stats:
    """Stands in for schemas.ContentWindowStats (same fields)."""
    window_start: int
    window_end: int
    content_id: str
    content_type: str
    title: str
    events: int
    play: int
    pause: int
    finish: int
    click: int
    engagement_ms: int
    pane_timing: str = 'UNKNOWN'
    newest_ingest_ms: int | None = None


def pane(content_id='c1', content_type='video', play=0, pause=0, finish=0, click=0, engagement_ms=0,
         window_start=W, title=None, **overrides) -> Stats:
    values = dict(window_start=window_start, window_end=window_start + 60, content_id=content_id,
                  content_type=content_type, title=title or f'Title of {content_id}', play=play, pause=pause,
                  finish=finish, click=click, events=play + pause + finish + click, engagement_ms=engagement_ms)
    values.update(overrides)
    return Stats(**values)


@pytest.fixture
def r(redis_only):
    client = redis.Redis.from_url(redis_only.redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


def write_bundles(url, *bundles, **options):
    """Drive the DoFn as a runner would: setup once, then one start/process/finish cycle per bundle (a callable
    in place of a bundle is called between bundles). Returns (written elements, dead letters)."""
    fn = UpsertContentStatsFn(**{**dict(redis_url=url, prefix='engagement', ttl_seconds=86400, batch_size=500,
                                        max_attempts=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.05,
                                        socket_timeout_seconds=2.0), **options})
    return run_bundles(fn, bundles, Timestamp(W))


def snapshot(client, prefix='engagement'):
    """Every key under the prefix with its value (hash, zset with scores)."""
    out = {}
    for key in sorted(client.scan_iter(f'{prefix}:*')):
        kind = client.type(key)
        if kind == 'hash':
            out[key] = {f: v for f, v in client.hgetall(key).items() if f != 'pane_us'}  # bookkeeping, not data
        else:
            out[key] = client.zrange(key, 0, -1, withscores=True)
    return out


def assert_totals_match_contents(client, window_start=W, prefix='engagement'):
    sums = dict.fromkeys(COUNTERS, 0)
    for key in client.scan_iter(f'{prefix}:stats:{window_start}:*'):
        for field, value in client.hgetall(key).items():
            if field in sums:
                sums[field] += int(value)
    assert {k: int(v) for k, v in client.hgetall(f'{prefix}:totals:{window_start}').items()} == sums


def test_a_pane_writes_exactly_the_data_model(r, redis_only):
    stats = pane('c1', 'video', play=3, pause=2, finish=1, click=4, engagement_ms=1234567, title='Ünïcode: a title')

    written, dead = write_bundles(redis_only.redis_url, [stats])

    assert written == [stats] and dead == []
    assert snapshot(r) == {
        f'engagement:stats:{W}:c1': {'events': '10', 'play': '3', 'pause': '2', 'finish': '1', 'click': '4',
                                     'engagement_seconds': '1234.567', 'title': 'Ünïcode: a title',
                                     'content_type': 'video'},
        f'engagement:top:{W}:video': [('c1', 10.0)],
        f'engagement:top:{W}:all': [('c1', 10.0)],
        f'engagement:totals:{W}': {'events': '10', 'play': '3', 'pause': '2', 'finish': '1', 'click': '4'},
    }
    for key in snapshot(r):
        assert 86390 < r.ttl(key) <= 86400, key


def test_prefix_and_ttl_are_honoured(r, redis_only):
    write_bundles(redis_only.redis_url, [pane('c1')], prefix='other', ttl_seconds=120)

    assert sorted(r.keys('*')) == sorted([f'other:stats:{W}:c1', f'other:top:{W}:video', f'other:top:{W}:all',
                                          f'other:totals:{W}'])
    assert all(110 < r.ttl(key) <= 120 for key in r.keys('*'))


def test_writing_the_same_pane_again_changes_nothing(r, redis_only):
    a, b = pane('c1', play=5, click=2, engagement_ms=900), pane('c2', 'podcast', finish=4)
    write_bundles(redis_only.redis_url, [a, b])
    once = snapshot(r)

    write_bundles(redis_only.redis_url, [a, a], [b, a, b])  # replayed within a bundle and across bundles

    assert snapshot(r) == once
    assert r.hgetall(f'engagement:totals:{W}') == {'events': '11', 'play': '5', 'pause': '0', 'finish': '4',
                                                   'click': '2'}


def test_a_later_accumulated_pane_replaces_the_earlier_one_and_totals_sum_over_contents(r, redis_only):
    early = [pane('v1', 'video', play=1), pane('p1', 'podcast', play=2), pane('n1', 'newsletter', click=1)]
    late = [pane('v1', 'video', play=4, pause=1, finish=1, engagement_ms=61_500),
            pane('p1', 'podcast', play=2, finish=2, engagement_ms=10),
            pane('v2', 'video', play=7, click=3)]

    write_bundles(redis_only.redis_url, early[:2], [early[2], late[0]], late[1:])

    assert snapshot(r)[f'engagement:stats:{W}:v1'] == {
        'events': '6', 'play': '4', 'pause': '1', 'finish': '1', 'click': '0', 'engagement_seconds': '61.5',
        'title': 'Title of v1', 'content_type': 'video'}
    assert r.hgetall(f'engagement:totals:{W}') == {'events': '21', 'play': '13', 'pause': '1', 'finish': '3',
                                                   'click': '4'}
    assert_totals_match_contents(r)
    assert r.zrange(f'engagement:top:{W}:video', 0, -1, desc=True, withscores=True) == [('v2', 10.0), ('v1', 6.0)]
    assert r.zrange(f'engagement:top:{W}:podcast', 0, -1, withscores=True) == [('p1', 4.0)]
    assert r.zrange(f'engagement:top:{W}:newsletter', 0, -1, withscores=True) == [('n1', 1.0)]
    assert r.zrange(f'engagement:top:{W}:all', 0, -1, desc=True, withscores=True) == [
        ('v2', 10.0), ('v1', 6.0), ('p1', 4.0), ('n1', 1.0)]


def test_the_kafka_to_redis_latency_is_observed_once_per_pane_that_says_something_new(r, redis_only):
    def observed():
        get = prometheus_client.REGISTRY.get_sample_value
        return (get('engagement_event_to_redis_seconds_count') or 0, get('engagement_event_to_redis_seconds_sum') or 0)
    count, total = observed()
    newest = int((time.time() - 0.5) * 1000)              # its newest event reached Kafka half a second ago
    first, more = pane('c1', play=1, newest_ingest_ms=newest), pane('c1', play=2, newest_ingest_ms=newest + 100)

    write_bundles(redis_only.redis_url, [first], [first], [pane('c2', play=1)], [more])

    now_count, now_total = observed()
    assert now_count - count == 2                          # the repeated pane and the one without a stamp: not
    assert 0.9 <= now_total - total < 10                  # 0.5 s and 0.4 s, plus the time to write them


def test_windows_are_kept_apart(r, redis_only):
    write_bundles(redis_only.redis_url, [pane('c1', play=2), pane('c1', play=5, window_start=W + 60)])

    assert r.hget(f'engagement:totals:{W}', 'events') == '2'
    assert r.hget(f'engagement:totals:{W + 60}', 'events') == '5'
    assert r.zscore(f'engagement:top:{W + 60}:all', 'c1') == 5.0


def test_an_older_pane_landing_after_a_newer_one_changes_nothing(r, redis_only):
    # Batches retried after an outage land in any order: the pane with fewer distinct events must not win.
    newer, older = pane('c1', play=9), pane('c1', play=3)
    write_bundles(redis_only.redis_url, [pane('c2', click=1), newer], [older])

    assert r.hget(f'engagement:stats:{W}:c1', 'events') == '9'
    assert r.hget(f'engagement:totals:{W}', 'events') == '10'
    assert_totals_match_contents(r)


def test_of_two_panes_with_as_many_events_the_one_received_later_wins_whatever_the_write_order(r, redis_only):
    from connectors.redis_script import WRITE_STATS_LUA, script_call
    first, second = pane('c1', play=2, engagement_ms=100), pane('c1', pause=2, engagement_ms=700)
    script = r.register_script(WRITE_STATS_LUA)
    for stats, received_us in ((second, 2_000), (first, 1_000)):   # written in the wrong order
        keys, args = script_call(stats, 'engagement', 86400, pane_us=received_us)
        script(keys=keys, args=args)

    assert r.hget(f'engagement:stats:{W}:c1', 'pause') == '2'
    assert r.hget(f'engagement:stats:{W}:c1', 'engagement_seconds') == '0.7'
    assert_totals_match_contents(r)


def test_a_content_whose_type_changed_moves_to_its_new_top_set(r, redis_only):
    write_bundles(redis_only.redis_url, [pane('c1', 'video', play=2)], [pane('c1', 'podcast', play=3)])

    assert r.zrange(f'engagement:top:{W}:video', 0, -1) == []
    assert r.zrange(f'engagement:top:{W}:podcast', 0, -1, withscores=True) == [('c1', 3.0)]
    assert r.hget(f'engagement:stats:{W}:c1', 'content_type') == 'podcast'


@pytest.mark.parametrize('ms, seconds', [(1234567, '1234.567'), (1, '0.001'), (10, '0.01'), (4350, '4.35'),
                                         (2000, '2'), (0, '0'), (999, '0.999'),
                                         (9_007_199_254_740_993, '9007199254740.993')])
def test_engagement_seconds_is_exact(ms, seconds):
    assert exact_seconds(ms) == seconds


def test_invalid_elements_become_dead_letters_and_the_rest_is_written(r, redis_only):
    good = pane('ok')
    bad = [pane('b1', events=None), pane('b2', content_type=''), pane('b3', play=-1), object()]

    written, dead = write_bundles(redis_only.redis_url, [bad[0], good, *bad[1:]])

    assert written == [good]
    assert [(d.stage, d.reason) for d in dead] == [('redis', 'invalid_stats')] * 4
    assert 'events=None' in dead[0].error
    assert json.loads(dead[0].payload)['content_id'] == 'b1'
    assert r.keys(f'engagement:stats:{W}:b*') == []


def test_a_pane_redis_rejects_becomes_a_dead_letter_and_the_batch_goes_on(r, redis_only):
    r.set(f'engagement:stats:{W}:clash', 'someone else wrote a string here')
    good, clash = pane('ok', play=2), pane('clash', play=5)

    written, dead = write_bundles(redis_only.redis_url, [clash, good])

    assert written == [good]
    assert [(d.stage, d.reason) for d in dead] == [('redis', 'redis_rejected')]
    assert 'WRONGTYPE' in dead[0].error and dead[0].attempts == 1
    assert r.hgetall(f'engagement:totals:{W}')['events'] == '2'  # the rejected pane left nothing behind


def test_script_cache_loss_is_recovered(r, redis_only):
    fn = UpsertContentStatsFn(redis_only.redis_url, 'engagement', 86400, 500, 3, 0.01, 0.05, 2.0)
    fn.setup()
    for stats, flush in ((pane('c1', play=1), False), (pane('c1', play=4), True)):
        if flush:
            r.script_flush()
        fn.start_bundle()
        list(fn.process(stats, Timestamp(W), GlobalWindow(), PANE_INFO_UNKNOWN))
        assert [wv.value for wv in fn.finish_bundle()] == [stats]
    fn.teardown()

    assert r.hget(f'engagement:totals:{W}', 'events') == '4'


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_unreachable_redis_fails_after_bounded_retries_and_never_shows_the_password(caplog):
    url = f'redis://reader:s3cr%40t@127.0.0.1:{_closed_port()}/0?password=qu3ry'
    caplog.set_level(logging.WARNING)
    started = time.monotonic()

    with pytest.raises(RedisSinkUnavailable) as failure:
        write_bundles(url, [pane('c1')], max_attempts=4)

    message = str(failure.value)
    assert 'after 4 attempts' in message and 'reader:***@127.0.0.1' in message and 'Is Redis running?' in message
    assert time.monotonic() - started < 5
    logged = caplog.text
    assert logged.count('redis_write_retry') == 3
    assert logged.count(f'"first_pane": "{W}/c1"') == 4     # the pane's key: its correlation id in the logs
    for secret in ('s3cr', 'qu3ry'):
        assert secret not in message and secret not in logged


def test_wrong_credentials_fail_at_once_without_retries(redis_only, caplog):
    url = redis_only.redis_url.replace('redis://', 'redis://nobody:hunter2@')
    caplog.set_level(logging.WARNING)

    with pytest.raises(RedisSinkUnavailable, match='credentials') as failure:
        write_bundles(url, [pane('c1')], max_attempts=5)

    assert 'hunter2' not in str(failure.value) and 'redis_write_retry' not in caplog.text


def test_a_redis_out_of_memory_is_waited_out(r, redis_only, caplog):
    r.config_set('maxmemory', 1)  # every write is now refused with OOM
    relief = threading.Timer(0.3, lambda: r.config_set('maxmemory', 0))
    caplog.set_level(logging.WARNING)
    try:
        relief.start()
        written, dead = write_bundles(redis_only.redis_url, [pane('c1', play=2)], max_attempts=8,
                                      initial_backoff_seconds=0.1, max_backoff_seconds=0.3)
        relief.join()
    finally:
        relief.cancel()
        r.config_set('maxmemory', 0)

    assert written == [pane('c1', play=2)] and dead == []
    assert 'OutOfMemoryError' in caplog.text
    assert r.hget(f'engagement:totals:{W}', 'events') == '2'


def test_a_partly_failed_batch_is_resent_in_order(r, redis_only, monkeypatch):
    real_execute, batches = UpsertContentStatsFn._execute, []

    def memory_freed_mid_batch(fn, pending):
        """First call: the 2nd pane is refused with OOM, the 3rd (a newer pane of the same content) goes through."""
        batches.append(len(pending))
        if len(batches) > 1:
            return real_execute(fn, pending)
        first, third = real_execute(fn, [pending[0], pending[2]])
        return [first, redis.exceptions.OutOfMemoryError('command not allowed', status_code='OOM'), third]

    monkeypatch.setattr(UpsertContentStatsFn, '_execute', memory_freed_mid_batch)
    written, _ = write_bundles(redis_only.redis_url, [pane('c2', play=1), pane('c1', play=2), pane('c1', play=5)])

    assert batches == [3, 2]  # resent from the failed pane on, not just the failed pane
    assert r.hget(f'engagement:stats:{W}:c1', 'events') == '5'
    assert r.hget(f'engagement:totals:{W}', 'events') == '6'
    assert [s.events for s in written] == [1, 2, 5]


def test_a_user_without_script_permission_gets_one_clear_error(r, redis_only):
    r.acl_setuser('noscripts', enabled=True, passwords=['+n0scr1pt'], keys=['*'], commands=['+@all', '-@scripting'])
    try:
        url = redis_only.redis_url.replace('redis://', 'redis://noscripts:n0scr1pt@')
        with pytest.raises(RedisSinkUnavailable, match='refused to load the write script: .*no permissions') as failure:
            write_bundles(url, [pane('c1')])
        assert 'n0scr1pt' not in str(failure.value)
    finally:
        r.acl_deluser('noscripts')


def test_a_redis_restart_between_and_during_writes_loses_nothing(caplog):
    from launch.stack.redis import Redis
    from tests.conftest import private_config
    cfg = private_config()
    server = Redis(cfg)
    server.start()
    restarter = threading.Timer(0.5, server.start)

    def stop_and_restart_soon():
        server.stop()
        restarter.start()

    caplog.set_level(logging.WARNING)
    try:
        written, _ = write_bundles(cfg.redis_url, [pane('c1', play=1)], stop_and_restart_soon, [pane('c1', play=3)],
                                   max_attempts=8, initial_backoff_seconds=0.1, max_backoff_seconds=0.5)
        restarter.join()
        client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
        # The restarted server kept no data (save "") and no scripts: the second pane was written after it was up.
        assert written == [pane('c1', play=1), pane('c1', play=3)]
        assert client.hgetall(f'engagement:totals:{W}')['events'] == '3'
        assert 'redis_write_retry' in caplog.text
        client.close()
    finally:
        restarter.cancel()
        server.stop()
        shutil.rmtree(cfg.state_dir, ignore_errors=True)


def test_no_password_in_display_data():
    fn = UpsertContentStatsFn('rediss://app:t0psecret@redis.example:6380/1', 'engagement', 86400, 500, 3, 0.1, 1, 5)
    shown = {item.key: item.value for item in DisplayData.create_from(fn).items}
    assert shown['redis_url'] == 'rediss://app:***@redis.example:6380/1'
    assert 't0psecret' not in repr(shown)


def test_redact_url():
    assert redact_url('redis://:pw@h:1/0') == 'redis://:***@h:1/0'
    assert redact_url('rediss://user:p%40ss@h:1/2') == 'rediss://user:***@h:1/2'
    assert redact_url('redis://h:1/0?password=x&db=3') == 'redis://h:1/0?password=%2A%2A%2A&db=3'
    assert redact_url('redis://127.0.0.1:6379/0') == 'redis://127.0.0.1:6379/0'


@pytest.mark.parametrize('kwargs, complaint', [
    (dict(redis_url='http://h:1'), 'must start with redis://'),
    (dict(redis_url='redis://:pw@h:notaport'), 'not a valid URL'),
    (dict(redis_url='redis://h:1', redis_prefix='a:b'), 'redis_prefix'),
    (dict(redis_url='redis://h:1', ttl_seconds=0), 'ttl_seconds'),
])
def test_bad_settings_fail_at_construction(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint) as failure:
        WriteContentStatsToRedis(**kwargs)
    assert 'pw' not in str(failure.value)


def test_in_a_beam_pipeline(r, redis_only):
    panes = [pane(f'c{i}', ('video', 'podcast', 'newsletter')[i % 3], play=i, click=1, engagement_ms=i * 1001)
             for i in range(1, 31)]
    refired = panes[:5]  # a replayed bundle or re-fired identical panes
    invalid = pane('bad', events=-3)

    pipeline = beam.Pipeline()
    result = (pipeline
              | 'Panes' >> beam.Create(panes + refired + [invalid])
              | 'WriteToRedis' >> WriteContentStatsToRedis(redis_only.redis_url, batch_size=7))
    assert_that(result.written | 'WrittenIds' >> beam.Map(lambda s: s.content_id),
                equal_to([p.content_id for p in panes + refired]), label='AllWritten')
    assert_that(result.dead_letters | 'DeadReasons' >> beam.Map(lambda d: (d.stage, d.reason)),
                equal_to([('redis', 'invalid_stats')]), label='OneDeadLetter')
    outcome = pipeline.run()
    outcome.wait_until_finish()

    assert r.hgetall(f'engagement:totals:{W}') == {'events': str(sum(range(1, 31)) + 30), 'play': str(sum(range(31))),
                                                   'pause': '0', 'finish': '0', 'click': '30'}
    assert_totals_match_contents(r)
    assert r.hget(f'engagement:stats:{W}:c7', 'engagement_seconds') == '7.007'
    assert r.zrange(f'engagement:top:{W}:all', 0, 2, desc=True) == ['c30', 'c29', 'c28']
    counters = {c.key.metric.name: c.committed for namespace in ('WriteContentStatsToRedis', 'engagement') for c in
                outcome.metrics().query(MetricsFilter().with_namespace(namespace))['counters']}
    assert counters['panes_written/redis'] == 35 and counters['dead_letters'] == 1
    assert counters.get('sink_retries/redis', 0) == 0 and counters.get('sink_failures/redis', 0) == 0


def test_an_early_pane_that_says_again_what_was_written_is_not_rewritten(r, redis_only):
    """The windows emit every content of a group of contents in each pane, most of them unchanged: an EARLY pane
    whose figures this sink has already written is skipped; a changed one, or an ON_TIME/LATE pane (BigQuery and
    the final value rely on those), is written."""
    first = pane('c1', play=2, pane_timing='EARLY')
    same = pane('c1', play=2, pane_timing='EARLY')
    changed = pane('c1', play=3, pane_timing='EARLY')
    other_window = pane('c1', play=3, pane_timing='EARLY', window_start=W + 60)
    on_time = pane('c1', play=3, pane_timing='ON_TIME')

    written, dead = write_bundles(redis_only.redis_url, [first], [same], [changed, other_window], [on_time])

    assert written == [first, changed, other_window, on_time] and dead == []
    assert r.hget(f'engagement:stats:{W}:c1', 'play') == '3'
    assert r.hget(f'engagement:stats:{W + 60}:c1', 'play') == '3'


def test_a_content_far_above_its_trailing_average_raises_one_alert_per_window(r, redis_only):
    """Rule: events >= min_events and > multiple x the content's average over the trailing windows the pipeline
    observed (0 where it had none); checked at every pane written, so an early pane alerts; one alert per (content,
    window), also when panes are written again (a replay); a refused older pane never alerts."""
    from connectors.redis_script import ViralRule
    rule = ViralRule(window_seconds=60, multiple=3.0, min_events=20, trailing_windows=4)
    # oldest first: c2 steady at 22-25 a window (no alert: no observed window before its first; then 3 x 22 > 25)
    steady = [pane('c2', play=22, window_start=W - 60 * i) for i in (4, 3, 2, 1)] + [pane('c2', play=25)]
    history = [pane('c1', play=10, window_start=W - 60 * i) for i in (3, 2, 1)]  # over 4 observed windows: 7.5
    written, tagged = write_bundles(
        redis_only.redis_url, steady, history,
        [pane('c1', play=19)],                      # below min_events: no alert
        [pane('c1', play=22)],                      # 22 <= 3 x 7.5 (22.5): none yet
        [pane('c1', play=23), pane('c1', play=40)],  # 23 > 22.5: the alert; 40: same window, no second one
        [pane('c1', play=30)],                      # an older pane: refused by the sink, no alert
        [pane('c3', play=20, window_start=W + 60)],  # no history at all: average 0, min_events reached
        viral=rule)
    alerts = [t for t in tagged if isinstance(t, dict)]
    assert [(a['content_id'], a['window_start'], a['events'], a['trailing_average']) for a in alerts] == [
        ('c1', W, 23, 7.5), ('c3', W + 60, 20, 0.0)]
    assert alerts[0]['multiple'] == 3.0 and alerts[0]['title'] == 'Title of c1' and alerts[0]['detected_at']
    stream = r.xrange('engagement:alerts')
    assert [(f['content_id'], f['window_start'], f['events'], f['trailing_average']) for _, f in stream] == [
        ('c1', str(W), '23', '7.500'), ('c3', str(W + 60), '20', '0.000')]
    # written again, as a replay would: nothing new
    _, tagged = write_bundles(redis_only.redis_url, [pane('c1', play=40), pane('c3', play=20, window_start=W + 60)],
                              viral=rule)
    assert not [t for t in tagged if isinstance(t, dict)] and len(r.xrange('engagement:alerts')) == 2
    # without a rule, the sink writes no alert keys at all
    r.flushdb()
    write_bundles(redis_only.redis_url, [pane('c1', play=500)])
    assert not r.exists('engagement:alerts') and not list(r.scan_iter('engagement:alerted:*'))
