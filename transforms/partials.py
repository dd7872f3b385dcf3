"""The counting core of `ContentStatsPerWindow`: partial counts of one group of contents in one window, packed
as columns in one bytes object, merged with numpy, one row per event id (its newest version)."""
from __future__ import annotations

from typing import Any

import numpy as np

from schemas.events import EVENT_TYPES, EnrichedEvent

_TYPE_INDEX = {event_type: i for i, event_type in enumerate(EVENT_TYPES)}


# # A partial: what one bundle saw of one group of contents in one window, a tuple (contents, metas, rows):
#   contents  [content_id, ...]                        the contents the rows refer to, by position;
#   metas     [(event_id, title, content_type, newest_ingest_ms), ...]   per content, as carried by its event with
#             the highest id, and the newest Kafka timestamp of its events (-1 when none has one);
#   rows      bytes: one row per event seen (duplicates and versions included), stored column after column
#             (COLUMNS: event id, Postgres LSN, Kafka offset, duration_ms, position in `contents`, type index).
# Tuples, lists, strings and one bytes object: Beam encodes them with its fast primitive coder, and the rows
# cross the shuffle as one copy of memory however many events they hold; each column is read back without a copy.
# Rows are deduplicated when merged (`compact`): one row per event id, the newest version by (LSN, offset), -1
# where unknown.

COLUMNS: tuple[tuple[str, np.dtype[Any]], ...] = (
    ('id', np.dtype('<i8')), ('lsn', np.dtype('<i8')), ('offset', np.dtype('<i8')), ('duration_ms', np.dtype('<i8')),
    ('content', np.dtype('<i4')), ('type', np.dtype('<i1')))
_ROW_BYTES = sum(dtype.itemsize for _, dtype in COLUMNS)
_NO_DURATION = -1           # duration_ms is validated >= 0 (schemas/events.py)


def pack(columns) -> bytes:
    """Columns (in COLUMNS' order, any int sequences of one length) -> rows bytes."""
    return b''.join(np.asarray(values, dtype=dtype).tobytes() for values, (_, dtype) in zip(columns, COLUMNS))


def unpack(rows: bytes) -> dict[str, np.ndarray]:
    """Rows bytes -> {column: read-only array viewing `rows`}."""
    count, at, out = len(rows) // _ROW_BYTES, 0, {}
    for name, dtype in COLUMNS:
        out[name] = np.frombuffer(rows, dtype=dtype, count=count, offset=at)
        at += count * dtype.itemsize
    return out


class PartialBuilder:
    """Collects the events of one (window, group of contents) in a bundle; `partial()` packs them."""
    __slots__ = ('index', 'metas', 'rows')

    def __init__(self):
        self.index: dict[str, int] = {}
        self.metas: list[tuple] = []
        self.rows: list[tuple] = []

    def add(self, event: EnrichedEvent) -> None:
        ingest_ms = -1 if event.ingest_ts is None else int(event.ingest_ts.timestamp() * 1000)
        position = self.index.get(event.content_id)
        if position is None:
            position = self.index[event.content_id] = len(self.metas)
            self.metas.append((event.id, event.content_title, event.content_type, ingest_ms))
        else:
            meta = self.metas[position]
            if event.id > meta[0]:
                self.metas[position] = (event.id, event.content_title, event.content_type, max(ingest_ms, meta[3]))
            elif ingest_ms > meta[3]:
                self.metas[position] = (*meta[:3], ingest_ms)
        self.rows.append((event.id, -1 if event.source_lsn is None else event.source_lsn,
                          -1 if event.source_offset is None else event.source_offset,
                          _NO_DURATION if event.duration_ms is None else event.duration_ms,
                          position, _TYPE_INDEX[event.event_type]))

    def partial(self) -> tuple:
        columns = zip(*self.rows) if self.rows else [()] * len(COLUMNS)
        return list(self.index), self.metas, pack(columns)


def partial_of(events) -> tuple:
    """The partial of `events` (one group of contents, one window)."""
    builder = PartialBuilder()
    for event in events:
        builder.add(event)
    return builder.partial()


def compact(partials: list) -> tuple:
    """One partial holding the rows of all `partials` (left alone), one row per event id: its newest version."""
    index: dict[str, int] = {}
    metas: list[tuple] = []
    chunks: list[list] = [[] for _ in COLUMNS]
    for contents, its_metas, rows in partials:
        positions = np.empty(len(contents), dtype=COLUMNS[4][1])
        for i, (content_id, meta) in enumerate(zip(contents, its_metas)):
            position = index.get(content_id)
            if position is None:
                position = index[content_id] = len(metas)
                metas.append(meta)
            else:
                newer, older = (meta, metas[position]) if meta[0] > metas[position][0] else (metas[position], meta)
                metas[position] = (*newer[:3], max(newer[3], older[3]))
            positions[i] = position
        columns = unpack(rows)
        for chunk, (name, _) in zip(chunks, COLUMNS):
            chunk.append(positions[columns[name]] if name == 'content' else columns[name])
    merged = [np.concatenate(chunk) if chunk else np.empty(0, dtype) for chunk, (_, dtype) in zip(chunks, COLUMNS)]
    keep = _newest_versions(*merged[:3])
    if keep is not None:
        merged = [column[keep] for column in merged]
    return list(index), metas, pack(merged)


def _newest_versions(ids: np.ndarray, lsns: np.ndarray, offsets: np.ndarray) -> np.ndarray | None:
    """A mask of the rows to keep, the newest version of each event id, or None when no id repeats. Duplicates
    are rare (a Debezium restart, a CDC update), so only the rows of repeated ids are sorted by version; ids come
    in ascending runs (Kafka order), which the stable sort (timsort) takes in near-linear time."""
    by_id = np.argsort(ids, kind='stable')
    sorted_ids = ids[by_id]
    repeated = sorted_ids[1:] == sorted_ids[:-1]
    if not repeated.any():
        return None
    involved = np.zeros(len(ids), dtype=bool)
    involved[:-1] |= repeated
    involved[1:] |= repeated
    candidates = by_id[involved]
    ranked = candidates[np.lexsort((offsets[candidates], lsns[candidates], ids[candidates]))]
    ranked_ids = ids[ranked]
    newest = np.append(ranked_ids[1:] != ranked_ids[:-1], True)   # the last row of each id: its newest version
    keep = np.ones(len(ids), dtype=bool)
    keep[candidates] = False
    keep[ranked[newest]] = True
    return keep


def totals_of(partial: tuple) -> dict:
    """{content_id: the window's figures so far} (ContentWindowStats fields without the window and pane) of a
    compacted partial."""
    contents, metas, rows = partial
    columns = unpack(rows)
    n, types = len(contents), len(EVENT_TYPES)
    counts = np.bincount(columns['content'].astype(np.int64) * types + columns['type'], minlength=n * types)
    per_type = counts.reshape(n, types).tolist()
    durations = columns['duration_ms']
    known = durations >= 0
    # Sums of int32-bounded durations: exact in float64 below 2**53 ms, i.e. for over four million events of
    # 24.8 days each in one (content, window); checked rather than assumed.
    engagement = np.bincount(columns['content'][known], weights=durations[known], minlength=n)
    if len(engagement) and engagement.max() >= 2 ** 53:
        raise OverflowError('engagement_ms of a (content, window) exceeds 2**53 ms')
    out: dict[str, dict[str, Any]] = {}
    for content_id, (_, title, content_type, ingest_ms), by_type, engagement_ms in zip(
            contents, metas, per_type, engagement.tolist()):
        out[content_id] = {'events': sum(by_type), 'engagement_ms': int(engagement_ms), 'title': title,
                           'content_type': content_type, **dict(zip(EVENT_TYPES, by_type)),
                           'newest_ingest_ms': ingest_ms if ingest_ms >= 0 else None}
    return out
