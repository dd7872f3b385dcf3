"""Erase one user's data (a data subject's request): `python -m launch.tools.erase_user --user-id UUID [--dry-run]`.

What holds a user's id, and what the command does there:

- BigQuery `events_enriched_raw` (and the `events_enriched` view over it): every row whose `user_id` is the user's id
  or, with the key in the environment (`ENGAGEMENT_PSEUDONYM_KEY`/`_FILE`, as the pipeline's), its pseudonym:
  deleted (DML `DELETE`). The window statistics hold no user ids.
- BigQuery `dead_letter`: every dead letter whose payload holds either id (a parse or enrich failure keeps the
  original record; a sink's failure the event as sent): deleted.
- The dead-letter topic on Kafka: records are immutable there; the command counts those that mention the user and
  says when the topic's retention (`retention.ms`) removes them.
- Redis: the per-user keys (`--user_recent_contents`: `<prefix>:user:<id>:recent`, `:ms`, `:events`) under either
  id: deleted. The window statistics hold no user ids.
- The REST API receiver is another system: the command prints the id it was sent (the pseudonym when the pipeline
  pseudonymises) for its owner's erasure.

It prints what it found and removed per place; `--dry-run` only counts. Takes the pipeline's `--bq_*`, `--kafka_*`
and `--dead_letter_topic` flags and their variables. Exit 0 when done, 2 on a bad id or an unreachable service.
"""
from __future__ import annotations

import argparse
import re
import sys

_UUID = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')


def user_ids(user_id: str) -> tuple[list[str], str | None]:
    """(ids to erase, the pseudonym or None when no key is set)."""
    from transforms.privacy import MissingPseudonymKey, pseudonym, pseudonym_key
    try:
        alias = pseudonym(user_id, pseudonym_key())
    except MissingPseudonymKey:
        alias = None
    return [user_id] + ([alias] if alias else []), alias


def erase_bigquery(opts, ids: list[str], dry_run: bool) -> list[str]:
    from connectors.bigquery.clients import gcp_client
    client = gcp_client(opts.bq_project, opts.bq_endpoint or None)
    dataset = f'`{opts.bq_project}.{opts.bq_dataset}'
    listed = ', '.join(f"'{i}'" for i in ids)  # canonical UUIDs only (checked): nothing to escape
    mentions = ' OR '.join(f"STRPOS(payload, '{i}') > 0" for i in ids)
    lines = []
    for table, where in (('events_enriched_raw', f'user_id IN ({listed})'), ('dead_letter', mentions)):
        found = list(client.query(f'SELECT COUNT(*) AS n FROM {dataset}.{table}` WHERE {where}').result())[0]['n']
        if found and not dry_run:
            client.query(f'DELETE FROM {dataset}.{table}` WHERE {where}').result()
        lines.append(f'BigQuery {opts.bq_dataset}.{table}: {found} rows' + (' (dry run: kept)' if dry_run else
                                                                           ' deleted' if found else ''))
    return lines


def erase_redis(opts, ids: list[str], dry_run: bool) -> str:
    import redis

    from connectors.credentials import redis_credentials
    from connectors.redis_users import user_keys
    client = redis.Redis.from_url(opts.redis_url, socket_timeout=10, **redis_credentials())
    try:
        keys = [key for i in ids for key in user_keys(opts.redis_prefix, i)]
        found = client.exists(*keys)
        if found and not dry_run:
            client.delete(*keys)
    finally:
        client.close()
    return f'Redis {opts.redis_prefix}:user:*: {found} per-user keys' + (' (dry run: kept)' if dry_run else
                                                                         ' deleted' if found else '')


def count_dead_letters(opts, ids: list[str]) -> str:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    from launch.tools.dead_letters import read_dead_letters
    config = opts.kafka_consumer_config()
    found = sum(1 for *_, record in read_dead_letters(config, opts.dead_letter_topic)
                if any(i in str(record.get('payload')) for i in ids))
    retention = '?'
    admin = KafkaAdminClient(**config)
    try:
        resource = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, opts.dead_letter_topic)])
        for entry in resource[0].resources[0][4]:
            if entry[0] == 'retention.ms':
                retention = f'{int(entry[1]) / 86_400_000:g} days' if int(entry[1]) >= 0 else 'never'
    except Exception:  # noqa: BLE001 - the count is what matters; the retention is a hint
        pass
    finally:
        admin.close()
    return (f'Kafka {opts.dead_letter_topic}: {found} records mention the user; Kafka cannot delete single records '
            f'of this topic: they are removed by its retention (retention.ms: {retention})')


def main(argv: list[str] | None = None) -> int:
    from pipelines.options import EngagementOptions, InvalidOption
    parser = argparse.ArgumentParser(prog='python -m launch.tools.erase_user', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--user-id', required=True, help='the user\'s id as in Postgres (a UUID)')
    parser.add_argument('--dry-run', action='store_true', help='count, delete nothing')
    args, rest = parser.parse_known_args(argv)
    user_id = args.user_id.strip().lower()
    if not _UUID.fullmatch(user_id):
        print(f'error: --user-id {args.user_id!r} is not a UUID', file=sys.stderr)
        return 2
    try:
        opts = EngagementOptions(rest).view_as(EngagementOptions)
        opts.view_as(EngagementOptions).validate()
    except InvalidOption as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    ids, alias = user_ids(user_id)
    print(f'user {user_id}' + (f', pseudonym {alias}' if alias else
                               ' (no pseudonymisation key in the environment: the raw id only)'))
    try:
        lines = erase_bigquery(opts, ids, args.dry_run) if opts.bigquery_enabled else ['BigQuery: off']
        lines.append(count_dead_letters(opts, ids))
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        print(f'error: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}', file=sys.stderr)
        return 2
    lines.append(erase_redis(opts, ids, args.dry_run))
    lines.append(f'REST API ({opts.api_url or "off"}): another system; it received the user as '
                 f'{alias if alias and opts.pseudonymize_user_ids else user_id}: ask its owner to erase it')
    for line in lines:
        print(line)
    return 0


if __name__ == '__main__':
    sys.exit(main())
