"""The monitoring and query service (FastAPI): health, metrics, the Kafka view, and the versioned query API over
the Redis read model with API keys and a rate limit per client. `create_app(settings)` builds it; `python -m
launch.monitor` serves it (docs/operations.md, "Monitoring and query service").

No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run time, and those that
name a closure (the API-key dependency) cannot be resolved from strings."""
import collections
import contextlib
import dataclasses
import math
import re
import threading
import time
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from connectors.credentials import redis_credentials
from launch.monitor import exposition, pages
from launch.monitor.probes import KafkaView, Targets, check_all, http_get
from launch.monitor.readmodel import CONTENT_TYPES, ReadModel, window_start

API_KEY_HEADER = 'X-API-Key'
UUID = r'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
WINDOW = r'^(current|previous|[0-9]{1,12})$'
WINDOW_HELP = 'current, previous, or any time in the window (epoch seconds)'


@dataclasses.dataclass(frozen=True)
class Settings:
    targets: Targets
    api_keys: dict[str, str]              # key -> client name
    redis_prefix: str = 'engagement'
    window_seconds: int = 60
    rate_per_second: float = 10.0         # per client, sustained
    burst: int = 20                       # per client, at once
    probe_timeout_s: float = 2.0


class RateLimiter:
    """A token bucket per client: `burst` requests at once, then `rate` per second."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, client: str) -> float:
        """0 when the request may go ahead (and takes a token), else how long until the next token."""
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / self.rate


class Rates:
    """Events/s read and counted, from the pipeline's counters over the last few seconds of snapshots."""
    SPAN_S = 5.0

    def __init__(self):
        self._history: collections.deque = collections.deque()
        self._lock = threading.Lock()

    def update(self, snapshot: dict | None) -> tuple[float | None, float | None]:
        if snapshot is None:
            return None, None
        now = time.monotonic()
        with self._lock:
            history = self._history
            if history and (snapshot['read'] < history[-1][1] or snapshot['counted'] < history[-1][2]):
                history.clear()   # the pipeline restarted: its counters began again
            history.append((now, snapshot['read'], snapshot['counted']))
            while len(history) > 2 and now - history[1][0] >= self.SPAN_S:
                history.popleft()
            (t0, read0, counted0), (t1, read1, counted1) = history[0], history[-1]
        if t1 - t0 < 0.5:
            return None, None
        return (read1 - read0) / (t1 - t0), (counted1 - counted0) / (t1 - t0)


class ErrorBody(BaseModel):
    error: str = Field(description='Machine-readable code: unauthorized, rate_limited, invalid_parameter, '
                                   'unavailable.')
    message: str


class Leader(BaseModel):
    rank: int
    content_id: str
    title: str | None = None
    content_type: str | None = None
    events: int
    play: int = 0
    pause: int = 0
    finish: int = 0
    click: int = 0
    engagement_seconds: float = 0.0


class TopResponse(BaseModel):
    content_type: str
    window_start: int
    window_end: int
    top: list[Leader]


class WindowStats(BaseModel):
    window_start: int
    window_end: int
    title: str | None = None
    content_type: str | None = None
    events: int
    play: int
    pause: int
    finish: int
    click: int
    engagement_seconds: float


class ContentResponse(BaseModel):
    content_id: str
    windows: list[WindowStats]


class RecentContent(BaseModel):
    content_id: str
    last_event_ts: float = Field(description='The user\'s newest event on it (epoch seconds)')


class UserResponse(BaseModel):
    user_id: str
    recent: list[RecentContent] = Field(description='Newest first; empty when the user is unknown or forgotten')
    engagement_seconds: dict[str, float] = Field(description='Per content type (video, podcast, newsletter)')


class TotalsResponse(BaseModel):
    window_start: int
    window_end: int
    events: int
    play: int
    pause: int
    finish: int
    click: int


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {'model': ErrorBody, 'description': 'No or an unknown API key'},
    422: {'model': ErrorBody, 'description': 'A parameter is invalid; the message names it'},
    429: {'model': ErrorBody, 'description': 'Too many requests from this client; see Retry-After'},
    503: {'model': ErrorBody, 'description': 'Redis did not answer'},
}


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({'error': code, 'message': message}, status_code=status, headers=headers)


def create_app(settings: Settings) -> FastAPI:
    import redis

    client = redis.Redis.from_url(settings.targets.redis_url, decode_responses=True, socket_timeout=2,
                                  socket_connect_timeout=2, **redis_credentials())
    model = ReadModel(client, settings.redis_prefix, settings.window_seconds)
    kafka = KafkaView(settings.targets.kafka_bootstrap, settings.targets.group, settings.targets.topics)
    limiter = RateLimiter(settings.rate_per_second, settings.burst)
    registry = exposition.registry(settings.targets, kafka)
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        kafka.close()
        client.close()

    app = FastAPI(lifespan=lifespan, title='Engagement analytics: monitoring and query API', version='1.0.0',
                  docs_url=None, redoc_url=None,
                  description='Health, metrics and the live read model of the engagement pipeline. Query endpoints '
                              'need an API key in the X-API-Key header.')
    api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description='Your API key')

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = '; '.join(f'{".".join(str(p) for p in e["loc"][1:]) or e["loc"][0]}: {e["msg"]}'
                             for e in exc.errors())
        return _error(422, 'invalid_parameter', problems)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        code, message = exc.detail if isinstance(exc.detail, tuple) else ('error', str(exc.detail))
        return _error(exc.status_code, code, message, exc.headers)

    @app.exception_handler(redis.exceptions.RedisError)
    async def redis_down(request: Request, exc: Exception):
        return _error(503, 'unavailable', f'the read model (Redis) did not answer: {type(exc).__name__}',
                      {'Retry-After': '5'})

    def client_of(key: Annotated[str | None, Security(api_key)]) -> str:
        name = settings.api_keys.get(key or '')
        if name is None:
            raise HTTPException(401, ('unauthorized', f'send a valid API key in the {API_KEY_HEADER} header'))
        wait = limiter.wait_seconds(name)
        if wait:
            raise HTTPException(429, ('rate_limited', f'more than {settings.rate_per_second:g} requests/s from '
                                                      f'client {name}'),
                                headers={'Retry-After': str(max(1, math.ceil(wait)))})
        return name

    def start_of(window: str) -> int:
        if window in ('current', 'previous'):
            return window_start(time.time(), settings.window_seconds, 1 if window == 'previous' else 0)
        return window_start(int(window), settings.window_seconds)

    @app.get('/health', summary='Readiness, per dependency', responses={503: {'description': 'Not ready'}})
    def health() -> JSONResponse:
        checks = check_all(settings.targets, settings.probe_timeout_s)
        down = sorted(name for name, check in checks.items() if not check.ok)
        body = {'status': 'ready' if not down else 'not_ready', 'down': down,
                'checks': {name: dataclasses.asdict(check) for name, check in checks.items()}}
        return JSONResponse(body, status_code=200 if not down else 503)

    @app.get('/health/live', summary='Liveness of this service')
    def live() -> dict:
        return {'status': 'alive'}

    @app.get('/metrics', summary='Prometheus exposition: the stack\'s gauges and the pipeline\'s own metrics',
             response_class=PlainTextResponse)
    def metrics() -> Response:
        text, content_type = exposition.render(registry, settings.targets.pipeline_metrics_url)
        return Response(text, media_type=content_type)

    @app.get('/debug/kafka', summary='Per partition: committed offset, end offset, lag, watermark, last fetch')
    def debug_kafka() -> dict:
        fetched = exposition.pipeline_samples(settings.targets.pipeline_metrics_url,
                                              'engagement_kafka_last_fetch_timestamp_seconds')
        rows = kafka.partitions()
        for row in rows:
            labels = frozenset({('topic', row['topic']), ('partition', str(row['partition']))})
            row['last_fetch_ts'] = fetched.get(labels)
        return {'group': settings.targets.group, 'partitions': rows}

    @app.get('/v1/top', response_model=TopResponse, responses=ERRORS, summary='Top contents of a window',
             description='The "top 10 videos now": `/v1/top?content_type=video&n=10`.')
    def top(client: Annotated[str, Depends(client_of)],
            content_type: Literal['video', 'podcast', 'newsletter', 'all'] = 'all',
            n: Annotated[int, Query(ge=1, le=100, description='How many')] = 10,
            window: Annotated[str, Query(pattern=WINDOW, description=WINDOW_HELP)] = 'current') -> dict:
        start = start_of(window)
        return {'content_type': content_type, 'window_start': start, 'window_end': start + settings.window_seconds,
                'top': model.top(content_type, n, start)}

    @app.get('/v1/contents/{content_id}/stats', response_model=ContentResponse, responses=ERRORS,
             summary='One content over the last windows')
    def content(client: Annotated[str, Depends(client_of)],
                content_id: Annotated[str, Path(pattern=UUID, description='The content\'s UUID')],
                windows: Annotated[int, Query(ge=1, le=1440, description='How many windows back, the current '
                                                                         'one included')] = 10) -> dict:
        return {'content_id': content_id.lower(), 'windows': model.content(content_id.lower(), windows)}

    @app.get('/v1/users/{user_id}', response_model=UserResponse, responses=ERRORS,
             summary='A user\'s recent contents and engagement seconds per content type',
             description='Written by the pipeline with --user_recent_contents (the id is the pseudonym with '
                         '--pseudonymize_user_ids); an unknown user has empty lists.')
    def user(client: Annotated[str, Depends(client_of)],
             user_id: Annotated[str, Path(pattern=UUID, description='The user\'s UUID (or pseudonym)')]) -> dict:
        return model.user(user_id.lower())

    @app.get('/v1/totals', response_model=TotalsResponse, responses=ERRORS, summary='Events of a window')
    def totals(client: Annotated[str, Depends(client_of)],
               window: Annotated[str, Query(pattern=WINDOW, description=WINDOW_HELP)] = 'current') -> dict:
        return model.totals(start_of(window))

    rates = Rates()

    @app.get('/', response_class=HTMLResponse, include_in_schema=False)
    def live_page() -> str:
        return pages.LIVE_PAGE

    @app.get('/ui/summary', summary='What the live page shows: top 5 per content type now, rates, lag, dead letters',
             description='Unauthenticated, like /health and /metrics: the service listens on 127.0.0.1.')
    def summary() -> dict:
        start = window_start(time.time(), settings.window_seconds)
        snapshot = exposition.pipeline_snapshot(settings.targets.pipeline_metrics_url)
        read_rate, counted_rate = rates.update(snapshot)
        try:
            lag: int | None = sum(row['lag'] or 0 for row in kafka.partitions())
        except Exception:  # noqa: BLE001 - the page shows '-' for what it could not read
            lag = None
        return {'window_start': start, 'top': {t: model.top(t, 5, start) for t in CONTENT_TYPES},
                'read_per_s': read_rate, 'counted_per_s': counted_rate, 'consumer_lag': lag,
                'pipeline_up': snapshot is not None,
                'dead_letters': dict(sorted((snapshot or {}).get('dead_letters', {}).items())),
                'breakers_open': None if snapshot is None else snapshot['breakers_open']}

    @app.get('/docs', response_class=HTMLResponse, include_in_schema=False)
    def docs() -> str:
        return pages.api_docs(app.openapi())

    app.state.settings = settings
    return app


def parse_api_keys(text: str) -> dict[str, str]:
    """'client:key,client2:key2' -> {key: client}; raises ValueError naming a bad entry (never the key)."""
    keys: dict[str, str] = {}
    for i, entry in enumerate(filter(None, (e.strip() for e in text.split(','))), start=1):
        name, sep, key = entry.partition(':')
        if not sep or not re.fullmatch(r'[A-Za-z0-9._-]{1,64}', name) or len(key) < 16:
            raise ValueError(f'API key entry {i}: expected client:key with a key of at least 16 characters')
        keys[key] = name
    return keys


__all__ = ['Settings', 'create_app', 'parse_api_keys', 'http_get']
