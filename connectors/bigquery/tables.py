"""The warehouse: its tables and views, derived from the models in `schemas/`, and `ensure_tables`.

Every write appends to a `*_raw` table and a view picks one row per key at query time (the newest version of an
event; the pane written last per content and window): streaming inserts are at least once and BigQuery's insertId
deduplication is best effort, so exactly one row per key is a property of the views (docs/pipeline.md,
"BigQuery tables").
"""
from __future__ import annotations

import dataclasses
from typing import cast

from pydantic import BaseModel

from connectors.bigquery.clients import gcp_client
from schemas.bigquery import bigquery_fields
from schemas.dead_letter import DeadLetter
from schemas.events import EnrichedEvent
from schemas.stats import ContentWindowStatsRow


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    model: type[BaseModel]
    partition_field: str
    clustering: tuple[str, ...]

    def fields(self) -> list[dict[str, str]]:
        return bigquery_fields(self.model)

    def json_columns(self) -> tuple[str, ...]:
        return tuple(f['name'] for f in self.fields() if f['type'] == 'JSON')


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """A view with one row per `key` over `source`: the first row in `order`."""
    name: str
    source: str
    key: tuple[str, ...]
    order: tuple[str, ...]

    def sql(self, project: str, dataset: str) -> str:
        return (f'SELECT * EXCEPT (_version) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {", ".join(self.key)} '
                f'ORDER BY {", ".join(self.order)}) AS _version FROM `{project}.{dataset}.{self.source}`) '
                'WHERE _version = 1')


EVENTS_RAW = TableSpec('events_enriched_raw', EnrichedEvent, 'event_ts', ('user_id', 'content_type'))
STATS_RAW = TableSpec('content_minute_stats_raw', ContentWindowStatsRow, 'window_start_ts',
                      ('content_type', 'content_id'))
DEAD_LETTERS = TableSpec('dead_letter', DeadLetter, 'first_failed_ts', ('stage', 'reason'))
TABLES = (EVENTS_RAW, STATS_RAW, DEAD_LETTERS)
EVENTS_VIEW = ViewSpec('events_enriched', EVENTS_RAW.name, ('id',),
                       ('source_lsn DESC NULLS LAST', 'ingest_ts DESC NULLS LAST', 'source_offset DESC NULLS LAST'))
# As the Redis sink decides (connectors/redis.py): the pane with the most distinct events wins, the later written of
# those. Panes accumulate, so the most complete one is the newest in a run; a restart's partial recount, or a pane
# stamped out of order, never replaces a more complete one.
STATS_VIEW = ViewSpec('content_minute_stats', STATS_RAW.name, ('content_id', 'window_start'),
                      ('events DESC', 'written_ts DESC'))
VIEWS = (EVENTS_VIEW, STATS_VIEW)


def _schema(spec: TableSpec):
    from google.cloud import bigquery
    return [bigquery.SchemaField(f['name'], f['type'], mode=f['mode'], description=cast(str, f.get('description')))
            for f in spec.fields()]


def ensure_tables(project: str, dataset: str, endpoint: str | None = None, client=None) -> list[str]:
    """Create the dataset, the tables (with partitioning and clustering) and the views where missing; return one
    line per object saying what was done. Idempotent: an existing table keeps its columns and gains the NULLABLE
    columns a newer model added (BigQuery adds columns in place; it cannot change or drop them); views get the
    current query."""
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery
    client = client or gcp_client(project, endpoint)
    done = []
    ds = bigquery.Dataset(f'{project}.{dataset}')
    try:
        client.get_dataset(ds.reference)
        done.append(f'dataset {dataset}: exists')
    except NotFound:
        client.create_dataset(ds, exists_ok=True)
        done.append(f'dataset {dataset}: created')
    for spec in TABLES:
        table = bigquery.Table(f'{project}.{dataset}.{spec.name}', schema=_schema(spec))
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY,
                                                            field=spec.partition_field)
        table.clustering_fields = list(spec.clustering)
        table.description = (spec.model.__doc__ or '').split('\n')[0]
        try:
            existing = client.get_table(table.reference)
        except NotFound:
            existing = None
        if existing is not None:
            have = {field.name for field in existing.schema}
            added = [field for field in table.schema if field.name not in have and field.mode == 'NULLABLE']
            if added:  # a newer model's optional columns (e.g. dead_letter.original_sha256): add them in place
                existing.schema = [*existing.schema, *added]
                client.update_table(existing, ['schema'])
                done.append(f'table {spec.name}: exists; added {", ".join(f.name for f in added)}')
            else:
                done.append(f'table {spec.name}: exists')
        else:
            client.create_table(table, exists_ok=True)
            done.append(f'table {spec.name}: created')
    for view_spec in VIEWS:
        view = bigquery.Table(f'{project}.{dataset}.{view_spec.name}')
        view.view_query = view_spec.sql(project, dataset)
        try:
            client.get_table(view.reference)
            client.delete_table(view.reference)
            client.create_table(view)
            done.append(f'view {view_spec.name}: replaced')
        except NotFound:
            client.create_table(view, exists_ok=True)
            done.append(f'view {view_spec.name}: created')
    return done
