"""Redeliver the REST API sink's dead letters once the API is healthy again (the command line is
`python -m launch.tools.dead_letters redeliver --stage api`): read them back with a consumer group of its own, from
where the last run ended to the end offsets found at start, and deliver each event once per run with the sink's
own `ApiClient` (OAuth2, idempotency key = event id, retries, circuit breaker). An event that fails again is
written back as a new dead letter before the batch's offsets are committed, so a crash in between redoes that
batch (duplicates, nothing lost); once the breaker opens the rest stays in the topic for the next run. A selection
(`--reason`, `--since`) writes nothing back and commits nothing. In full: docs/operations.md, "Redelivering the
API sink's dead letters".
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import re
import sys
from typing import Callable, Iterator

import pydantic

from connectors.dead_letters import record_key
from connectors.http_api.client import CIRCUIT_OPEN, ApiClient, ApiSinkConfig
from schemas.dead_letter import DeadLetter
from schemas.events import EnrichedEvent

STAGES = ('api',)  # the stages whose dead letters can be redelivered
GROUP_PREFIX = 'engagement-redeliver-'
_REASON = re.compile(r'[a-z][a-z0-9_]{0,63}')
_DURATION = re.compile(r'(\d+(?:\.\d+)?)\s*([smhd])')
_UNIT_SECONDS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}


def parse_since(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """`--since`: an ISO-8601 time (UTC when it has no offset) or an age such as 90s, 30m, 2h, 1d."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now - datetime.timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected an ISO-8601 time (e.g. 2026-11-24T12:00:00Z) or an '
                                         f'age (e.g. 30m, 2h, 1d)') from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc)


def parse_reason(text: str) -> str:
    if not _REASON.fullmatch(text):
        raise argparse.ArgumentTypeError(f'{text!r}: a reason is a snake_case code such as api_http_503')
    return text


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which dead letters a run redelivers: one stage, optionally some reasons, optionally only recent failures."""
    stage: str = 'api'
    reasons: frozenset[str] = frozenset()
    since: datetime.datetime | None = None

    @property
    def partial(self) -> bool:
        return bool(self.reasons) or self.since is not None

    def matches(self, letter: DeadLetter) -> bool:
        return ((not self.reasons or letter.reason in self.reasons)
                and (self.since is None or letter.last_failed_ts >= self.since))

    def describe(self) -> str:
        parts = [f'stage {self.stage}']
        if self.reasons:
            parts.append('reason ' + '|'.join(sorted(self.reasons)))
        if self.since is not None:
            parts.append(f'last failed since {self.since.isoformat()}')
        return ', '.join(parts)


@dataclasses.dataclass
class Counts:
    """What a run did, one figure per line of its report."""
    read: int = 0            # dead letters read (group position .. end offsets at start)
    skipped: int = 0         # another stage, or not selected by --reason / --since
    selected: int = 0
    repeated: int = 0        # a further dead letter of an event this run already handled
    unreadable: int = 0      # the stage's, but the payload is not an event
    delivered: int = 0       # the API accepted the event now
    duplicates: int = 0      # the API held the event already
    still_failing: int = 0
    not_tried: int = 0       # the breaker was open: left in the topic for the next run
    written_back: int = 0
    pending_by_reason: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failing_by_reason: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    api: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def ok(self) -> bool:
        return not (self.still_failing or self.not_tried or self.unreadable)


def rewritten(letter: DeadLetter, reason: str, error: str, calls: int, now: datetime.datetime) -> DeadLetter:
    """The dead letter of an event whose redelivery failed again (see the module docstring)."""
    return DeadLetter(**{**letter.model_dump(), 'reason': reason, 'error': f'redelivery failed: {error}',
                         'attempts': letter.attempts + max(1, calls), 'last_failed_ts': now})


def _event_of(record: dict) -> tuple[DeadLetter, EnrichedEvent]:
    letter = DeadLetter.model_validate(record)
    if letter.payload is None or letter.payload_encoding != 'utf-8':
        raise ValueError('the payload is not an event as JSON')
    return letter, EnrichedEvent.model_validate_json(letter.payload)


class _Batch:
    """Consecutive records of the topic (in read order) and the events among them still to be sent."""

    def __init__(self):
        self.next_offsets: dict = {}      # TopicPartition -> (offset after its last record here, leader epoch)
        self.letters: list[tuple[DeadLetter, EnrichedEvent]] = []

    def note(self, tp, message) -> None:
        self.next_offsets[tp] = (message.offset + 1, getattr(message, 'leader_epoch', -1))


class Redelivery:
    """One run over the dead-letter topic; `run()` returns the Counts. `say` receives the report lines."""

    def __init__(self, kafka_config: dict, topic: str, api_config: ApiSinkConfig, selection: Selection, *,
                 group: str | None = None, from_beginning: bool = False, dry_run: bool = False,
                 say: Callable[[str], None] = print, warn: Callable[[str], None] | None = None):
        self.kafka_config = kafka_config
        self.topic = topic
        self.api_config = api_config.check()
        self.selection = selection
        self.group = group or GROUP_PREFIX + selection.stage
        self.from_beginning = from_beginning
        self.dry_run = dry_run
        self.commit = not (dry_run or selection.partial)
        self.say = say
        self.warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
        self.counts = Counts()
        self._consumer = self._producer = self._client = None

    # --- Kafka
    def _open(self) -> tuple[list, dict]:
        from kafka import KafkaConsumer, TopicPartition
        self._consumer = KafkaConsumer(group_id=self.group, enable_auto_commit=False, auto_offset_reset='earliest',
                                       allow_auto_create_topics=False, bootstrap_timeout_ms=10_000,
                                       **self.kafka_config)
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise LookupError(f'topic {self.topic} does not exist (no dead letter was ever written?)')
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        for tp in tps:
            committed = None if self.from_beginning else self._consumer.committed(tp)
            if committed is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)
        start = {tp: self._consumer.position(tp) for tp in tps}
        end = self._consumer.end_offsets(tps)
        return tps, {tp: (start[tp], end[tp]) for tp in tps}

    def _messages(self, tps: list, ranges: dict) -> Iterator[tuple]:
        """Every record from the start positions up to the end offsets found at start (not the write-backs)."""
        remaining = {tp for tp in tps if ranges[tp][0] < ranges[tp][1]}
        for tp in set(tps) - remaining:
            self._consumer.pause(tp)
        while remaining:
            for tp, messages in self._consumer.poll(timeout_ms=500).items():
                yield from ((tp, message) for message in messages if message.offset < ranges[tp][1])
            for tp in list(remaining):
                if self._consumer.position(tp) >= ranges[tp][1]:
                    remaining.discard(tp)
                    self._consumer.pause(tp)

    def _write_back(self, letters: list[DeadLetter]) -> None:
        from kafka import KafkaProducer
        if self._producer is None:
            self._producer = KafkaProducer(acks='all', linger_ms=5, **self.kafka_config)
        futures = []
        for letter in letters:
            value = letter.to_json()
            futures.append(self._producer.send(self.topic, key=record_key(json.loads(value)).encode('utf-8'),
                                               value=value.encode('utf-8')))
        self._producer.flush(timeout=60)
        for future in futures:
            if future.failed():
                raise RuntimeError(f'Kafka refused a write-back to {self.topic}: {future.exception}')
        self.counts.written_back += len(letters)

    def _commit(self, batch: _Batch) -> None:
        from kafka.structs import OffsetAndMetadata
        if batch.next_offsets:
            self._consumer.commit({tp: OffsetAndMetadata(offset, '', epoch)
                                   for tp, (offset, epoch) in batch.next_offsets.items()})

    # --- the run
    def _settle(self, batch: _Batch) -> bool:
        """Send the batch's events; False when the breaker is open (nothing sent, nothing committed)."""
        counts = self.counts
        if self.dry_run:
            counts.pending_by_reason.update(letter.reason for letter, _ in batch.letters)
            return True
        if batch.letters:
            outcomes = self._client.deliver([event for _, event in batch.letters])
            if any(o.reason == CIRCUIT_OPEN for o in outcomes):
                counts.not_tried += len(batch.letters)
                return False
            now = datetime.datetime.now(datetime.timezone.utc)
            again = []
            for (letter, _), outcome in zip(batch.letters, outcomes):
                if outcome.status == 'accepted':
                    counts.delivered += 1
                elif outcome.status == 'duplicate':
                    counts.duplicates += 1
                else:
                    counts.still_failing += 1
                    counts.failing_by_reason[outcome.reason] += 1
                    again.append(rewritten(letter, outcome.reason, outcome.error, outcome.attempts, now))
            if again and self.commit:
                self._write_back(again)
        if self.commit:
            self._commit(batch)
        return True

    def run(self) -> Counts:
        counts, selection = self.counts, self.selection
        try:
            tps, ranges = self._open()
            total = sum(end - start for start, end in ranges.values())
            origin = 'from the beginning' if self.from_beginning else 'from its committed offsets'
            self.say(f'{self.topic}: {total} dead letters to read (group {self.group}, {origin}); '
                     f'redelivering {selection.describe()} to {self.api_config.events_url}'
                     + (' (dry run: nothing is sent, written or committed)' if self.dry_run else '')
                     + (' (a selection: nothing is written back or committed)'
                        if selection.partial and not self.dry_run else ''))
            if not self.dry_run:
                self._client = ApiClient(self.api_config, count=lambda name, n: counts.api.update({name: n}))
            seen: set[int] = set()
            batch, sending = _Batch(), True
            for tp, message in self._messages(tps, ranges):
                counts.read += 1
                if sending:
                    batch.note(tp, message)
                try:
                    record = json.loads(message.value)
                except (TypeError, ValueError):
                    record = None
                if not isinstance(record, dict) or record.get('stage') != selection.stage:
                    counts.skipped += 1
                    continue
                try:
                    letter, event = _event_of(record)
                except (pydantic.ValidationError, ValueError) as exc:
                    counts.unreadable += 1
                    self.warn(f'unreadable dead letter at {tp.partition}:{message.offset}: '
                              f'{str(exc).splitlines()[0]}')
                    continue
                if not selection.matches(letter):
                    counts.skipped += 1
                    continue
                counts.selected += 1
                if event.id in seen:
                    counts.repeated += 1
                    continue
                seen.add(event.id)
                if not sending:
                    counts.not_tried += 1
                    continue
                batch.letters.append((letter, event))
                if len(batch.letters) >= self.api_config.batch_size:
                    sending = self._settle(batch)
                    batch = _Batch()
            if sending:
                self._settle(batch)
        finally:
            self.close()
        return counts

    def close(self) -> None:
        for resource in (self._client, self._producer, self._consumer):
            if resource is not None:
                resource.close()
        self._client = self._producer = self._consumer = None

    def report(self) -> list[str]:
        c = self.counts
        lines = [f'{c.read:>8}  read',
                 f'{c.skipped:>8}  skipped (other stages' + (', not selected)' if self.selection.partial else ')'),
                 f'{c.selected:>8}  selected',
                 f'{c.repeated:>8}  repeated (a further dead letter of an event sent in this run)',
                 f'{c.unreadable:>8}  unreadable (payload not an event; left in the topic)']
        if self.dry_run:
            lines.append(f'{sum(c.pending_by_reason.values()):>8}  to redeliver (dry run)')
            lines += [f'{n:>10}  {reason}' for reason, n in c.pending_by_reason.most_common()]
            return lines
        written = 'written back as new dead letters' if self.commit else 'left in the topic'
        lines += [f'{c.delivered:>8}  delivered (accepted by the API)',
                  f'{c.duplicates:>8}  duplicates (the API held them already)',
                  f'{c.still_failing:>8}  still failing ({written})']
        lines += [f'{n:>10}  {reason}' for reason, n in c.failing_by_reason.most_common()]
        lines.append(f'{c.not_tried:>8}  not tried (circuit breaker open; left in the topic for the next run)')
        api = c.api
        lines.append(f'API: {api["requests"]} requests, {api["retries"]} retries, breaker opened '
                     f'{api["breaker_opened"]} times, {api["token_fetches"]} token fetches')
        if c.selected == 0 and c.unreadable == 0:
            lines.append('nothing to do')
        elif c.ok:
            lines.append(f'OK: the API holds the event of every selected dead letter '
                         f'({c.delivered + c.duplicates} events)')
        else:
            lines.append(f'NOT DONE: {c.still_failing} still failing, {c.not_tried} not tried, {c.unreadable} '
                         f'unreadable; run again once the API is healthy')
        return lines
