"""Redelivery of the REST API sink's dead letters (`python -m launch.tools.dead_letters redeliver`): the flags and the
dead letter written back (fast), and one integration run: a Beam pipeline delivers events to a real receiver that
answers 50% 503 plus timeouts and lost answers, its dead letters go to a real Kafka topic; a redelivery while the
API is still down stops at the open breaker and writes back what failed again; once the API is healthy the next run
leaves the API holding every event exactly once; a third run has nothing to do, a redo from the beginning finds
only duplicates."""
from __future__ import annotations

import datetime
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid

import apache_beam as beam
import pytest

from connectors.dead_letters import WriteDeadLettersToKafka, record_key
from connectors.http_api.client import ApiSinkConfig
from connectors.http_api.sink import DeliverToApi
from launch.tools.dead_letters import main, read_dead_letters
from launch.tools.redeliver import Selection, _event_of, parse_since, rewritten
from schemas.dead_letter import DeadLetter
from tests.api_support import REPO, ReceiverProcess
from tests.transforms.builders import enriched

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SECRET = 'redeliver-test-secret-5c1e'


def test_since_takes_an_age_or_a_time_in_utc():
    now = datetime.datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    assert parse_since('90m', now) == datetime.datetime(2026, 11, 24, 13, 30, tzinfo=UTC)
    assert parse_since('1d', now) == datetime.datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    assert parse_since('2026-11-24T12:00:00') == T0                     # no offset: UTC
    assert parse_since('2026-11-24T13:00:00+01:00') == T0
    with pytest.raises(SystemExit) as exit_:
        main(['redeliver', '--since', 'yesterday'])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        main(['redeliver', '--reason', 'Not A Reason'])


def test_an_api_dead_letter_holds_the_whole_event_and_a_failed_redelivery_adds_up_its_attempts():
    event = enriched(id=77, ts=1_795_522_212.0)
    letter = DeadLetter.for_event(event, stage='api', reason='circuit_open', error='not sent', now=T0, attempts=1)
    again, restored = _event_of(json.loads(letter.to_json()))
    assert restored == event and restored.model_dump(mode='json') == event.model_dump(mode='json')

    later = T0 + datetime.timedelta(hours=1)
    written = rewritten(again, 'api_http_503', 'API answered 503; 3 attempt(s)', 3, later)
    assert (written.reason, written.attempts, written.first_failed_ts, written.last_failed_ts) == (
        'api_http_503', 4, T0, later)
    assert written.error.startswith('redelivery failed: API answered 503')
    assert (written.payload, written.event_id, written.source_offset) == (letter.payload, 77, letter.source_offset)
    assert record_key(json.loads(written.to_json())) == record_key(json.loads(letter.to_json())) == '77'

    assert Selection().matches(letter) and not Selection().partial
    assert not Selection(reasons=frozenset({'api_timeout'})).matches(letter)
    assert not Selection(since=later).matches(letter) and Selection(since=T0).matches(letter)


# ---------------------------------------------------------------------------------------------------------------

def report(text: str) -> dict[str, int]:
    """The figures of a run's report: {'read': n, 'delivered': n, 'still failing': n, ...}."""
    return {m[2]: int(m[1]) for m in re.finditer(r'^ *(\d+)  ([a-z0-9_ ]+?)(?: \(|$)', text, re.M)}


@pytest.mark.integration
def test_events_dead_lettered_while_the_api_failed_are_all_delivered_exactly_once(stack, capsys):
    from kafka import KafkaProducer

    from tests.connectors.kafka.test_reader import create_topic
    bootstrap = stack.cfg.kafka_bootstrap
    topic = create_topic(stack.cfg, f'test.redeliver.{uuid.uuid4().hex[:8]}', 2)
    events = [enriched(id=880_000 + i, ts=1_795_522_212.0 + i) for i in range(400)]
    sent_ids = {str(e.id) for e in events}

    with ReceiverProcess(secret=SECRET) as receiver:
        flags = ['redeliver', '--stage', 'api', '--bootstrap', bootstrap, '--topic', topic,
                 '--group', f'test-redeliver-{uuid.uuid4().hex[:8]}', '--api_url', receiver.url,
                 '--api_batch_size', '5', '--api_timeout_seconds', '0.3', '--api_breaker_failures', '2']

        def redeliver(*more: str) -> tuple[int, str]:
            code = main([*flags, '--api_client_secret', SECRET, *more])
            out = capsys.readouterr()
            assert SECRET not in out.out + out.err
            return code, out.out

        # 1. The pipeline: 50% 503, 20% timeouts, 10% of the rest stored but unanswered; the sink's dead letters
        # (and one of another stage) go to the topic as pipeline.engagement writes them.
        receiver.set_faults(error_rate=0.5, status=503, timeout_rate=0.2, timeout_seconds=0.6,
                            lost_response_rate=0.1, seed=4)
        sink = ApiSinkConfig(api_url=receiver.url, client_id='engagement-local', client_secret=SECRET,
                             batch_size=10, timeout_seconds=0.3, max_attempts=3, breaker_failures=2,
                             breaker_cooldown_seconds=0.5, backoff_base_seconds=0.02, backoff_cap_seconds=0.2)
        pipeline = beam.Pipeline()
        api = pipeline | 'Events' >> beam.Create(events) | 'DeliverToApi' >> DeliverToApi(sink)
        parse_failure = pipeline | 'ParseFailure' >> beam.Create([DeadLetter(
            payload='{"id": 1, "event_type": "jump"}', stage='parse', reason='invalid_event', error='no',
            first_failed_ts=T0, last_failed_ts=T0, source_topic='engagement.raw_events',
            source_partition=0, source_offset=1)])
        _ = ((api.dead_letters, parse_failure) | beam.Flatten()
             | 'WriteDeadLettersToKafka' >> WriteDeadLettersToKafka(bootstrap, topic))
        pipeline.run().wait_until_finish()

        letters = [record for _, _, _, record in read_dead_letters(bootstrap, topic)]
        api_letters = [r for r in letters if r['stage'] == 'api']
        dead_ids = {str(r['event_id']) for r in api_letters}
        assert len(letters) == len(api_letters) + 1 and len(dead_ids) == len(api_letters) > 10
        assert {r['reason'] for r in api_letters} <= {'api_http_503', 'api_timeout', 'api_connection_error',
                                                      'circuit_open'}
        held_before = set(receiver.keys())
        assert held_before | dead_ids == sent_ids         # every event delivered or dead-lettered
        stats = receiver.stats()
        assert stats['injected']['error'] > 0 and stats['injected']['timeout'] > 0
        assert stats['max_calls_per_request'] <= 3
        replayed = api_letters[0]                          # a pipeline replay writes one dead letter again
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks='all')
        producer.send(topic, key=record_key(replayed).encode(), value=json.dumps(replayed).encode()).get(10)
        producer.close()

        # 2. The API still fails every call: two batches fail (3 calls each) and are written back, then the breaker
        # is open and the run stops; the rest stays in the topic for the next run.
        receiver.set_faults(error_rate=1.0)
        code, out = redeliver()
        figures = report(out)
        assert code == 1 and 'NOT DONE' in out
        assert (figures['read'], figures['skipped'], figures['selected']) == (len(letters) + 1, 1, len(dead_ids) + 1)
        assert (figures['delivered'], figures['still failing'], figures['api_http_503']) == (0, 10, 10)
        assert figures['not tried'] == len(dead_ids) - 10
        assert receiver.stats()['max_calls_per_request'] <= 3
        now_in_topic = [r for _, _, _, r in read_dead_letters(bootstrap, topic)]
        written_back = [r for r in now_in_topic if r['error'].startswith('redelivery failed: ')]
        assert len(now_in_topic) == len(letters) + 1 + 10 and len(written_back) == 10
        originals = {r['event_id']: r for r in api_letters}
        for record in written_back:
            original = originals[record['event_id']]
            assert (record['reason'], record['attempts']) == ('api_http_503', original['attempts'] + 3)
            assert record['first_failed_ts'] == original['first_failed_ts'] and record['payload'] == original['payload']

        # 3. The API is healthy (the real command, secret from the environment): every event arrives, once.
        receiver.set_faults()
        env = {**os.environ, 'PYTHONPATH': str(REPO), 'ENGAGEMENT_API_CLIENT_SECRET': SECRET}
        done = subprocess.run([sys.executable, '-m', 'launch.tools.dead_letters', *flags], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert SECRET not in done.stdout + done.stderr
        figures = report(done.stdout)
        assert figures['delivered'] == len(dead_ids - held_before)       # the API did not have them
        assert figures['duplicates'] == len(dead_ids & held_before)      # stored, but the answer was lost
        assert (figures['still failing'], figures['not tried']) == (0, 0) and 'OK:' in done.stdout
        keys = receiver.keys()
        assert set(keys) == sent_ids
        stats = receiver.stats()
        assert stats['accepted_events'] == len(events) and stats['max_calls_per_request'] <= 3
        with sqlite3.connect(f'file:{receiver.state_dir / "receiver.sqlite"}?mode=ro', uri=True) as db:
            stored = dict(db.execute('SELECT key, event FROM events').fetchall())
        assert all(json.loads(stored[str(e.id)]) == e.model_dump(mode='json') for e in events)

        # 4. Nothing left for the group; a dry run from the beginning counts, a redo finds only duplicates.
        requests = stats['requests']
        code, out = redeliver()
        assert code == 0 and 'nothing to do' in out and report(out)['read'] == 0
        code, out = redeliver('--from-beginning', '--dry-run')
        assert code == 0 and report(out)['to redeliver'] == len(dead_ids)
        assert receiver.stats()['requests'] == requests
        code, out = redeliver('--from-beginning', '--reason', 'api_http_503')
        figures = report(out)
        assert code == 0 and figures['delivered'] == 0 and figures['duplicates'] > 0
        code, out = redeliver('--from-beginning')
        figures = report(out)
        assert code == 0 and (figures['delivered'], figures['duplicates']) == (0, len(dead_ids))
        assert figures['repeated'] == 1 + 10                    # the replay and the written-back dead letters
        assert receiver.keys().keys() == keys.keys() and receiver.stats()['accepted_events'] == len(events)
