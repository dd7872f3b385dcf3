"""Monitoring on Prism against a real stack: the pipeline's Prometheus endpoint (`--metrics_port`) checked against
what was sent and what Postgres holds (records read, events parsed, counted and enriched, dead letters by reason,
panes written, the catalogue's size and age, the reader's watermark lag); then the monitoring service beside it:
/health ready with every dependency, /metrics with consumer lag, replication slot and connector next to the
pipeline's metrics, /debug/kafka, and the query API answering what Redis holds."""
from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import psycopg2
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from launch.monitor.__main__ import QUERY_API_KEYS_ENV
from launch.scenarios import generate
from launch.stack.processes import stop_tree
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline, wait_for

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of http://127.0.0.1:port/metrics."""
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple, float]] = collections.defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def answering(port: int) -> dict | None:
    try:
        return scrape(port)
    except OSError:
        return None


def total(samples: dict, name: str, **labels) -> float:
    return sum(value for key, value in samples.get(name, {}).items() if set(labels.items()) <= set(key))


@pytest.fixture(scope='module')
def monitoring_stack():
    """A stack of its own: the direct events and dead letters sent here must not reach the ground truth of the
    other end-to-end tests (they compare Redis and the dead letters with Postgres)."""
    with private_stack() as stack:
        yield stack


def start_with_metrics(cfg, *flags: str, name: str) -> tuple[Pipeline, str]:
    """The pipeline serving its metrics on the stack's metrics port, reading from now on with a group of its own."""
    group = f'{name}-{uuid.uuid4().hex[:8]}'
    pipeline = Pipeline(cfg, f'--metrics_port={cfg.metrics_port}', '--start_offset=latest', f'--consumer_group={group}',
                        *flags, name=name)
    pipeline.start()
    return pipeline, group


def send_and_check_metrics(cfg, pipeline: Pipeline, summary: Path, timeout_s: float = 90) -> dict:
    """Send 600 direct records (10% bad), then check the pipeline's metrics against them and Postgres."""
    port = cfg.metrics_port
    # the gauge exists from the start (0); it moves once the reader has planned its read and polled
    started = wait_for(lambda: (s := answering(port)) and total(s, 'engagement_reader_watermark_seconds') > 0,
                       timeout_s)
    assert started, f'no metrics with a reader watermark at :{port}; see {pipeline.log}'
    generate.main(['--direct', '--rate', '150', '--count', '600', '--bad-share', '0.1', '--seed', '17',
                   '--summary', str(summary), *cfg.cli_flags()])
    sent = json.loads(summary.read_text())
    valid, bad = sent['counts']['valid'], sent['total'] - sent['counts']['valid']

    def caught_up():
        samples = scrape(port)
        letters = total(samples, 'engagement_dead_letters_total')
        parsed = total(samples, 'engagement_events_parsed_total', source='direct')
        return (parsed, letters) == (valid + sent['counts']['unknown_content'], bad) and samples
    samples = wait_for(caught_up, timeout_s)
    assert samples, f'metrics did not reach what was sent ({sent["counts"]}): {dict(scrape(port))}'

    assert total(samples, 'engagement_kafka_records_read_total', topic=cfg.raw_topic) == sent['total']
    assert total(samples, 'engagement_kafka_bytes_read_total', topic=cfg.raw_topic) > sent['total'] * 100
    for kind, ids in sent['bad_ids'].items():
        assert total(samples, 'engagement_dead_letters_total', reason=kind) == len(ids), kind
    assert total(samples, 'engagement_events_enriched_total') == valid
    assert total(samples, 'engagement_events_counted_total') == valid
    assert wait_for(lambda: total(scrape(port), 'engagement_panes_written_total', sink='redis') > 0, 30)
    assert total(scrape(port), 'engagement_sink_write_seconds_count', sink='redis') > 0
    with psycopg2.connect(cfg.pg_dsn) as conn, conn.cursor() as cur:
        cur.execute('SELECT count(*) FROM content')
        contents = cur.fetchone()[0]
    assert total(samples, 'engagement_catalogue_contents') == contents
    # loaded at start and reloaded when events come after --content_refresh_seconds=10
    assert 0 <= total(samples, 'engagement_catalogue_age_seconds') < 120
    lag = total(samples, 'engagement_reader_watermark_lag_seconds')
    assert 0 <= lag < 30 and abs(total(samples, 'engagement_reader_watermark_seconds') - time.time()) < 60
    assert total(samples, 'process_resident_memory_bytes') > 0   # the process's own metrics, too
    return sent


def test_on_flink_the_metrics_endpoint_counts_what_was_sent(monitoring_stack, tmp_path):
    """Embedded Flink runs the SDK worker in the pipeline process too (LOOPBACK), so the endpoint sees every step."""
    cfg = monitoring_stack.cfg
    pipeline, _ = start_with_metrics(cfg, '--runner=FlinkRunner', '--api_url=', '--bq_enabled=false',
                                     name='metrics-flink')
    try:
        send_and_check_metrics(cfg, pipeline, tmp_path / 'sent.json', timeout_s=180)
    finally:
        pipeline.stop()


def test_the_metrics_endpoint_and_the_monitoring_service_show_what_was_sent(monitoring_stack, tmp_path):
    cfg = monitoring_stack.cfg
    port = cfg.metrics_port
    pipeline, group = start_with_metrics(cfg, name='metrics')
    monitor = None
    try:
        sent_at = int(time.time())
        sent = send_and_check_metrics(cfg, pipeline, tmp_path / 'sent.json')

        monitor = subprocess.Popen([sys.executable, '-m', 'launch.monitor', '--group', group, *cfg.cli_flags()],
                                   stdout=open(tmp_path / 'monitor.log', 'wb'), stderr=subprocess.STDOUT,
                                   env={**os.environ, QUERY_API_KEYS_ENV: f'e2e:{KEY}'})
        check_service(cfg, group, sent, sent_at)
        check_live_page_in_a_browser(cfg, port)
        check_dashboard(cfg)
        check_logs(cfg, [pipeline.log, tmp_path / 'monitor.log'])
    finally:
        if monitor is not None:
            stop_tree(monitor)
        pipeline.stop()


KEY = 'e2e-query-key-0123456789'
WINDOW_S = 60   # the pipeline's and the monitoring service's default --window_seconds


def get(cfg, path: str, **params):
    url = f'{cfg.monitor_url}{path}' + ('?' + urllib.parse.urlencode(params) if params else '')
    request = urllib.request.Request(url, headers={'X-API-Key': KEY})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def check_service(cfg, group: str, sent: dict, sent_at: int) -> None:
    health = wait_for(lambda: answered(cfg, '/health'), 60)
    assert health and health[0] == 200, f'/health: {health}'
    body = json.loads(health[1])
    assert body['status'] == 'ready' and set(body['checks']) == {'kafka', 'postgres', 'redis', 'kafka_connect',
                                                                 'bigquery', 'api', 'pipeline'}
    assert 'watermark' in body['checks']['pipeline']['detail']

    status, text = get(cfg, '/metrics')
    samples = collections.defaultdict(dict)
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    assert status == 200 and total(samples, 'engagement_pipeline_up') == 1
    assert total(samples, 'engagement_kafka_records_read_total', topic=cfg.raw_topic) == sent['total']
    assert total(samples, 'engagement_kafka_end_offset', topic=cfg.raw_topic) >= sent['total']
    assert samples['engagement_consumer_lag_records'], 'no consumer lag exported'
    assert total(samples, 'engagement_cdc_connector_running') == 1
    assert total(samples, 'engagement_replication_slot_active') >= 1
    assert 'engagement_replication_slot_wal_retained_bytes' in samples

    status, kafka = get(cfg, '/debug/kafka')
    raw = [p for p in json.loads(kafka)['partitions'] if p['topic'] == cfg.raw_topic]
    assert status == 200 and len(raw) == cfg.kafka_partitions
    assert sum(p['end_offset'] - (p['committed_offset'] or 0) for p in raw) == sum(p['lag'] or 0 for p in raw
                                                                                      if p['committed_offset'])
    assert any(p['last_fetch_ts'] for p in raw) and all(p['committed_watermark_ms'] for p in raw
                                                         if p['committed_offset'])

    client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
    status, top = get(cfg, '/v1/top', content_type='all', n=5, window=sent_at)   # the window of the first events
    top = json.loads(top)
    ranked = client.zrevrange(f'engagement:top:{top["window_start"]}:all', 0, 4, withscores=True)
    assert status == 200 and top['top'], 'the window the events were sent in has no top contents'
    assert [(t['content_id'], t['events']) for t in top['top']] == [(c, int(score)) for c, score in ranked]
    status, _ = get(cfg, '/v1/top', n=0)
    assert status == 422


def answered(cfg, path):
    try:
        return get(cfg, path)
    except OSError:
        return None


def prometheus_query(cfg, expr: str) -> list:
    url = f'http://127.0.0.1:{cfg.prometheus_port}/api/v1/query?' + urllib.parse.urlencode({'query': expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body['status'] == 'success', body
    return body['data']['result']


def check_dashboard(cfg) -> None:
    """Every query of every panel of the Grafana dashboard returns data from the stack's Prometheus, which scrapes
    the monitoring service (and through it the pipeline)."""
    dashboard = json.loads((REPO / 'launch' / 'monitor' / 'grafana' / 'engagement.json').read_text())
    queries = [target['expr'] for panel in dashboard['panels'] for target in panel['targets']]
    assert len(queries) >= 12

    def empty():
        return [expr for expr in queries if not prometheus_query(cfg, expr)]
    missing = wait_for(lambda: not empty(), 120, 5) or empty()
    assert missing is True, f'panel queries without data: {missing}'
    alerts = prometheus_query(cfg, 'ALERTS{alertstate="firing"}')
    assert not [a['metric']['alertname'] for a in alerts if a['metric']['alertname'] in (
        'PipelineDown', 'CdcConnectorNotRunning', 'CatalogueStale')]


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium (Debian's), JavaScript on, with virtual time so the page's first refreshes run."""
    return subprocess.run(['chromium', '--headless=new', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                           '--virtual-time-budget=6000', *args], capture_output=True, text=True, timeout=120)


def page_tops(dom: str) -> tuple[int, dict[str, list[str]]]:
    """(window start shown, {content type: content ids in the order shown}) of the live page's DOM."""
    window = int(re.search(r'<body[^>]*data-window-start="(\d+)"', dom).group(1))
    tops = {}
    for content_type, body in re.findall(r'<table data-content-type="(\w+)">(.*?)</table>', dom, flags=re.DOTALL):
        tops[content_type] = re.findall(r'<tr data-content-id="([0-9a-f-]+)">', body)
    return window, tops


def check_live_page_in_a_browser(cfg, metrics_port: int) -> None:
    """The page, loaded in a real browser, shows the top contents Redis holds for the current window; its
    screenshot goes to docs/monitor.png (the README shows it)."""
    # The page shows the current window (60 s): send where the events and the page load fall in the same one.
    to_next = WINDOW_S - time.time() % WINDOW_S
    if to_next < 25:
        time.sleep(to_next + 1)
    before = total(scrape(metrics_port), 'engagement_events_counted_total')
    generate.main(['--direct', '--rate', '100', '--count', '150', '--seed', '29', *cfg.cli_flags()])
    assert wait_for(lambda: total(scrape(metrics_port), 'engagement_events_counted_total') >= before + 150, 60)
    client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)

    def tops(window: int) -> dict[str, list[str]]:
        return {t: client.zrevrange(f'engagement:top:{window}:{t}', 0, 4) for t in ('video', 'podcast', 'newsletter')}
    # the early panes of the last events reach Redis: compare once the top sets have settled (or after 3 tries)
    for _ in range(3):
        now = int(time.time()) // WINDOW_S * WINDOW_S
        settled = tops(now)
        time.sleep(2.5)
        result = chromium('--dump-dom', cfg.monitor_url + '/')
        assert result.returncode == 0 and 'data-loaded="true"' in result.stdout, result.stderr[-2000:]
        window, shown = page_tops(result.stdout)
        expected = tops(window)
        if window == now and settled == expected:
            break
    assert shown == expected and any(shown.values()), (shown, expected)
    shot = REPO / 'docs' / 'monitor.png'
    result = chromium(f'--screenshot={shot}', '--window-size=1280,900', cfg.monitor_url + '/')
    assert result.returncode == 0 and shot.stat().st_size > 10_000, result.stderr[-2000:]


def check_logs(cfg, logs: list) -> None:
    """Our components log one JSON object per line, and no line of any of them holds a configured secret (the
    REST API's client secret, a query API key), the REST receiver's log included."""
    secrets = [cfg.api_client_secret, KEY]
    for log in [*logs, cfg.log_file('api')]:
        text = log.read_text(errors='replace')
        assert text and not [s for s in secrets if s in text], f'a secret in {log}'
    for log in logs:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        not_json = [line for line in lines if not line.startswith('{') or not isinstance(json.loads(line), dict)]
        assert lines and not not_json, f'{len(not_json)} of {len(lines)} lines of {log} are not JSON: {not_json[:3]}'
    pipeline_lines = [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip()]
    assert any(line.get('message') == 'metrics_served' and line.get('url') for line in pipeline_lines)
