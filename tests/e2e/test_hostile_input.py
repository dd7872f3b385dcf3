"""Hostile input end to end, on the real stack: the corpus of launch/scenarios/corpus.py (malformed and adversarial
records of every class, on the raw and the CDC topic) interleaved with valid events that Debezium captures from
Postgres. The pipeline must stay up throughout (no record may fail it, nor fail it again after a restart from committed
offsets), give every hostile record its dead letter with its reason and coordinates, skip the record an operator
names with --skip_offsets, and count every valid event: Redis equals SQL at the end.

Prism: corpus as a backlog before the start, again live, a `kill -9` and a restart, the corpus once more after it.
Embedded Flink: corpus as a backlog and live, no crash."""
from __future__ import annotations

import collections
import threading
import time
from datetime import datetime, timezone

import pytest

from launch.scenarios import corpus, generate, verify
from tests.conftest import private_stack
from tests.e2e.conftest import Pipeline, wait_for
from tests.e2e.test_pipeline_e2e import read_dead_letters, wait_exact

pytestmark = pytest.mark.integration

SKIPPED_KIND = 'json_number'   # the record of the first batch that the operator skips


@pytest.fixture(scope='module')
def hostile_stack():
    with private_stack() as stack:
        yield stack


def send_corpus(cfg) -> list[dict]:
    content_id = generate.load_content_ids(cfg.pg_dsn)[0]
    first_id = 9_000_000_000_000_000_000 + time.time_ns() % 10**12 * 1000
    return corpus.produce(cfg, corpus.corpus(datetime.now(timezone.utc), content_id, generate.user_pool(1)[0],
                                             first_id))


def check_dead_letters(cfg, batches: dict[str, list[dict]], once: set[str], timeout: float = 120) -> None:
    """Every record of every batch has dead letters of its expected stage and reason only (none for a skipped
    one), found by its coordinates; in the batches of `once`, exactly one."""
    sent = [dict(record, batch=name) for name, records in batches.items() for record in records]
    expected = [r for r in sent if r['expected'] != corpus.SKIPPED]

    def found() -> dict:
        by_place = collections.defaultdict(list)
        for letter in read_dead_letters(cfg):
            by_place[(letter['source_topic'], letter['source_partition'], letter['source_offset'])].append(letter)
        return by_place

    by_place = wait_for(lambda: (lambda got: got if all((r['topic'], r['partition'], r['offset']) in got
                                                        for r in expected) else None)(found()), timeout, 3)
    by_place = by_place or found()
    problems = []
    for record in sent:
        letters = by_place.get((record['topic'], record['partition'], record['offset']), [])
        outcomes = {(d['stage'], d['reason']) for d in letters}
        if record['expected'] == corpus.SKIPPED:
            if letters:
                problems.append(f"{record['kind']} ({record['batch']}): dead-lettered as {outcomes}, not skipped")
            continue
        if outcomes != {(record['stage'], record['expected'])}:
            problems.append(f"{record['kind']} ({record['batch']}): {outcomes or 'no dead letter'}, expected "
                            f"{record['stage']}/{record['expected']}")
        elif record['batch'] in once and len(letters) != 1:
            problems.append(f"{record['kind']} ({record['batch']}): {len(letters)} dead letters, expected one")
        for letter in letters:
            if not letter['error'] or len(letter['payload'] or '') > 1_000_000:
                problems.append(f"{record['kind']}: dead letter without an error or with an uncut payload")
    assert not problems, f'{len(problems)} records without their outcome:\n' + '\n'.join(problems)


def test_hostile_records_never_stop_the_pipeline_on_prism_even_across_a_restart(hostile_stack):
    cfg = hostile_stack.cfg
    backlog = send_corpus(cfg)
    skip = next(r for r in backlog if r['kind'] == SKIPPED_KIND)
    skip.update(stage='parse', expected='skipped_by_operator')
    pipeline = Pipeline(cfg, f"--skip_offsets={skip['topic']}:{skip['partition']}:{skip['offset']}",
                        name='hostile-prism')
    try:
        pipeline.start()
        inserts = threading.Thread(target=generate.main, args=(
            ['--rate', '100', '--duration', '100', '--seed', '31', '--late-share', '0.02', *cfg.cli_flags()],))
        inserts.start()
        time.sleep(25)
        live = send_corpus(cfg)
        time.sleep(25)
        assert pipeline.alive(), f'a hostile record stopped the pipeline; see {pipeline.log}'
        pipeline.kill9()
        pipeline.start()                      # from committed offsets: the replay re-reads hostile records
        time.sleep(20)
        assert pipeline.alive(), f'the restarted pipeline died; see {pipeline.log}'
        after_restart = send_corpus(cfg)
        inserts.join()

        diffs = wait_exact(cfg, pipeline, 300)
        assert diffs == [], f'{len(diffs)} differences between Redis and SQL, e.g. {diffs[:5]}'
        assert sum(r['events'] for r in verify.ground_truth(cfg.pg_dsn, 60, 0).values()) >= 8000
        check_dead_letters(cfg, {'backlog': backlog, 'live': live, 'after restart': after_restart},
                           once={'after restart'})
        assert pipeline.alive() and pipeline.runs == 2
    finally:
        pipeline.stop()


def test_hostile_records_never_stop_the_pipeline_on_flink():
    with private_stack() as stack:
        cfg = stack.cfg
        backlog = send_corpus(cfg)
        pipeline = Pipeline(cfg, '--runner=FlinkRunner', name='hostile-flink')
        try:
            pipeline.start()
            inserts = threading.Thread(target=generate.main, args=(
                ['--rate', '100', '--duration', '40', '--seed', '32', *cfg.cli_flags()],))
            inserts.start()
            time.sleep(20)
            live = send_corpus(cfg)
            inserts.join()
            diffs = wait_exact(cfg, pipeline, 240)
            assert diffs == [], f'{len(diffs)} differences between Redis and SQL, e.g. {diffs[:5]}'
            check_dead_letters(cfg, {'backlog': backlog, 'live': live}, once={'backlog', 'live'}, timeout=180)
            assert pipeline.alive() and pipeline.runs == 1
        finally:
            pipeline.stop()
