"""What the monitoring service asks the stack: is each dependency up (`check_all`), where is the consumer group in
each partition (`KafkaView`), what do Postgres and Kafka Connect say about the CDC (`cdc_state`). Every call is
bounded by a timeout; a failure is an answer ("down: why"), never an exception to the caller."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from connectors.credentials import kafka_security_settings, librdkafka_client_settings, redis_credentials
from connectors.kafka.offsets import watermark_of
from connectors.redis import redact_url


@dataclasses.dataclass(frozen=True)
class Targets:
    """Where the stack is. Optional targets (None) are not checked: a pipeline without BigQuery or the REST API."""
    kafka_bootstrap: str
    pg_dsn: str
    redis_url: str
    group: str
    topics: tuple[str, ...]
    pipeline_metrics_url: str | None = None
    connect_url: str | None = None
    connector: str = 'engagement-cdc'
    bq_endpoint: str | None = None
    api_url: str | None = None


@dataclasses.dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    latency_ms: float


def _timed(probe: Callable[[], str]) -> Check:
    started = time.monotonic()
    try:
        detail = probe()
        ok = True
    except Exception as exc:  # noqa: BLE001 - any failure of a probe is the answer "down"
        detail, ok = f'{type(exc).__name__}: {str(exc).strip()[:200]}', False
    return Check(ok, detail, round((time.monotonic() - started) * 1000, 1))


def http_get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _kafka(targets: Targets, timeout: float) -> str:
    from confluent_kafka.admin import AdminClient
    kafka = librdkafka_client_settings({'bootstrap_servers': targets.kafka_bootstrap, **kafka_security_settings()})
    admin = AdminClient({**kafka, 'socket.timeout.ms': int(timeout * 1000)})
    metadata = admin.list_topics(timeout=timeout)
    missing = [t for t in targets.topics if t not in metadata.topics]
    if missing:
        raise RuntimeError(f'topics missing: {", ".join(missing)}')
    return f'{len(metadata.brokers)} broker(s), topics {", ".join(targets.topics)} present'


def _postgres(targets: Targets, timeout: float) -> str:
    import psycopg2
    with psycopg2.connect(targets.pg_dsn, connect_timeout=max(1, int(timeout))) as conn, conn.cursor() as cur:
        cur.execute('SELECT count(*) FROM content')
        return f'{cur.fetchone()[0]} contents'


def _redis(targets: Targets, timeout: float) -> str:
    import redis
    client = redis.Redis.from_url(targets.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                  **redis_credentials())
    try:
        client.ping()
        return f'PING ok at {redact_url(targets.redis_url)}'
    finally:
        client.close()


def _http(url: str, timeout: float, want: Callable[[int], bool] = lambda status: status < 500) -> str:
    status, _ = http_get(url, timeout)
    if not want(status):
        raise RuntimeError(f'{url} answered {status}')
    return f'{url} answered {status}'


def _pipeline(targets: Targets, timeout: float) -> str:
    assert targets.pipeline_metrics_url
    status, body = http_get(targets.pipeline_metrics_url, timeout)
    if status != 200:
        raise RuntimeError(f'metrics endpoint answered {status}')
    lag = next((float(line.split()[-1]) for line in body.decode().splitlines()
                if line.startswith('engagement_reader_watermark_lag_seconds ')), None)
    return 'running, no watermark yet' if lag is None else f'running, watermark {lag:.1f} s behind'


def check_all(targets: Targets, timeout: float = 2.0) -> dict[str, Check]:
    """Every dependency, probed in parallel; each within `timeout` seconds."""
    probes: dict[str, Callable[[], str]] = {
        'kafka': lambda: _kafka(targets, timeout),
        'postgres': lambda: _postgres(targets, timeout),
        'redis': lambda: _redis(targets, timeout),
    }
    if targets.connect_url:
        probes['kafka_connect'] = lambda: cdc_connector_state(targets, timeout)
    if targets.bq_endpoint:
        probes['bigquery'] = lambda: _http(f'{targets.bq_endpoint.rstrip("/")}/bigquery/v2/projects/-/datasets',
                                           timeout)
    if targets.api_url:
        probes['api'] = lambda: _http(targets.api_url.rstrip('/') + '/', timeout)
    if targets.pipeline_metrics_url:
        probes['pipeline'] = lambda: _pipeline(targets, timeout)
    with concurrent.futures.ThreadPoolExecutor(len(probes)) as pool:
        futures = {name: pool.submit(_timed, probe) for name, probe in probes.items()}
        return {name: future.result() for name, future in futures.items()}


def cdc_connector_state(targets: Targets, timeout: float) -> str:
    """'connector RUNNING, task 0 RUNNING'; raises unless the connector and every task run."""
    status, body = http_get(f'{targets.connect_url}/connectors/{targets.connector}/status', timeout)
    if status != 200:
        raise RuntimeError(f'connector {targets.connector}: Kafka Connect answered {status}')
    state = json.loads(body)
    tasks = state.get('tasks') or []
    summary = f'connector {state["connector"]["state"]}, ' + (
        ', '.join(f'task {t["id"]} {t["state"]}' for t in tasks) if tasks else 'no task')
    if state['connector']['state'] != 'RUNNING' or not tasks or any(t['state'] != 'RUNNING' for t in tasks):
        raise RuntimeError(summary)
    return summary


def replication_slots(pg_dsn: str, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Each logical replication slot: active or not, and the WAL Postgres keeps for it (bytes)."""
    import psycopg2
    with psycopg2.connect(pg_dsn, connect_timeout=max(1, int(timeout))) as conn, conn.cursor() as cur:
        cur.execute('SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) '
                    'FROM pg_replication_slots')
        return [{'slot': name, 'active': bool(active), 'wal_retained_bytes': int(retained or 0)}
                for name, active, retained in cur.fetchall()]


class KafkaView:
    """The consumer group's position in every partition of the topics, against their end offsets. One consumer
    (no group membership: it never joins or commits), shared by the threads that ask, one at a time."""

    def __init__(self, kafka_bootstrap: str, group: str, topics: tuple[str, ...]):
        self._bootstrap, self.group, self.topics = kafka_bootstrap, group, topics
        self._consumer: Any = None
        self._lock = threading.Lock()

    def partitions(self) -> list[dict[str, Any]]:
        """One row per partition; a failure closes the consumer (the next call connects afresh) and is raised."""
        with self._lock:
            try:
                return self._partitions()
            except Exception:
                self._close()
                raise

    def _partitions(self) -> list[dict[str, Any]]:
        from kafka import KafkaConsumer, TopicPartition
        if self._consumer is None:
            self._consumer = KafkaConsumer(bootstrap_servers=self._bootstrap, **kafka_security_settings(),
                                           group_id=self.group,
                                           enable_auto_commit=False, request_timeout_ms=5000)
        consumer = self._consumer
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = consumer.end_offsets(tps) if tps else {}
        rows = []
        for tp in tps:
            committed = consumer.committed(tp, metadata=True)
            offset = committed.offset if committed is not None and committed.offset >= 0 else None
            watermark = watermark_of(committed.metadata) if committed is not None else None
            rows.append({'topic': tp.topic, 'partition': tp.partition, 'committed_offset': offset,
                         'end_offset': ends.get(tp), 'lag': None if offset is None else ends.get(tp, 0) - offset,
                         'committed_watermark_ms': watermark})
        return rows

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
