"""The traffic of the fault scenario (launch/scenarios/chaos.py), kept going through every fault:

- `PostgresLoad`: valid events inserted into Postgres at a steady rate (Debezium carries them to Kafka). While
  Postgres is down it keeps the events it could not insert and inserts them when Postgres is back, as an
  application with an outbox would; what Postgres holds at the end is the ground truth.
- `HostileLoad`: bad records onto the raw topic at a steady rate (the generator's kinds: malformed JSON, missing
  fields, wrong types, unknown contents) and, every `corpus_every_s`, one round of the whole hostile corpus
  (launch/scenarios/corpus.py) on both topics. The producer is idempotent (no duplicate from its own retries) and
  rides out a broker outage; each record is accounted for by the coordinates Kafka acknowledged, with the
  dead-letter reason it must get.
"""
from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timezone

from launch.scenarios import corpus, generate

# the reasons a bad record may get: an unknown content met while the catalogue cannot be reloaded (Postgres down)
# is dead-lettered as content_unavailable instead of unknown_content, and retried by nobody: that is its outcome
ALTERNATIVES = {'unknown_content': {'unknown_content', 'content_unavailable'}}
BAD_STAGE = {'malformed_json': 'parse', 'missing_field': 'parse', 'wrong_type': 'parse',
             'unknown_content': 'enrich'}


class PostgresLoad(threading.Thread):
    def __init__(self, cfg, rate: float, seed: int, say, tick_s: float = 0.1, max_batch: int = 20_000):
        super().__init__(name='postgres-load', daemon=True)
        self.cfg, self.rate, self.say, self.tick_s, self.max_batch = cfg, rate, say, tick_s, max_batch
        self.factory = generate.EventFactory(generate.load_content_ids(cfg.pg_dsn), 5000, 0.02, 300, seed)
        self.stopping = threading.Event()
        self.inserted = 0
        self.outage_s = 0.0   # time spent unable to insert
        self.error: BaseException | None = None

    def run(self) -> None:
        import psycopg2
        backlog: list[generate.Event] = []
        conn = None
        down_since = None
        try:
            for due in generate.paced(self.rate, None, None, self.tick_s):
                if self.stopping.is_set() and not backlog:
                    break
                if not self.stopping.is_set():
                    now = datetime.now(timezone.utc)
                    backlog.extend(self.factory.make(now) for _ in range(due))
                try:
                    if conn is None:
                        conn = psycopg2.connect(self.cfg.pg_dsn, connect_timeout=2)
                    while backlog:
                        batch = backlog[:self.max_batch]
                        with conn.cursor() as cur:
                            cur.copy_expert('COPY engagement_events (content_id, user_id, event_type, event_ts, '
                                            'duration_ms, device, raw_payload) FROM STDIN',
                                            generate._copy_buffer(batch))
                        conn.commit()
                        del backlog[:len(batch)]
                        self.inserted += len(batch)
                    if down_since is not None:
                        self.outage_s += time.monotonic() - down_since
                        self.say(f'  load: Postgres takes inserts again after {time.monotonic() - down_since:.1f} s')
                        down_since = None
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    # A COPY whose commit was cut off may or may not have landed; its events are kept and
                    # inserted again, which at worst adds rows (new ids): Postgres stays the ground truth.
                    if down_since is None:
                        down_since = time.monotonic()
                        self.say('  load: Postgres refuses inserts; keeping the events for later')
                    if conn is not None:
                        conn.close()
                        conn = None
                    time.sleep(0.5)
        except BaseException as exc:  # noqa: BLE001 - reported by the scenario
            self.error = exc
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        self.stopping.set()


class HostileLoad(threading.Thread):
    def __init__(self, cfg, rate: float, corpus_every_s: float, seed: int, say):
        super().__init__(name='hostile-load', daemon=True)
        self.cfg, self.rate, self.corpus_every_s, self.say = cfg, rate, corpus_every_s, say
        content_ids = generate.load_content_ids(cfg.pg_dsn)
        self.factory = generate.EventFactory(content_ids, 50, 0.0, 1, seed)
        self.content_id, self.user_id = content_ids[0], generate.user_pool(1)[0]
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        # (topic, partition, offset) -> (stages, reasons) it must get, or None for a record to be skipped
        self.expected: dict[tuple, tuple[set, set] | None] = {}
        self.kinds: dict[str, int] = {}
        self.failed: list[str] = []
        self.pending = 0
        self.rounds = 0
        self.error: BaseException | None = None

    def _producer(self):
        from kafka import KafkaProducer
        return KafkaProducer(**self.cfg.kafka_client_config(), acks='all', enable_idempotence=True,
                             linger_ms=20, max_request_size=2 * 1024 * 1024, retries=2_147_483_647,
                             delivery_timeout_ms=600_000, request_timeout_ms=10_000, max_block_ms=600_000,
                             reconnect_backoff_max_ms=2000)

    def _send(self, producer, topic: str, key: bytes | None, value: bytes | None, kind: str,
              outcome: tuple[set, set] | None) -> None:
        with self.lock:
            self.pending += 1
            self.kinds[kind] = self.kinds.get(kind, 0) + 1

        def acknowledged(meta):
            with self.lock:
                self.expected[(meta.topic, meta.partition, meta.offset)] = outcome
                self.pending -= 1

        def failed(exc):
            with self.lock:
                self.failed.append(f'{kind}: {type(exc).__name__}: {exc}')
                self.pending -= 1
        producer.send(topic, key=key, value=value).add_callback(acknowledged).add_errback(failed)

    def _bad(self, producer, due: int) -> None:
        ids = generate.DirectIds()
        now = datetime.now(timezone.utc)
        for _ in range(due):
            event = self.factory.make(now, ids.next())
            kind = self.rng.choice(generate.BAD_KINDS)
            value = generate.make_bad(kind, event, self.factory.rng)
            self._send(producer, self.cfg.raw_topic, str(event.id).encode(), value, kind,
                       ({BAD_STAGE[kind]}, ALTERNATIVES.get(kind, {kind})))

    def _corpus_round(self, producer) -> None:
        first_id = 9_000_000_000_000_000_000 + self.rounds * 10_000
        for record in corpus.corpus(datetime.now(timezone.utc), self.content_id, self.user_id, first_id):
            topic = self.cfg.raw_topic if record.target == corpus.RAW else self.cfg.events_topic
            outcome = None if record.expected == corpus.SKIPPED else (
                {record.stage}, ALTERNATIVES.get(record.expected, {record.expected}))
            self._send(producer, topic, record.key, record.value, f'corpus:{record.kind}', outcome)
        self.rounds += 1

    def run(self) -> None:
        producer = self._producer()
        try:
            next_round = time.monotonic()
            for due in generate.paced(self.rate, None, None, 0.2):
                if self.stopping.is_set():
                    break
                self._bad(producer, due)
                if time.monotonic() >= next_round:
                    self._corpus_round(producer)
                    next_round = time.monotonic() + self.corpus_every_s
            producer.flush()
        except BaseException as exc:  # noqa: BLE001 - reported by the scenario
            self.error = exc
        finally:
            producer.close()

    def stop(self) -> None:
        self.stopping.set()

    def summary(self) -> dict:
        with self.lock:
            return {'records': sum(self.kinds.values()), 'acknowledged': len(self.expected),
                    'skipped_expected': sum(1 for v in self.expected.values() if v is None),
                    'corpus_rounds': self.rounds, 'failed_sends': list(self.failed), 'pending': self.pending}


def check_dead_letters(failures: list[dict], expected: dict[tuple, tuple[set, set] | None]) -> list[str]:
    """Differences between the dead letters (each failure once: launch.tools.dead_letters.distinct_failures) of
    the records `HostileLoad` sent and what each must get: exactly one dead letter with an allowed stage and
    reason, none for a record to be skipped."""
    by_source: dict[tuple, list[dict]] = {}
    for letter in failures:
        source = (letter.get('source_topic'), letter.get('source_partition'), letter.get('source_offset'))
        if source in expected:
            by_source.setdefault(source, []).append(letter)
    diffs = []
    for source, outcome in expected.items():
        got = by_source.get(source, [])
        if outcome is None:
            if got:
                diffs.append(f'{source}: dead-lettered ({got[0].get("reason")}) but must be skipped')
            continue
        stages, reasons = outcome
        if len(got) != 1:
            diffs.append(f'{source}: {len(got)} dead letters, expected 1 ({"/".join(sorted(reasons))})')
        elif got[0].get('stage') not in stages or got[0].get('reason') not in reasons:
            diffs.append(f'{source}: {got[0].get("stage")}/{got[0].get("reason")}, expected '
                         f'{"/".join(sorted(stages))}/{"|".join(sorted(reasons))}')
    return diffs

