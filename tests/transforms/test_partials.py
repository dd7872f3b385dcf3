"""Partials: one row per event id after compacting (its newest version), every other event kept, and the fast
primitive coder across the shuffle."""
import apache_beam as beam

from tests.transforms.builders import PODCAST, VIDEO, enriched
from transforms.partials import compact, partial_of, unpack


def event_ids(partial) -> dict:
    """{content_id: sorted event ids} of a partial."""
    contents, _, rows = partial
    rows = unpack(rows)
    return {content_id: sorted(rows['id'][rows['content'] == i].tolist()) for i, content_id in enumerate(contents)}


def test_compacting_keeps_the_newest_version_of_each_event_id_and_every_other_event():
    versions = [enriched(id=7, lsn=lsn, offset=offset, event_type=event_type)
                for lsn, offset, event_type in ((100, 5, 'play'), (300, 1, 'finish'), (300, 0, 'pause'))]
    others = [enriched(id=i, content_id=VIDEO if i % 2 else PODCAST) for i in range(1, 7)]
    partials = [partial_of(versions[:1] + others[:3]), partial_of(versions[1:] + others[2:])]

    merged = compact(partials)
    rows = unpack(merged[2])

    assert sorted(rows['id'].tolist()) == [1, 2, 3, 4, 5, 6, 7]
    newest = rows['id'] == 7
    assert (rows['lsn'][newest].tolist(), rows['offset'][newest].tolist()) == ([300], [1])
    assert event_ids(merged) == {PODCAST: [2, 4, 6, 7], VIDEO: [1, 3, 5]}
    assert compact([compact(partials)]) == compact(partials)


def test_partials_cross_the_shuffle_with_the_fast_primitive_coder():
    """Lists, tuples, ints, strings and one bytes object: no pickling of events or accumulator classes."""
    partial = partial_of([enriched(id=1), enriched(id=2, duration_ms=None, lsn=7)])
    coder = beam.coders.registry.get_coder(object)

    assert coder.decode(coder.encode((3, partial))) == (3, partial)
    assert b'pydantic' not in coder.encode(partial) and b'EnrichedEvent' not in coder.encode(partial)
