"""List and count the dead letters in the dead-letter topic, or redeliver those of the REST API sink.

    python -m launch.dead_letters [--bootstrap 127.0.0.1:19092] [--topic engagement.dead_letters] [--follow]
    python -m launch.dead_letters redeliver --stage api [--reason R] [--since 2h] [--dry-run]   (launch/redeliver.py)

The defaults match the local stack; `--follow` keeps reading, Ctrl-C stops.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys


def read_dead_letters(bootstrap: str, topic: str, follow: bool = False, poll_ms: int = 500):
    """Yield (partition, offset, key, record dict) from the start of `topic`; stop at its end unless `follow`."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
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
        from launch.redeliver import main as redeliver
        return redeliver(argv[1:])
    parser = argparse.ArgumentParser(prog='python -m launch.dead_letters',
                                     description='List the dead letters in a Kafka topic and count them by stage '
                                                 'and reason.',
                                     epilog='`python -m launch.dead_letters redeliver --help`: redeliver the '
                                            'dead letters of the REST API sink.')
    parser.add_argument('--bootstrap', default=os.environ.get('ENGAGEMENT_KAFKA_BOOTSTRAP', '127.0.0.1:19092'),
                        help='Kafka bootstrap servers. Env ENGAGEMENT_KAFKA_BOOTSTRAP; default 127.0.0.1:19092.')
    parser.add_argument('--topic', default=os.environ.get('ENGAGEMENT_DEAD_LETTER_TOPIC', 'engagement.dead_letters'),
                        help='Dead-letter topic. Env ENGAGEMENT_DEAD_LETTER_TOPIC; default engagement.dead_letters.')
    parser.add_argument('--follow', action='store_true', help='Keep printing new dead letters until Ctrl-C.')
    args = parser.parse_args(argv)

    from kafka.errors import KafkaError
    counts: collections.Counter = collections.Counter()
    try:
        for partition, offset, key, record in read_dead_letters(args.bootstrap, args.topic, args.follow):
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
    print(f'{sum(counts.values())} dead letters in {args.topic}')
    for (stage, reason), n in sorted(counts.items(), key=lambda item: (-item[1], str(item[0]))):
        print(f'{n:>8}  {stage}  {reason}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
