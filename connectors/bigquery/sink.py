"""Beam's native BigQuery sink (`BigQueryWriteFn`, `WriteToBigQuery`) for events, window stats and dead letters.

Each `Write*ToBigQuery` returns a `BigQueryWriteResult` whose `dead_letters` are the rows BigQuery rejected (stage
`bigquery`, reason `bigquery_rejected`, BigQuery's message as the error). Methods (`--bq_write_method`):
`streaming_inserts` with deterministic insertIds (no Reshuffle needed to commit them), `file_loads` (a bad row
fails its load job; no per-row rejections) and `storage_write_api` (Dataflow only). Details: docs/pipeline.md,
"BigQuery tables".
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import time
from typing import Any, Iterable, Mapping, NamedTuple

import apache_beam as beam
from apache_beam.io.gcp.bigquery import BigQueryDisposition, BigQueryWriteFn, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from pydantic import BaseModel

from connectors import metrics
from connectors.bigquery.clients import EmulatorClient, activate_local_gcp
from connectors.bigquery.tables import DEAD_LETTERS, EVENTS_RAW, STATS_RAW, TableSpec
from schemas.dead_letter import DeadLetter
from schemas.stats import ContentWindowStatsRow

_LOG = logging.getLogger(__name__)

STAGE = 'bigquery'
REJECTED = 'bigquery_rejected'
WRITE_METHODS = ('streaming_inserts', 'file_loads', 'storage_write_api')


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
        self._table_name = table.rsplit('.', 1)[-1]

    def setup(self):
        if self._local:
            activate_local_gcp(self._storage_endpoint)

    def process(self, element):
        row = to_row(element, self._json_columns)
        metrics.ROWS_WRITTEN.inc(table=self._table_name)
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
