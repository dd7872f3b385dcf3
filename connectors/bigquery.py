"""BigQuery: the warehouse tables, `ensure_tables`, and the write transforms.

Beam concepts: Beam's native BigQuery sink — `BigQueryWriteFn` (the DoFn behind `WriteToBigQuery`'s
STREAMING_INSERTS path) and `WriteToBigQuery` itself for FILE_LOADS and STORAGE_WRITE_API — inside composite
`PTransform`s; the rows BigQuery rejects (`failed_rows_with_errors`) become dead letters; `test_client` pointing
Beam at a local emulator.

Tables (dataset `--bq_dataset`; every column derived from a model in `schemas/`, never restated here):

  events_enriched_raw       EnrichedEvent (incl. ingest_ts, source topic/partition/offset/LSN); append-only;
                            DAY-partitioned on event_ts, clustered by user_id, content_type
  events_enriched           VIEW: one row per event id (its newest version: highest LSN, then ingest time,
                            then offset)
  content_minute_stats_raw  ContentWindowStatsRow: one row per pane written; DAY-partitioned on window_start_ts,
                            clustered by content_type, content_id
  content_minute_stats      VIEW: one row per (content_id, window_start): the pane written last, as in Redis
  dead_letter               DeadLetter; DAY-partitioned on first_failed_ts, clustered by stage, reason

Why raw tables plus views. Streaming inserts are at least once (a retried bundle inserts again) and BigQuery's
insertId deduplication is best effort (about a minute); the local emulator does not deduplicate at all. So every
write appends and the views pick one row per key at query time: exactly one row per event id and per
(content, window), whatever was inserted twice.

Write methods (`--bq_write_method`):
  streaming_inserts  (default) insertAll with our own insertIds: `<event id>` (`<event id>@<LSN>` for CDC events,
                     so a later version of a row is not dropped as a duplicate of the earlier one),
                     `<window_start>/<content_id>/<pane_index>/<digest of the pane's figures>` for stats (a
                     recomputed pane with other figures is a different row), `DeadLetter.idempotency_key()` for dead
                     letters. Deterministic ids need no Reshuffle to commit them. Rows BigQuery rejects come out
                     as dead letters (stage bigquery, reason bigquery_rejected, error = BigQuery's message).
  file_loads         load jobs from newline-delimited JSON files under `--bq_temp_location` (gs://), every
                     `--bq_load_frequency_seconds` when streaming. A bad row fails its load job (and so the bundle):
                     there are no per-row rejections, the dead-letter output stays empty.
  storage_write_api  Dataflow only: Beam's Python Storage Write API runs through a Java expansion service that is
                     not available locally; with `--bq_endpoint` it is refused at construction.

Emulator (`--bq_endpoint`, the local stack's bqemulator): Beam is handed `EmulatorClient` as `test_client`, an
apitools `BigqueryV2(url=<endpoint>/bigquery/v2/, get_credentials=False)` plus `insert_rows_json` through
`google.cloud.bigquery.Client` with `AnonymousCredentials`. No Application Default Credentials are looked up, no
OAuth flow can start and no metadata server is waited for (`NO_GCE_CHECK=True`; Beam's process-wide credential
lookup is settled as anonymous, which otherwise retries for ~30 s before GCS is touched by file loads; GCS goes to
the storage emulator through `STORAGE_EMULATOR_HOST`). The client is picklable (it pickles as its addresses).

Inspecting the tables and creating them are operator commands: `python -m launch.bigquery`.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import time
from typing import Any, Iterable, Mapping, NamedTuple, cast

import apache_beam as beam
from apache_beam.io.gcp.bigquery import BigQueryDisposition, BigQueryWriteFn, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from pydantic import BaseModel

from schemas.bigquery import bigquery_fields
from schemas.dead_letter import DeadLetter
from schemas.events import EnrichedEvent
from schemas.stats import ContentWindowStatsRow

_LOG = logging.getLogger(__name__)

STAGE = 'bigquery'
REJECTED = 'bigquery_rejected'
WRITE_METHODS = ('streaming_inserts', 'file_loads', 'storage_write_api')
_EMULATOR_INSERT_DEADLINE_S = 60.0  # the client library's default retries a 500 for 600 s


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
STATS_VIEW = ViewSpec('content_minute_stats', STATS_RAW.name, ('content_id', 'window_start'),
                      ('written_ts DESC', 'events DESC'))
VIEWS = (EVENTS_VIEW, STATS_VIEW)


# ---------------------------------------------------------------------------------------------------------------
# Clients

def activate_local_gcp(storage_endpoint: str | None) -> None:
    """Make this process talk to local emulators without credentials (see the module docstring). Idempotent."""
    os.environ['NO_GCE_CHECK'] = 'True'
    if storage_endpoint:
        os.environ['STORAGE_EMULATOR_HOST'] = storage_endpoint
    from apache_beam.internal.gcp import auth
    with auth._Credentials._credentials_lock:
        if not auth._Credentials._credentials_init:
            auth._Credentials._credentials = None
            auth._Credentials._credentials_init = True


class EmulatorClient:
    """Beam's `test_client` for a BigQuery emulator: apitools' BigqueryV2 without credentials (tables, jobs, ...)
    plus `insert_rows_json` (what Beam's streaming inserts call) and `test_clock` (what file loads call). Built
    lazily in each worker; pickles as its three addresses."""

    def __init__(self, endpoint: str, project: str, storage_endpoint: str | None = None):
        self.endpoint = endpoint.rstrip('/')
        self.project = project
        self.storage_endpoint = storage_endpoint
        self._v2 = None
        self._gcp = None

    def __getstate__(self):
        return {'endpoint': self.endpoint, 'project': self.project, 'storage_endpoint': self.storage_endpoint}

    def __setstate__(self, state):
        self.__init__(**state)

    def _apitools(self):
        if self._v2 is None:
            activate_local_gcp(self.storage_endpoint)
            from apache_beam.io.gcp.internal.clients import bigquery as bigquery_v2
            self._v2 = bigquery_v2.BigqueryV2(url=f'{self.endpoint}/bigquery/v2/', get_credentials=False)
        return self._v2

    def __getattr__(self, name):
        if name.startswith('_'):
            raise AttributeError(name)
        return getattr(self._apitools(), name)

    def insert_rows_json(self, table, json_rows, row_ids=None, timeout=None, **kwargs):
        from google.api_core.retry import Retry
        if self._gcp is None:
            self._gcp = gcp_client(self.project, self.endpoint)
        return self._gcp.insert_rows_json(table, json_rows, row_ids=row_ids, timeout=timeout,
                                          retry=Retry(deadline=_EMULATOR_INSERT_DEADLINE_S), **kwargs)

    def test_clock(self) -> float:
        return time.time()


def gcp_client(project: str, endpoint: str | None):
    """A google.cloud.bigquery Client: anonymous against `endpoint`, Application Default Credentials without."""
    from google.cloud import bigquery
    if not endpoint:
        return bigquery.Client(project=project)
    activate_local_gcp(None)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=endpoint.rstrip('/')))


# ---------------------------------------------------------------------------------------------------------------
# Tables

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


# ---------------------------------------------------------------------------------------------------------------
# Rows

def json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)


def to_row(element: Any, json_columns: Iterable[str] = ()) -> dict[str, Any]:
    """A model (or an already dumped dict) as a BigQuery JSON row; JSON columns as JSON text, which is what
    insertAll and the emulator's loader take for them."""
    row = element.model_dump(mode='json') if isinstance(element, BaseModel) else dict(element)
    for column in json_columns:
        value = row.get(column)
        if value is not None and not isinstance(value, str):
            row[column] = json.dumps(value, separators=(',', ':'), default=json_default)
    return row


def event_insert_id(row: Mapping[str, Any]) -> str:
    lsn = row.get('source_lsn')
    return f"{row.get('id')}@{lsn}" if lsn is not None else str(row.get('id'))


def stats_insert_id(row: Mapping[str, Any]) -> str:
    figures = json.dumps({k: v for k, v in row.items() if k not in ('written_ts',)}, sort_keys=True,
                         default=json_default)
    digest = hashlib.sha256(figures.encode()).hexdigest()[:16]
    return f"{row.get('window_start')}/{row.get('content_id')}/{row.get('pane_index')}/{digest}"


def dead_letter_insert_id(row: Mapping[str, Any]) -> str:
    try:
        return DeadLetter.model_validate(row).idempotency_key()
    except ValueError:  # not a valid dead letter: BigQuery will say why; any stable id will do
        return 'invalid/' + hashlib.sha256(json.dumps(row, sort_keys=True, default=json_default).encode()).hexdigest()


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63 else None


def rejected_to_dead_letter(destination: Any, row: Mapping[str, Any], errors: Any,
                            now: datetime.datetime | None = None) -> DeadLetter:
    """A row BigQuery rejected as a DeadLetter: payload = the row as JSON, error = BigQuery's message(s)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if isinstance(errors, str):
        text = errors
    else:
        parts = []
        for err in errors or ():
            location = err.get('location') if isinstance(err, Mapping) else None
            message = err.get('message') if isinstance(err, Mapping) else str(err)
            reason = err.get('reason') if isinstance(err, Mapping) else None
            parts.append(f'{location + ": " if location else ""}{message}{f" ({reason})" if reason else ""}')
        text = '; '.join(parts) or 'rejected without an error message'
    table = str(destination).rsplit('.', 1)[-1]
    topic = row.get('source_topic')
    return DeadLetter(payload=json.dumps(dict(row), separators=(',', ':'), default=json_default), stage=STAGE,
                      reason=REJECTED, error=f'{table}: {text}', first_failed_ts=now, last_failed_ts=now,
                      event_id=_int_or_none(row.get('id') if 'id' in row else row.get('event_id')),
                      source_topic=topic if isinstance(topic, str) else None,
                      source_partition=_int_or_none(row.get('source_partition')),
                      source_offset=_int_or_none(row.get('source_offset')))


# ---------------------------------------------------------------------------------------------------------------
# Transforms

class _JsonSizedBigQueryWriteFn(BigQueryWriteFn):
    """Beam's streaming-insert DoFn, measuring each row by its JSON text instead of `objsize.get_deep_size`.

    Beam sizes every row against the request payload limit with a recursive walk of the Python objects (~40 µs
    for one of our event rows, which made it the costliest step of the whole pipeline); the rows here are
    JSON-ready dicts, and their JSON text (~5 µs) is what the request actually carries."""

    def _check_row_size(self, row_and_insert_id):
        row, insert_id = row_and_insert_id
        size = len(json.dumps(row, default=str)) + len(insert_id or '')
        if size >= self._max_insert_payload_size:
            return size, (f'Received row with size {size / 1_000_000}MB that exceeds the maximum insert payload '
                          f'size set ({self._max_insert_payload_size / 1_000_000}MB).')
        return size, None


class BigQueryWriteResult(NamedTuple):
    written: Any        # Beam's own result (streaming inserts: the main output; file loads: the load job pairs)
    dead_letters: beam.PCollection  # DeadLetter records of the rows BigQuery rejected


class _ToRows(beam.DoFn):
    """Element -> (table, (row, insertId)); also makes this worker talk to the emulators when one is used."""

    def __init__(self, table: str, json_columns: tuple[str, ...], insert_id, storage_endpoint: str | None,
                 local: bool):
        self._table = table
        self._json_columns = json_columns
        self._insert_id = insert_id
        self._storage_endpoint = storage_endpoint
        self._local = local
        self._rows = Metrics.counter('WriteToBigQuery', f'{table.rsplit(".", 1)[-1]}.rows')

    def setup(self):
        if self._local:
            activate_local_gcp(self._storage_endpoint)

    def process(self, element):
        row = to_row(element, self._json_columns)
        self._rows.inc()
        yield self._table, (row, self._insert_id(row))


class _RejectedToDeadLetters(beam.DoFn):
    def __init__(self):
        self._rejected = Metrics.counter('WriteToBigQuery', 'rejected_rows')

    def process(self, failed):
        destination, row, errors = failed
        self._rejected.inc()
        letter = rejected_to_dead_letter(destination, row, errors)
        _LOG.warning(json.dumps({'event': 'bigquery_row_rejected', 'table': str(destination),
                                 'event_id': letter.event_id, 'error': letter.error}))
        yield letter


class _WriteTable(beam.PTransform):
    """Write elements (models of `spec.model`, or dicts of its dumped fields) to one table; see the module
    docstring for the methods. Returns a BigQueryWriteResult."""

    def __init__(self, spec: TableSpec, insert_id, project: str, dataset: str, method: str = 'streaming_inserts',
                 endpoint: str | None = None, storage_endpoint: str | None = None,
                 temp_location: str | None = None, load_frequency_seconds: int = 60, batch_size: int = 500):
        super().__init__()
        if method not in WRITE_METHODS:
            raise ValueError(f'write method {method!r}: expected one of {", ".join(WRITE_METHODS)}')
        if method == 'storage_write_api' and endpoint:
            raise ValueError('the Storage Write API cannot run locally (Beam\'s Python path needs a Java expansion '
                             'service that is not available here): use --bq_write_method=streaming_inserts or '
                             'file_loads with --bq_endpoint, or storage_write_api against real BigQuery '
                             '(--bq_endpoint= empty) on Dataflow.')
        if method == 'file_loads' and temp_location is not None and not temp_location.startswith('gs://'):
            raise ValueError(f'--bq_temp_location={temp_location!r}: file loads need a gs:// location')
        self._spec = spec
        self._insert_id = insert_id
        self._table = f'{project}:{dataset}.{spec.name}'
        self._method = method
        self._endpoint = endpoint or None
        self._storage_endpoint = storage_endpoint if self._endpoint else None
        self._client = EmulatorClient(self._endpoint, project, self._storage_endpoint) if self._endpoint else None
        self._temp_location = temp_location
        self._load_frequency = load_frequency_seconds
        self._batch_size = batch_size

    def expand(self, elements):
        keyed = elements | 'ToRows' >> beam.ParDo(_ToRows(
            self._table, self._spec.json_columns(), self._insert_id, self._storage_endpoint,
            self._client is not None))
        if self._method == 'streaming_inserts':
            outputs = keyed | 'StreamingInserts' >> beam.ParDo(_JsonSizedBigQueryWriteFn(
                batch_size=self._batch_size, create_disposition=BigQueryDisposition.CREATE_NEVER,
                write_disposition=BigQueryDisposition.WRITE_APPEND, test_client=self._client,
                retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR)).with_outputs(
                    BigQueryWriteFn.FAILED_ROWS, BigQueryWriteFn.FAILED_ROWS_WITH_ERRORS, main='written')
            rejected = outputs[BigQueryWriteFn.FAILED_ROWS_WITH_ERRORS]
            written = outputs.written
        else:
            rows = keyed | 'DropInsertIds' >> beam.Map(lambda kv: kv[1][0])
            streaming = elements.pipeline.options.view_as(StandardOptions).streaming
            write = WriteToBigQuery(
                self._table, schema={'fields': self._spec.fields()},
                method=(WriteToBigQuery.Method.FILE_LOADS if self._method == 'file_loads'
                        else WriteToBigQuery.Method.STORAGE_WRITE_API),
                create_disposition=BigQueryDisposition.CREATE_NEVER,
                write_disposition=BigQueryDisposition.WRITE_APPEND, test_client=self._client,
                custom_gcs_temp_location=self._temp_location,
                triggering_frequency=self._load_frequency if streaming else None)
            result = rows | 'WriteToBigQuery' >> write
            written = result
            if self._method == 'storage_write_api':
                table = self._table
                rejected = (result.failed_rows_with_errors
                            | 'StorageApiErrors' >> beam.Map(lambda r: (table, r[0], r[1])))
            else:
                rejected = elements.pipeline | 'NoPerRowRejections' >> beam.Create([])
        dead_letters = rejected | 'RejectedToDeadLetters' >> beam.ParDo(_RejectedToDeadLetters())
        return BigQueryWriteResult(written, dead_letters)


class WriteEventsToBigQuery(_WriteTable):
    """EnrichedEvent -> events_enriched_raw (the view events_enriched holds one row per event id)."""

    def __init__(self, project: str, dataset: str, **kwargs):
        super().__init__(EVENTS_RAW, event_insert_id, project, dataset, **kwargs)


class WriteStatsToBigQuery(_WriteTable):
    """ContentWindowStats panes -> content_minute_stats_raw, stamped with the time written (the view
    content_minute_stats holds the newest pane per content and window)."""

    def __init__(self, project: str, dataset: str, decouple: bool = False, ended_windows_only: bool = False,
                 **kwargs):
        """decouple: write in a stage of its own (a Reshuffle after the stamp), so that a slow BigQuery does not
        hold up what else consumes the panes (the Redis sink). The stamp comes first: it records the order in
        which the panes were produced, which the shuffle does not keep and the view relies on.
        ended_windows_only: write only panes produced once their window has ended (wall clock): the on-time pane
        (always fired at the watermark, new data or not) and late panes, and early panes after the end; the early
        panes of an open window (one per content and second) are the live view's business (Redis), and would cost
        BigQuery streaming inserts for rows that the next pane replaces anyway."""
        super().__init__(STATS_RAW, stats_insert_id, project, dataset, **kwargs)
        self._decouple = decouple
        self._ended_windows_only = ended_windows_only

    def expand(self, stats):
        if self._ended_windows_only:
            stats = stats | 'EndedWindowsOnly' >> beam.Filter(_window_has_ended)
        rows = stats | 'StampWritten' >> beam.Map(_stamp_written)
        if self._decouple:
            rows = rows | 'Decouple' >> beam.Reshuffle()
        return super().expand(rows)


def _window_has_ended(stats: Any) -> bool:
    end = getattr(stats, 'window_end') if isinstance(stats, BaseModel) else stats['window_end']
    return end <= time.time()


def _stamp_written(stats: Any) -> dict[str, Any]:
    row = stats.model_dump(mode='json') if isinstance(stats, BaseModel) else dict(stats)
    row['written_ts'] = datetime.datetime.now(datetime.timezone.utc)
    return ContentWindowStatsRow.model_validate(row).model_dump(mode='json')


class WriteDeadLettersToBigQuery(_WriteTable):
    """DeadLetter records (models or dicts) -> dead_letter. Its own rejections must not be routed back into it."""

    def __init__(self, project: str, dataset: str, **kwargs):
        super().__init__(DEAD_LETTERS, dead_letter_insert_id, project, dataset, **kwargs)


def write_kwargs(opts) -> dict[str, Any]:
    """The keyword arguments of the three transforms from EngagementOptions."""
    return dict(method=opts.bq_write_method, endpoint=opts.bq_endpoint or None,
                storage_endpoint=opts.gcs_endpoint, temp_location=opts.bq_temp_location or None,
                load_frequency_seconds=opts.bq_load_frequency_seconds)
