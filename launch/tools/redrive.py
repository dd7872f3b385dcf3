"""Re-drive failures once their cause is fixed (`python -m launch.dead_letters redrive --stage enrich|parse|bigquery`):
a content added to the catalogue, a producer's bug fixed and its record corrected by hand, a limit raised, a BigQuery
table's schema fixed.

Reads the dead-letter topic with a consumer group of its own (`engagement-redrive-<stage>`), from where the last run
ended to the end offsets found at start, and writes each selected failure once to the raw topic the pipeline reads:

- `enrich`: the event the dead letter holds (as JSON, the raw topic's format), keyed by its id;
- `parse`: the original record's bytes, for a record that came from the raw topic. A CDC record cannot be sent
  again (the raw topic does not take Debezium envelopes): fix the row in Postgres instead, and Debezium's update
  reaches the pipeline as a newer version of the event.
- `bigquery`: the row BigQuery rejected, inserted again into its table (named in the dead letter's error) with the
  insert id the sink gives it (the event id, the pane's figures, the dead letter's key): the views keep one row per
  id. A row BigQuery rejects again is reported and its batch not committed (the next run tries again).

Each event counts once however often it is sent: the windows deduplicate by event id and every sink is idempotent
on it. An event whose window is final in the live pipeline (its end plus the allowed lateness lies in the past)
would only come back as `too_late`; it is not sent, and the report counts it (a backfill recomputes its windows
from Postgres, for events that are rows there). Offsets are committed after each batch the broker acknowledged: a
crash in between sends that batch again, which the deduplication absorbs.

A selection (`--content-id`, `--reason`, `--since`) re-drives only the failures it names, e.g. the events of the one
content just added to the catalogue. The group still moves past the failures it leaves out, so a selective run takes
a group of its own (`--group`): without one it commits nothing.
"""
from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import datetime
import json
import sys
from typing import Callable

import pydantic

from schemas.dead_letter import DeadLetter
from schemas.events import DirectEvent

STAGES = ('enrich', 'parse', 'bigquery')
BIGQUERY_TABLES = ('events_enriched_raw', 'content_minute_stats_raw', 'dead_letter')
GROUP_PREFIX = 'engagement-redrive-'
BATCH = 500


@dataclasses.dataclass
class Counts:
    read: int = 0
    skipped: int = 0            # another stage
    unselected: int = 0         # outside --content-id/--reason/--since
    repeated: int = 0           # a further dead letter of a failure this run handled
    sent: int = 0
    too_old: int = 0            # its window is final in the live pipeline
    from_cdc: int = 0           # a Debezium record: fix the row in Postgres
    unreadable: int = 0
    rejected: int = 0           # BigQuery refused the row again
    by_reason: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def window_final(event_ts: datetime.datetime, window_s: int, lateness_s: int, now: datetime.datetime) -> bool:
    """Whether the live pipeline's window of `event_ts` takes no more events at `now` (end + lateness passed)."""
    start = int(event_ts.timestamp()) // window_s * window_s
    return start + window_s + lateness_s <= now.timestamp()


class Redrive:
    def __init__(self, kafka_config: dict, dead_letter_topic: str, raw_topic: str, stage: str, *, window_s: int,
                 lateness_s: int, group: str | None = None, from_beginning: bool = False, dry_run: bool = False,
                 say: Callable[[str], None] = print, bigquery: Callable[[str, list, list], list] | None = None,
                 content_ids: frozenset[str] = frozenset(), reasons: frozenset[str] = frozenset(),
                 since: datetime.datetime | None = None):
        if stage not in STAGES:
            raise ValueError(f'--stage={stage!r}: expected one of {", ".join(STAGES)}')
        if stage == 'bigquery' and bigquery is None and not dry_run:
            raise ValueError('--stage=bigquery needs BigQuery (--bq_enabled, --bq_project, --bq_dataset)')
        self.bigquery = bigquery  # (table, rows, insert ids) -> errors per row, as insert_rows_json answers
        if stage != 'bigquery' and not raw_topic:
            raise ValueError('--raw_topic is empty: there is no raw topic to re-drive to')
        self.kafka_config, self.topic, self.raw_topic, self.stage = kafka_config, dead_letter_topic, raw_topic, stage
        self.window_s, self.lateness_s = window_s, lateness_s
        self.content_ids, self.reasons, self.since = frozenset(content_ids), frozenset(reasons), since
        self.selective = bool(self.content_ids or self.reasons or since is not None)
        self.group = group or GROUP_PREFIX + stage
        # a selective run under the default group would move it past the failures it leaves out
        self.commit = not dry_run and (group is not None or not self.selective)
        self.from_beginning, self.dry_run, self.say = from_beginning, dry_run, say
        self.counts = Counts()
        self._sent_ids: set[int] = set()
        self._hold = False  # once BigQuery refused a row, no later offset is committed in this run

    def _payload(self, letter: DeadLetter, now: datetime.datetime) -> tuple[bytes | None, bytes] | None:
        """(key, value) to send, or None with the reason counted."""
        c = self.counts
        if self.stage == 'enrich':
            event = DirectEvent.model_validate_json(letter.payload or '')
            if event.id in self._sent_ids:  # the same event failed from another record (a redelivered change)
                c.repeated += 1
                return None
            if window_final(event.event_ts, self.window_s, self.lateness_s, now):
                c.too_old += 1
                return None
            self._sent_ids.add(event.id)
            return str(event.id).encode(), event.model_dump_json().encode()
        if self.stage == 'bigquery':
            return self._bigquery_row(letter)
        if letter.source_topic != self.raw_topic:
            c.from_cdc += 1
            return None
        decode = (lambda text: base64.b64decode(text)) if letter.payload_encoding == 'base64' else (
            lambda text: text.encode('utf-8'))
        return (None if letter.key is None else decode(letter.key),
                b'' if letter.payload is None else decode(letter.payload))

    def _bigquery_row(self, letter: DeadLetter) -> tuple[str, dict] | None:
        """(table, row) of a BigQuery dead letter; ValueError when its table or row cannot be told."""
        table = letter.error.split(':', 1)[0]
        if table not in BIGQUERY_TABLES:
            raise ValueError(f'no table of ours named in the error: {letter.error[:80]!r}')
        row = json.loads(letter.payload or '')
        if not isinstance(row, dict):
            raise ValueError('the payload is not a row')
        return table, row

    def run(self) -> Counts:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition
        from kafka.structs import OffsetAndMetadata

        from connectors.dead_letters import failure_identity
        c = self.counts
        consumer = KafkaConsumer(group_id=self.group, enable_auto_commit=False, auto_offset_reset='earliest',
                                 allow_auto_create_topics=False, bootstrap_timeout_ms=10_000, **self.kafka_config)
        producer = None if self.dry_run or self.stage == 'bigquery' else KafkaProducer(acks='all', linger_ms=5,
                                                                                       **self.kafka_config)
        try:
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                raise LookupError(f'topic {self.topic} does not exist (no dead letter was ever written?)')
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for tp in tps:
                committed = None if self.from_beginning else consumer.committed(tp)
                consumer.seek_to_beginning(tp) if committed is None else consumer.seek(tp, committed)
            end = consumer.end_offsets(tps)
            todo = sum(end[tp] - consumer.position(tp) for tp in tps)
            self.say(f'{self.topic}: {todo} dead letters to read (group {self.group}); re-driving stage '
                     f'{self.stage} to {self.raw_topic}' + (' (dry run: nothing is sent or committed)'
                                                             if self.dry_run else ''))
            seen: set[tuple] = set()
            futures, next_offsets = [], {}
            now = datetime.datetime.now(datetime.timezone.utc)
            while any(consumer.position(tp) < end[tp] for tp in tps):
                for tp, messages in consumer.poll(timeout_ms=500).items():
                    for message in messages:
                        if message.offset >= end[tp]:
                            continue
                        next_offsets[tp] = message.offset + 1
                        c.read += 1
                        try:
                            record = json.loads(message.value)
                        except (TypeError, ValueError):
                            record = None
                        if not isinstance(record, dict) or record.get('stage') != self.stage:
                            c.skipped += 1
                            continue
                        identity = failure_identity(record)[:-1]  # every attempt of one failure once
                        if identity in seen:
                            c.repeated += 1
                            continue
                        seen.add(identity)
                        try:
                            letter = DeadLetter.model_validate(record)
                            if not self._selected(letter):
                                c.unselected += 1
                                continue
                            payload = self._payload(letter, now)
                        except (pydantic.ValidationError, ValueError):
                            c.unreadable += 1
                            continue
                        if payload is None:
                            continue
                        c.sent += 1
                        c.by_reason[letter.reason] += 1
                        if self.stage == 'bigquery':
                            futures.append(payload)
                        elif producer is not None:
                            futures.append(producer.send(self.raw_topic, key=payload[0], value=payload[1]))
                    if len(futures) >= BATCH:
                        self._settle(producer, consumer, futures, next_offsets, OffsetAndMetadata)
                        futures = []
            self._settle(producer, consumer, futures, next_offsets, OffsetAndMetadata)
        finally:
            consumer.close()
            if producer is not None:
                producer.close()
        return c

    def _selected(self, letter: DeadLetter) -> bool:
        """Whether a dead letter of this stage passes --reason, --since and --content-id."""
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.since is not None and (letter.last_failed_ts is None or letter.last_failed_ts < self.since):
            return False
        return not self.content_ids or content_id_of(letter) in self.content_ids

    def _settle(self, producer, consumer, futures, next_offsets, offset_and_metadata) -> None:
        if self.dry_run:
            return
        if self.stage == 'bigquery':
            if not self._insert(futures):
                self._hold = True  # a row was refused again: nothing more is committed, the next run retries
        else:
            producer.flush(timeout=60)
            for future in futures:
                if future.failed():
                    raise RuntimeError(f'Kafka refused a record for {self.raw_topic}: {future.exception}')
        if next_offsets and not self._hold and self.commit:
            consumer.commit({tp: offset_and_metadata(offset, '', -1) for tp, offset in next_offsets.items()})

    def _insert(self, rows: list[tuple[str, dict]]) -> bool:
        """Insert the rows into their tables with the sink's insert ids; False when BigQuery refused any."""
        from connectors.bigquery.sink import dead_letter_insert_id, event_insert_id, stats_insert_id
        insert_id = {'events_enriched_raw': event_insert_id, 'content_minute_stats_raw': stats_insert_id,
                     'dead_letter': dead_letter_insert_id}
        ok = True
        for table in BIGQUERY_TABLES:
            batch = [row for name, row in rows if name == table]
            if not batch:
                continue
            errors = self.bigquery(table, batch, [insert_id[table](row) for row in batch])
            if errors:
                ok = False
                self.counts.rejected += len(errors)
                self.counts.sent -= len(errors)
                self.say(f'{table}: BigQuery refused {len(errors)} rows again, e.g. {str(errors[0])[:200]}')
        return ok

    def report(self) -> list[str]:
        c = self.counts
        target = 'BigQuery' if self.stage == 'bigquery' else self.raw_topic
        verb = 'to send (dry run)' if self.dry_run else f'sent to {target}'
        lines = [f'{c.read:>8}  read', f'{c.skipped:>8}  skipped (other stages)']
        if self.selective:
            lines.append(f'{c.unselected:>8}  not selected (--content-id, --reason, --since)')
        lines += [
                 f'{c.repeated:>8}  repeated (a further dead letter of a failure handled in this run)',
                 f'{c.sent:>8}  {verb}']
        lines += [f'{n:>10}  {reason}' for reason, n in c.by_reason.most_common()]
        lines += [f'{c.too_old:>8}  not sent: their window is final in the live pipeline (end + allowed lateness '
                  'passed); they would be too_late',
                  f'{c.from_cdc:>8}  not sent: Debezium records (fix the row in Postgres: its update is a newer '
                  'version of the event)',
                  f'{c.unreadable:>8}  unreadable (not a dead letter of this stage\'s format)']
        if self.stage == 'bigquery':
            lines.append(f'{c.rejected:>8}  refused by BigQuery again (not committed: the next run retries them)')
        if self.selective and not self.commit and not self.dry_run:
            lines.append(f'nothing committed: a selective run moves a consumer group only when --group names one '
                         f'of its own ({self.group} is left where it was)')
        return lines


def content_id_of(letter: DeadLetter) -> str | None:
    """The content id the failed event or row names, when its payload is JSON that names one."""
    if letter.payload is None or letter.payload_encoding == 'base64':
        return None
    try:
        payload = json.loads(letter.payload)
    except ValueError:
        return None
    value = payload.get('content_id') if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None


def bigquery_inserter(opts) -> Callable[[str, list, list], list] | None:
    """insert_rows_json into the pipeline's dataset (the emulator with --bq_endpoint), or None when BigQuery is
    off."""
    if not opts.bigquery_enabled:
        return None
    from connectors.bigquery.clients import gcp_client
    client = gcp_client(opts.bq_project, opts.bq_endpoint or None)

    def insert(table: str, rows: list, row_ids: list) -> list:
        return client.insert_rows_json(f'{opts.bq_project}.{opts.bq_dataset}.{table}', rows, row_ids=row_ids)
    return insert


def main(argv: list[str]) -> int:
    from connectors.credentials import CredentialsRefused, check_kafka
    from launch.tools.redeliver import parse_reason, parse_since
    from pipelines.options import EngagementOptions, InvalidOption
    parser = argparse.ArgumentParser(prog='python -m launch.dead_letters redrive', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--stage', choices=STAGES, required=True,
                        help='Which failures to send again: enrich and parse to the raw topic, bigquery to BigQuery.')
    parser.add_argument('--dry-run', action='store_true', help='Count what would be sent; send and commit nothing.')
    parser.add_argument('--group', help=f'Consumer group that remembers where the last run ended. Default '
                                        f'{GROUP_PREFIX}<stage>.')
    parser.add_argument('--from-beginning', action='store_true',
                        help='Read the whole topic, not from the group\'s committed offsets (safe: the pipeline '
                             'counts an event once).')
    parser.add_argument('--content-id', action='append', default=[], dest='content_ids',
                        help='Only failures of this content (repeatable): the events or rows whose payload names it.')
    parser.add_argument('--reason', action='append', type=parse_reason, default=[],
                        help='Only this reason (repeatable), e.g. unknown_content.')
    parser.add_argument('--since', type=parse_since,
                        help='Only failures whose last attempt was at or after this time: ISO-8601 (UTC without an '
                             'offset) or an age such as 30m, 2h, 1d.')
    args, rest = parser.parse_known_args(argv)
    try:  # the pipeline's flags and variables: Kafka, the topics, the window and its lateness
        opts = EngagementOptions(rest).view_as(EngagementOptions).validate()
        run = Redrive(opts.kafka_consumer_config(), opts.dead_letter_topic, opts.raw_topic, args.stage,
                      window_s=opts.window_seconds, lateness_s=opts.allowed_lateness_seconds, group=args.group,
                      from_beginning=args.from_beginning, dry_run=args.dry_run,
                      say=lambda line: print(line, flush=True), bigquery=bigquery_inserter(opts),
                      content_ids=frozenset(args.content_ids), reasons=frozenset(args.reason), since=args.since)
        check_kafka(opts.kafka_consumer_config())
    except (InvalidOption, ValueError) as exc:
        parser.error(str(exc))
    except CredentialsRefused as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    from kafka.errors import KafkaError
    try:
        run.run()
    except (KafkaError, LookupError, RuntimeError) as exc:
        print(f'cannot re-drive from {opts.dead_letter_topic}: {exc}; is the stack up (make up)?', file=sys.stderr)
        return 2
    for line in run.report():
        print(line, flush=True)
    return 0
