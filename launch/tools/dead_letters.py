"""The dead-letter console: list, count, show and export the dead letters of every stage, and re-drive them.

    python -m launch.dead_letters [list] [--stage S] [--reason R] [--since 2h] [--copies] [--follow]
    python -m launch.dead_letters show PARTITION:OFFSET
    python -m launch.dead_letters export [--stage S] [--reason R] [--since T] [--output FILE]
    python -m launch.dead_letters redeliver --stage api [--reason R] [--since 2h] [--dry-run]
    python -m launch.dead_letters redrive --stage enrich|parse|bigquery [--dry-run]

(`python -m launch.tools.dead_letters` is the same command.) `list` prints one line per failure (partition:offset,
stage, reason, key, error) and the counts by stage and reason; `show` one dead letter in full: its payload (decoded
when base64), the event id and source coordinates that tie it to the record that failed, the attempts and times,
the key under which a sink deduplicates it; `export` the selected failures as JSON lines (each with its
`partition` and `offset`). A failure is listed, counted and exported once, however many copies of its dead letter
replays and retried bundles wrote (connectors.dead_letters.failure_identity); `--copies` lists every record of the
topic. `redeliver` sends the REST API sink's dead letters to the API again (launch/tools/redeliver.py); `redrive`
sends parse and enrich failures back to the raw topic, and rows BigQuery rejected back to their table, once their
cause is fixed (launch/tools/redrive.py).
The listing commands need only Kafka; `redeliver` and `redrive` take the pipeline's --kafka_*, --dead_letter_topic
(and --api_*, --raw_topic) flags and their environment variables.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys

from connectors.credentials import CredentialsRefused, check_kafka, kafka_security_settings

# The pipeline flags `redeliver` shows in its help; the others are accepted (one flag set for everything) but hidden.
_PIPELINE_FLAG_PREFIXES = ('kafka_', 'api_', 'dead_letter_topic')


def distinct_failures(letters):
    """The (partition, offset, key, record) of `letters` (read_dead_letters) whose failure has not been seen
    before: the first copy of each."""
    from connectors.dead_letters import failure_identity
    seen: set[tuple] = set()
    for partition, offset, key, record in letters:
        identity = failure_identity(record, key)
        if identity not in seen:
            seen.add(identity)
            yield partition, offset, key, record


def read_dead_letters(kafka: str | dict, topic: str, follow: bool = False, poll_ms: int = 500):
    """Yield (partition, offset, key, record dict) of every record from the start of `topic`, copies included;
    stop at its end unless `follow`. `kafka`: bootstrap servers, or kafka-python settings (with security)."""
    from kafka import KafkaConsumer, TopicPartition
    config = {'bootstrap_servers': kafka} if isinstance(kafka, str) else kafka
    consumer = KafkaConsumer(**config, group_id=None, enable_auto_commit=False,
                             allow_auto_create_topics=False, bootstrap_timeout_ms=10_000)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        while follow or any(consumer.position(tp) < end[tp] for tp in assigned):
            for tp, messages in consumer.poll(timeout_ms=poll_ms).items():
                for message in messages:
                    try:
                        record = json.loads(message.value)
                    except ValueError:
                        record = None
                    if not isinstance(record, dict):
                        record = {'stage': '?', 'reason': 'not a dead letter', 'payload': message.value}
                    key = message.key.decode('utf-8', errors='replace') if message.key is not None else ''
                    yield tp.partition, message.offset, key, record
    finally:
        consumer.close()


def _listing_parser(command: str) -> argparse.ArgumentParser:
    from launch.tools.redeliver import parse_reason, parse_since
    parser = argparse.ArgumentParser(prog=f'python -m launch.dead_letters {command}', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--bootstrap', default=os.environ.get('ENGAGEMENT_KAFKA_BOOTSTRAP', '127.0.0.1:19092'),
                        help='Kafka bootstrap servers. Env ENGAGEMENT_KAFKA_BOOTSTRAP; default 127.0.0.1:19092. '
                             'Security from the pipeline\'s variables (KAFKA_SECURITY_PROTOCOL, ...; '
                             'docs/operations.md, "Authentication").')
    parser.add_argument('--topic', default=os.environ.get('ENGAGEMENT_DEAD_LETTER_TOPIC', 'engagement.dead_letters'),
                        help='Dead-letter topic. Env ENGAGEMENT_DEAD_LETTER_TOPIC; default engagement.dead_letters.')
    if command == 'show':
        parser.add_argument('where', type=_partition_offset, help='PARTITION:OFFSET, as `list` prints it')
        return parser
    parser.add_argument('--stage', action='append', default=[],
                        help='Only this stage (repeatable): parse, enrich, window, redis, bigquery, api.')
    parser.add_argument('--reason', action='append', type=parse_reason, default=[],
                        help='Only this reason (repeatable), e.g. unknown_content, malformed_json.')
    parser.add_argument('--since', type=parse_since,
                        help='Only failures whose last attempt was at or after this time: ISO-8601 (UTC without an '
                             'offset) or an age such as 30m, 2h, 1d.')
    parser.add_argument('--copies', action='store_true',
                        help='Every record, also the copies of a failure that replays and retried bundles wrote '
                             '(by default each failure once).')
    if command == 'export':
        parser.add_argument('--output', '-o', default='-', help='File to write the JSON lines to; default stdout.')
    else:
        parser.add_argument('--follow', action='store_true', help='Keep printing new dead letters until Ctrl-C.')
    return parser


def _partition_offset(text: str) -> tuple[int, int]:
    partition, sep, offset = text.partition(':')
    if not (sep and partition.isdigit() and offset.isdigit()):
        raise argparse.ArgumentTypeError(f'{text!r}: expected PARTITION:OFFSET, e.g. 0:42')
    return int(partition), int(offset)


def selected(record: dict, args) -> bool:
    """Whether a dead letter passes --stage, --reason and --since."""
    if args.stage and record.get('stage') not in args.stage:
        return False
    if args.reason and record.get('reason') not in args.reason:
        return False
    if args.since is not None:
        import datetime
        try:
            last = datetime.datetime.fromisoformat(str(record.get('last_failed_ts')).replace('Z', '+00:00'))
        except ValueError:
            return False
        return last >= args.since
    return True


def describe(partition: int, offset: int, key: str, record: dict) -> list[str]:
    """`show`: one dead letter in full, for a human."""
    import base64

    from schemas.dead_letter import DeadLetter
    lines = [f'dead letter {partition}:{offset} (key {key})']
    for field in ('stage', 'reason', 'error', 'attempts', 'first_failed_ts', 'last_failed_ts', 'event_id',
                  'source_topic', 'source_partition', 'source_offset', 'original_size_bytes', 'original_sha256'):
        if record.get(field) is not None:
            lines.append(f'  {field}: {record[field]}')
    try:
        lines.append(f'  idempotency key: {DeadLetter.model_validate(record).idempotency_key()}')
    except ValueError:
        lines.append('  (not a dead letter of this pipeline\'s format)')
    payload = record.get('payload')
    if record.get('payload_encoding') == 'base64' and payload is not None:
        raw = base64.b64decode(payload)
        lines.append(f'  payload ({len(raw):,} bytes, not UTF-8; shown with escapes): {raw!r}')
    else:
        try:
            pretty = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
        except (TypeError, ValueError):
            pretty = repr(payload)
        lines.append('  payload:')
        lines += [f'    {line}' for line in pretty.splitlines()]
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['redeliver']:
        return redeliver_main(argv[1:])
    if argv[:1] == ['redrive']:
        from launch.tools.redrive import main as redrive_main
        return redrive_main(argv[1:])
    command = argv[0] if argv[:1] in (['list'], ['show'], ['export']) else 'list'
    args = _listing_parser(command).parse_args(argv[1:] if argv[:1] == [command] else argv)

    from kafka.errors import KafkaError
    kafka = {'bootstrap_servers': args.bootstrap, **kafka_security_settings()}  # KAFKA_* variables
    try:
        check_kafka(kafka)
    except CredentialsRefused as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    try:
        if command == 'show':
            return _show(kafka, args)
        return _list(kafka, args, command)
    except KafkaError as exc:
        print(f'cannot read {args.topic} from Kafka at {args.bootstrap}: {exc}; is the stack up (make up)?',
              file=sys.stderr)
        return 2


def _show(kafka: dict, args) -> int:
    partition, offset = args.where
    for p, o, key, record in read_dead_letters(kafka, args.topic):
        if (p, o) == (partition, offset):
            print('\n'.join(describe(p, o, key, record)))
            return 0
    print(f'error: no record at {partition}:{offset} of {args.topic}', file=sys.stderr)
    return 1


def _list(kafka: dict, args, command: str) -> int:
    counts: collections.Counter = collections.Counter()
    records = 0

    def counted(letters):
        nonlocal records
        for letter in letters:
            records += 1
            yield letter
    letters = counted(read_dead_letters(kafka, args.topic, getattr(args, 'follow', False)))
    out = sys.stdout if command == 'list' or args.output == '-' else open(args.output, 'w', encoding='utf-8')
    try:
        for partition, offset, key, record in (letters if args.copies else distinct_failures(letters)):
            if not selected(record, args):
                continue
            stage, reason = record.get('stage'), record.get('reason')
            counts[(stage, reason)] += 1
            if command == 'export':
                out.write(json.dumps({'partition': partition, 'offset': offset, 'key': key, **record}) + '\n')
                continue
            error = str(record.get('error') or '').replace('\n', ' ')[:120]
            print(f'{partition}:{offset}\t{stage}\t{reason}\t{key}\t{error}', flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if out is not sys.stdout:
            out.close()
    listed = sum(counts.values())
    report = sys.stderr if command == 'export' else sys.stdout
    if args.stage or args.reason or args.since:
        summary = (f'{listed} selected {"dead letters" if args.copies else "failures"} in {args.topic} ({records} '
                   'records read)')
    else:
        summary = (f'{listed} dead letters in {args.topic}' if args.copies else
                   f'{listed} failures in {args.topic} ({records} records; {records - listed} copies written by '
                   'replays or retried bundles not listed)')
    if command == 'export' and args.output != '-':
        summary += f'; exported to {args.output}'
    print(summary, file=report)
    for (stage, reason), n in sorted(counts.items(), key=lambda item: (-item[1], str(item[0]))):
        print(f'{n:>8}  {stage}  {reason}', file=report)
    return 0


def _redeliver_parser() -> argparse.ArgumentParser:
    from launch.tools import redeliver
    from pipelines.options import ModeOptions, add_arguments
    parser = argparse.ArgumentParser(
        prog='python -m launch.tools.dead_letters redeliver',
        description='Redeliver dead-lettered events (stage api) to the REST API with the sink\'s client: same '
                    'OAuth2 credentials, idempotency keys, retries and circuit breaker. Reads with a consumer '
                    'group of its own from where the last run ended; events that fail again are written back as '
                    'new dead letters. Exit 0 when every selected event is delivered, 1 when some are not. '
                    'Takes the pipeline\'s --kafka_*, --dead_letter_topic and --api_* flags and their environment '
                    'variables (ENGAGEMENT_API_URL, ENGAGEMENT_API_CLIENT_ID, ENGAGEMENT_API_CLIENT_SECRET, ...).')
    parser.add_argument('--stage', choices=redeliver.STAGES, default='api',
                        help='Stage of the dead letters to redeliver. Default api (the only one so far).')
    parser.add_argument('--reason', action='append', type=redeliver.parse_reason, default=[],
                        help='Only dead letters with this reason (repeatable), e.g. circuit_open, api_http_503. '
                             'A selection writes nothing back and commits nothing.')
    parser.add_argument('--since', type=redeliver.parse_since,
                        help='Only dead letters that last failed at or after this time: ISO-8601 (UTC without an '
                             'offset) or an age such as 30m, 2h, 1d. Writes nothing back, commits nothing.')
    parser.add_argument('--dry-run', action='store_true', help='Read and count what would be redelivered; send, '
                                                              'write and commit nothing.')
    parser.add_argument('--group', help='Consumer group that remembers where the last run ended. Default '
                                        f'{redeliver.GROUP_PREFIX}<stage>.')
    parser.add_argument('--from-beginning', action='store_true',
                        help='Read the whole topic, not from the group\'s committed offsets (a redo is safe: the '
                             'API answers events it holds as duplicates).')
    parser.add_argument('--bootstrap', help='Alias of --kafka_bootstrap_servers (as for the listing command).')
    parser.add_argument('--topic', help='Alias of --dead_letter_topic (as for the listing command).')
    add_arguments(parser, but=(ModeOptions,))  # its own --since is another (a dead letter's failure time)
    for action in parser._actions:
        if action.dest in _pipeline_dests() and not action.dest.startswith(_PIPELINE_FLAG_PREFIXES):
            action.help = argparse.SUPPRESS
    return parser


def _pipeline_dests() -> set[str]:
    from pipelines.options import ModeOptions, add_arguments
    probe = argparse.ArgumentParser(add_help=False)
    add_arguments(probe, but=(ModeOptions,))
    return {action.dest for action in probe._actions}


def redeliver_main(argv: list[str]) -> int:
    """`redeliver`: the flags of the redelivery (launch/tools/redeliver.py), then a run and its report."""
    from connectors.http_api.client import ApiSinkConfig
    from launch.tools import redeliver
    from pipelines.options import EngagementOptions, InvalidOption
    parser = _redeliver_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:  # the sink's JSON log lines (retries, failed batches) on stderr
        logging.basicConfig(level=logging.WARNING, format='%(message)s', stream=sys.stderr)
        logging.getLogger('kafka').setLevel(logging.CRITICAL)  # its connection chatter; failures are reported
    pipeline = {dest: getattr(args, dest) for dest in _pipeline_dests()}
    if args.bootstrap:
        pipeline['kafka_bootstrap_servers'] = args.bootstrap
    if args.topic:
        pipeline['dead_letter_topic'] = args.topic
    try:
        opts = EngagementOptions([], **pipeline).view_as(EngagementOptions).validate()
        if not opts.api_url:
            raise InvalidOption('--api_url is empty (ENGAGEMENT_API_URL): there is no API to redeliver to')
        run = redeliver.Redelivery(opts.kafka_consumer_config(), opts.dead_letter_topic,
                                   ApiSinkConfig.from_options(opts),
                                   redeliver.Selection(args.stage, frozenset(args.reason), args.since),
                                   group=args.group, from_beginning=args.from_beginning, dry_run=args.dry_run,
                                   say=lambda line: print(line, flush=True))
    except (InvalidOption, ValueError) as exc:
        parser.error(str(exc))
    from kafka.errors import KafkaError
    try:
        check_kafka(opts.kafka_consumer_config())
    except CredentialsRefused as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    try:
        counts = run.run()
    except (KafkaError, LookupError, RuntimeError) as exc:
        print(f'cannot redeliver from {opts.dead_letter_topic} at {opts.kafka_bootstrap_servers}: {exc}; is the '
              f'stack up (make up)?', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted: what was committed is done; the next run continues from there', file=sys.stderr)
        return 1
    for line in run.report():
        print(line, flush=True)
    return 0 if counts.ok or args.dry_run else 1


if __name__ == '__main__':
    sys.exit(main())
