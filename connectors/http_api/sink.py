"""`DeliverToApi`: POST enriched events to an external REST API in batches, failed events to the dead letters.

A `DoFn` owns one `ApiClient` for its lifetime (`setup`/`teardown`) and batches the events of a bundle (flushed
at `--api_batch_size` and in `finish_bundle`). Delivered events come out as `ApiDelivery`, failed ones as
`DeadLetter`s (stage `api`) whose payload is the whole event, so `python -m launch.tools.dead_letters redeliver`
can send them again. Counters in namespace `DeliverToApi`.

Beam's `RequestResponseIO` is not used: it has no dead-letter output (it fails the bundle after its retries), no
circuit breaker, no request per batch with per-event results, no token refresh and no `Retry-After`
(docs/pipeline.md, "The REST API sink").

    delivered = enriched | 'DeliverToApi' >> DeliverToApi.from_options(opts)
    delivered.delivered     # ApiDelivery per event the API holds
    delivered.dead_letters  # schemas.DeadLetter, stage 'api'
"""
from __future__ import annotations

import dataclasses
import datetime
import time
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.display import DisplayDataItem
from apache_beam.utils.windowed_value import WindowedValue

from connectors import metrics
from connectors.http_api.client import ApiClient, ApiSinkConfig
from schemas.dead_letter import DEAD_LETTERS, DeadLetter

STAGE = 'api'
DELIVERED = 'delivered'
METRICS_NAMESPACE = 'DeliverToApi'
COUNTERS = ('delivered', 'duplicates', 'retries', 'breaker_opened', 'breaker_closed', 'dead_lettered', 'requests',
            'token_fetches')


@dataclasses.dataclass(frozen=True)
class ApiDelivery:
    """One event the API holds: 'accepted' (stored now) or 'duplicate' (it had it already)."""
    event_id: int
    status: str
    attempts: int



class DeliverToApiFn(beam.DoFn):
    """EnrichedEvent -> ApiDelivery (main) or DeadLetter (tagged `dead_letters`), in batches."""

    def __init__(self, config: ApiSinkConfig):
        self._config = config.check()
        self._counters = {name: Metrics.counter(METRICS_NAMESPACE, name) for name in COUNTERS}

    def display_data(self):
        cfg = self._config
        return {'api_url': DisplayDataItem(cfg.api_url, label='API URL'), 'client_id': cfg.client_id,
                'batch_size': cfg.batch_size, 'max_attempts': cfg.max_attempts,
                'timeout_seconds': cfg.timeout_seconds, 'breaker_failures': cfg.breaker_failures}

    def setup(self):
        self._client = ApiClient(self._config, count=self._count)

    def _count(self, name: str, n: int) -> None:
        self._counters[name].inc(n)
        if name == 'retries':
            metrics.SINK_RETRIES.inc(n, sink=STAGE)
        elif name in ('breaker_opened', 'breaker_closed'):
            metrics.API_BREAKERS_OPEN.add(n if name == 'breaker_opened' else -n)

    def start_bundle(self):
        self._batch: list[WindowedValue] = []

    def process(self, event, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        self._batch.append(WindowedValue(event, timestamp, (window,), pane))
        if len(self._batch) >= self._config.batch_size:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush()

    def teardown(self):
        client = getattr(self, '_client', None)
        if client is not None:
            if client.breaker.opened_at is not None:
                metrics.API_BREAKERS_OPEN.add(-1)   # this breaker goes away open
            client.close()

    def _flush(self):
        batch, self._batch = self._batch, []
        if not batch:
            return
        started = time.monotonic()
        outcomes = self._client.deliver([w.value for w in batch])
        metrics.SINK_WRITE_SECONDS.observe(time.monotonic() - started, sink=STAGE)
        now = datetime.datetime.now(datetime.timezone.utc)
        for windowed, outcome in zip(batch, outcomes):
            if outcome.status == 'dead':
                self._counters['dead_lettered'].inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, windowed.with_value(DeadLetter.for_event(
                    outcome.event, stage=STAGE, reason=outcome.reason, error=outcome.error, now=now,
                    attempts=max(1, outcome.attempts))))
            else:
                self._counters['delivered'].inc()
                metrics.API_EVENTS.inc(status=outcome.status)
                if outcome.status == 'duplicate':
                    self._counters['duplicates'].inc()
                yield windowed.with_value(ApiDelivery(outcome.event.id, outcome.status, outcome.attempts))


class ApiDeliveries(NamedTuple):
    delivered: beam.PCollection     # ApiDelivery per event the API holds
    dead_letters: beam.PCollection  # DeadLetter, stage 'api'


class DeliverToApi(beam.PTransform):
    """POST enriched events to the REST API in batches. Input: `schemas.EnrichedEvent`s. Output: `ApiDeliveries`,
    both in the input's windows."""

    def __init__(self, config: ApiSinkConfig):
        super().__init__()
        self._fn = DeliverToApiFn(config)

    @classmethod
    def from_options(cls, opts) -> 'DeliverToApi':
        """From `pipelines.options.EngagementOptions` (validated; `--api_url` non-empty)."""
        return cls(ApiSinkConfig.from_options(opts))

    def expand(self, events):
        outputs = events | 'PostBatchesToApi' >> beam.ParDo(self._fn).with_outputs(DEAD_LETTERS, main=DELIVERED)
        return ApiDeliveries(outputs[DELIVERED], outputs[DEAD_LETTERS])
