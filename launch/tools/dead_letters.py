"""The operator's command for the dead-letter topic: list and count the dead letters, or redeliver those of the REST
API sink (the redelivery itself: launch/tools/redeliver.py).

    python -m launch.tools.dead_letters [--bootstrap 127.0.0.1:19092] [--topic engagement.dead_letters] [--follow]
                                        [--copies]
    python -m launch.tools.dead_letters redeliver --stage api [--reason R] [--since 2h] [--dry-run]

The defaults match the local stack; `--follow` keeps reading, Ctrl-C stops. A failure is listed and counted once,
however many copies of its dead letter replays and retried bundles wrote (connectors.dead_letters.failure_identity);
`--copies` lists every record of the topic. Listing needs only Kafka; redelivery
takes the pipeline's --kafka_*, --dead_letter_topic and --api_* flags and their environment variables.
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['redeliver']:
        return redeliver_main(argv[1:])
    parser = argparse.ArgumentParser(prog='python -m launch.tools.dead_letters',
                                     description='List the dead letters in a Kafka topic and count them by stage '
                                                 'and reason.',
                                     epilog='`python -m launch.tools.dead_letters redeliver --help`: redeliver the '
                                            'dead letters of the REST API sink.')
    parser.add_argument('--bootstrap', default=os.environ.get('ENGAGEMENT_KAFKA_BOOTSTRAP', '127.0.0.1:19092'),
                        help='Kafka bootstrap servers. Env ENGAGEMENT_KAFKA_BOOTSTRAP; default 127.0.0.1:19092. '
                             'Security from the pipeline\'s variables (KAFKA_SECURITY_PROTOCOL, ...; '
                             'docs/operations.md, "Authentication").')
    parser.add_argument('--topic', default=os.environ.get('ENGAGEMENT_DEAD_LETTER_TOPIC', 'engagement.dead_letters'),
                        help='Dead-letter topic. Env ENGAGEMENT_DEAD_LETTER_TOPIC; default engagement.dead_letters.')
    parser.add_argument('--follow', action='store_true', help='Keep printing new dead letters until Ctrl-C.')
    parser.add_argument('--copies', action='store_true',
                        help='List every record, also the copies of a failure that replays and retried bundles '
                             'wrote (by default each failure once).')
    args = parser.parse_args(argv)

    from kafka.errors import KafkaError
    counts: collections.Counter = collections.Counter()
    records = 0

    def counted(letters):
        nonlocal records
        for letter in letters:
            records += 1
            yield letter
    kafka = {'bootstrap_servers': args.bootstrap, **kafka_security_settings()}  # KAFKA_* variables
    try:
        check_kafka(kafka)
    except CredentialsRefused as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    letters = counted(read_dead_letters(kafka, args.topic, args.follow))
    try:
        for partition, offset, key, record in (letters if args.copies else distinct_failures(letters)):
            stage, reason = record.get('stage'), record.get('reason')
            counts[(stage, reason)] += 1
            error = str(record.get('error') or '').replace('\n', ' ')[:120]
            print(f'{partition}:{offset}\t{stage}\t{reason}\t{key}\t{error}', flush=True)
    except KafkaError as exc:
        print(f'cannot read {args.topic} from Kafka at {args.bootstrap}: {exc}; is the stack up (make up)?',
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    listed = sum(counts.values())
    print(f'{listed} dead letters in {args.topic}' if args.copies else
          f'{listed} failures in {args.topic} ({records} records; {records - listed} copies written by replays or '
          'retried bundles not listed)')
    for (stage, reason), n in sorted(counts.items(), key=lambda item: (-item[1], str(item[0]))):
        print(f'{n:>8}  {stage}  {reason}')
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
