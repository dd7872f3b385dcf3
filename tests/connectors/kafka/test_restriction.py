"""The reader's restriction without a broker: it only splits at checkpoints, claims never go back, and the
watermark is the minimum over partitions once every partition has one."""
from __future__ import annotations

import pytest
from apache_beam.utils.timestamp import Timestamp

from connectors.kafka.offsets import ReadPlan, partition_groups
from connectors.kafka.restriction import Advance, MinWatermarkProvider, Partitions, PartitionsProvider

PARTITIONS = (('events', 0), ('events', 1), ('events', 2))


def tracker_at(offsets=(10, 20, 30), watermarks=(None, None, None)):
    return PartitionsProvider().create_tracker(Partitions(PARTITIONS, tuple(offsets), tuple(watermarks)))


@pytest.mark.parametrize('fraction', [0.5, 0.25, 1.0, float('nan')])
def test_only_checkpoints_split(fraction):
    tracker = tracker_at()
    assert tracker.try_split(fraction) is None
    assert tracker.try_claim(Advance(0, 15, 1_000)), 'a refused split leaves the restriction readable'


def test_checkpoint_hands_the_rest_to_the_residual():
    tracker = tracker_at()
    assert tracker.try_claim(Advance(1, 25, 2_000))
    with pytest.raises(ValueError):
        tracker.check_done()
    primary, residual = tracker.try_split(0)
    assert primary == Partitions(PARTITIONS, (10, 25, 30), (None, 2_000, None), done=True)
    assert residual == Partitions(PARTITIONS, (10, 25, 30), (None, 2_000, None))
    assert not tracker.try_claim(Advance(0, 11, 3_000)), 'nothing is claimed after a checkpoint'
    assert tracker.try_split(0) is None
    tracker.check_done()
    assert tracker.is_bounded() and not PartitionsProvider().create_tracker(residual).is_bounded()


def test_claims_never_go_back():
    tracker = tracker_at()
    assert tracker.try_claim(Advance(2, 30, 5_000)), 'an unchanged offset with a newer watermark is a valid claim'
    with pytest.raises(ValueError):
        tracker.try_claim(Advance(2, 29, 6_000))


def test_initial_restriction_is_the_plan():
    plan = ReadPlan(PARTITIONS, (1, 2, 3))
    assert PartitionsProvider().initial_restriction(plan) == Partitions(PARTITIONS, (1, 2, 3), (None, None, None))


def test_watermark_is_the_minimum_once_every_partition_is_known():
    provider = MinWatermarkProvider()
    unknown = Partitions(PARTITIONS, (0, 0, 0), (5_000, None, 9_000))
    assert provider.initial_estimator_state(None, unknown) is None
    known = Partitions(PARTITIONS, (0, 0, 0), (5_000, 3_000, 9_000))
    assert provider.initial_estimator_state(None, known) == Timestamp(micros=3_000_000)


def test_partition_groups_deal_every_partition_once_round_robin():
    plan = ReadPlan((('cdc', 0), ('cdc', 1), ('cdc', 2), ('raw', 0), ('raw', 1), ('raw', 2)), (10, 11, 12, 20, 21, 22))
    groups = partition_groups(plan, 2)
    assert groups == [ReadPlan((('cdc', 0), ('cdc', 2), ('raw', 1)), (10, 12, 21)),
                      ReadPlan((('cdc', 1), ('raw', 0), ('raw', 2)), (11, 20, 22))]
    assert partition_groups(plan, 1) == [plan]
    # never an empty group: more splits than partitions gives one partition per element
    assert [g.partitions for g in partition_groups(plan, 10)] == [(tp,) for tp in plan.partitions]
    with pytest.raises(ValueError, match='splits'):
        partition_groups(plan, 0)
