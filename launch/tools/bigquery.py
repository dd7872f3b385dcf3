"""Inspect the BigQuery tables and create them (defaults: $ENGAGEMENT_BQ_ENDPOINT / _PROJECT / _DATASET, else the
local stack's emulator)::

    python -m launch.tools.bigquery info events_enriched_raw      # row count, partitioning, clustering, schema
    python -m launch.tools.bigquery query "SELECT COUNT(*) AS n FROM engagement.events_enriched"
    python -m launch.tools.bigquery ensure                         # create dataset, tables and views (idempotent)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from connectors.bigquery.clients import gcp_client
from connectors.bigquery.sink import json_default
from connectors.bigquery.tables import ensure_tables
from pipelines import local_stack


def table_info(client, project: str, dataset: str, name: str) -> dict[str, Any]:
    """Row count (COUNT(*)) and metadata of a table or view, as a dict (what `info` prints)."""
    table = client.get_table(f'{project}.{dataset}.{name}')
    count = list(client.query(f'SELECT COUNT(*) AS n FROM `{project}.{dataset}.{name}`').result())[0]['n']
    tp = table.time_partitioning
    return {'table': f'{project}.{dataset}.{name}', 'type': table.table_type, 'rows': count,
            'partitioning': {'type': tp.type_, 'field': tp.field} if tp else None,
            'clustering': list(table.clustering_fields or []),
            'schema': [{'name': f.name, 'type': f.field_type, 'mode': f.mode} for f in table.schema]}


def _print_info(info: dict[str, Any]) -> None:
    part = info['partitioning']
    print(f"{info['table']}  ({info['type']})")
    print(f"  rows          {info['rows']}")
    print(f"  partitioning  {part['type'] + ' on ' + str(part['field']) if part else 'none'}")
    print(f"  clustering    {', '.join(info['clustering']) or 'none'}")
    print('  schema')
    for f in info['schema']:
        print(f"    {f['name']:<24} {f['type']:<10} {f['mode'] or ''}")


def main(argv: list[str] | None = None) -> int:
    local = local_stack.addresses()
    parser = argparse.ArgumentParser(prog='python -m launch.tools.bigquery', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--endpoint', default=os.environ.get('ENGAGEMENT_BQ_ENDPOINT', local.bq_endpoint),
                        help='BigQuery endpoint; empty for real BigQuery (Application Default Credentials). '
                             'Env ENGAGEMENT_BQ_ENDPOINT; default the local stack, '
                             'http://127.0.0.1:$ENGAGEMENT_BQ_PORT (19050).')
    parser.add_argument('--project', default=local.bq_project,
                        help='Project. Env ENGAGEMENT_BQ_PROJECT; default engagement-local.')
    parser.add_argument('--dataset', default=local.bq_dataset,
                        help='Dataset. Env ENGAGEMENT_BQ_DATASET; default engagement.')
    sub = parser.add_subparsers(dest='command', required=True)
    info = sub.add_parser('info', help='row count, partitioning, clustering and schema of a table or view')
    info.add_argument('table')
    info.add_argument('--json', action='store_true', help='print one JSON document')
    query = sub.add_parser('query', help='run a SQL query and print the rows as JSON lines')
    query.add_argument('sql')
    sub.add_parser('ensure', help='create the dataset, tables and views where missing')
    args = parser.parse_args(argv)
    from google.api_core.exceptions import GoogleAPICallError
    try:
        client = gcp_client(args.project, args.endpoint)
        if args.command == 'info':
            result = table_info(client, args.project, args.dataset, args.table)
            print(json.dumps(result)) if args.json else _print_info(result)
        elif args.command == 'query':
            for row in client.query(args.sql).result():
                print(json.dumps(dict(row), default=json_default))
        else:
            for line in ensure_tables(args.project, args.dataset, args.endpoint, client=client):
                print(line)
    except GoogleAPICallError as exc:
        print(f'error: BigQuery at {args.endpoint or "(real BigQuery)"}: {exc.message}', file=sys.stderr)
        return 1
    except OSError as exc:
        print(f'error: cannot reach BigQuery at {args.endpoint or "(real BigQuery)"} ({exc}); is the stack up '
              '(python -m launch.stack up)?', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
