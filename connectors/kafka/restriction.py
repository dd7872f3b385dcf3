"""The reader's restriction: every partition of the plan in ONE element, with its next offset and watermark, so
the output watermark (the minimum over partitions) is right however many SDK processes a runner starts.

Splits
  Only checkpoints (`try_split(0)`, from `defer_remainder` or a runner) split the restriction: the primary becomes
  what was claimed, the residual continues from there. Any other fraction, NaN included, is refused: Prism 2.77
  asks for 0.5 splits of stalled bundles and the residual of a split in the middle of an unbounded range would never
  be read. The tracker reports no progress: Beam 2.77 turns a reported progress into NaN before the first output
  size is sampled, and the split then crashes in the SDK (`cannot convert float NaN to integer`).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from apache_beam.io.iobase import RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import Timestamp

from connectors.kafka.offsets import ReadPlan

# ---------------------------------------------------------------------------------------------------------------
# Restriction: all partitions of the plan, with their next offsets and watermarks.

class Partitions(NamedTuple):
    partitions: tuple          # ((topic, partition), ...)
    offsets: tuple             # next offset to read, per partition
    watermarks: tuple          # watermark in ms per partition; None = nothing known yet
    done: bool = False         # a primary after a checkpoint: it reads nothing more


class Advance(NamedTuple):
    """A claim: partition `slot` (its position in the plan) has been read up to `next_offset` (exclusive); its
    watermark is `watermark_ms`."""
    slot: int
    next_offset: int
    watermark_ms: Optional[int]


class PartitionsTracker(RestrictionTracker):
    def __init__(self, restriction: Partitions):
        self._restriction = restriction
        self._offsets = list(restriction.offsets)
        self._watermarks = list(restriction.watermarks)

    def current_restriction(self) -> Partitions:
        return self._restriction

    def try_claim(self, position: Advance) -> bool:
        if self._restriction.done:
            return False
        i = position.slot
        if position.next_offset < self._offsets[i]:
            raise ValueError(f'claim of {self._restriction.partitions[i]} goes back from offset '
                             f'{self._offsets[i]} to {position.next_offset}')
        self._offsets[i] = position.next_offset
        if position.watermark_ms is not None and (self._watermarks[i] is None
                                                  or position.watermark_ms > self._watermarks[i]):
            self._watermarks[i] = position.watermark_ms
        return True

    def try_split(self, fraction_of_remainder):
        # Only a checkpoint. `fraction == 0` is also False for NaN, which Prism has been seen to cause.
        if self._restriction.done or not fraction_of_remainder == 0:
            return None
        positions = (tuple(self._offsets), tuple(self._watermarks))
        primary = Partitions(self._restriction.partitions, *positions, done=True)
        residual = Partitions(self._restriction.partitions, *positions)
        self._restriction = primary
        return primary, residual

    def check_done(self):
        if not self._restriction.done:
            raise ValueError('the Kafka read of an unbounded restriction returned without a checkpoint; '
                             'it must end with defer_remainder() or a refused claim')

    def current_progress(self):
        # Unknown, on purpose. Beam 2.77 rescales a reported progress by the element's output bytes, estimated as
        # count x mean sampled size; before a size is sampled that mean is NaN, and the split Prism requests of a
        # stalled bundle then dies in the SDK with `ValueError: cannot convert float NaN to integer`. Without a
        # progress the SDK assumes half the element is done, asks try_split, and gets a refusal.
        return None

    def is_bounded(self) -> bool:
        return self._restriction.done


class PartitionsProvider(RestrictionProvider):
    def initial_restriction(self, plan: ReadPlan) -> Partitions:
        return Partitions(tuple(plan.partitions), tuple(plan.start_offsets), (None,) * len(plan.partitions))

    def create_tracker(self, restriction: Partitions) -> PartitionsTracker:
        return PartitionsTracker(restriction)

    def split(self, plan, restriction):
        yield restriction  # one element reads every partition: the minimum watermark needs them together

    def restriction_size(self, plan, restriction: Partitions) -> float:
        return 0.0 if restriction.done else 1.0


def min_watermark(watermarks) -> int | None:
    return None if any(w is None for w in watermarks) else min(watermarks)


class MinWatermarkProvider(WatermarkEstimatorProvider):
    def initial_estimator_state(self, plan, restriction: Partitions):
        known = min_watermark(restriction.watermarks)
        return None if known is None else Timestamp(micros=known * 1000)

    def create_watermark_estimator(self, estimator_state):
        return ManualWatermarkEstimator(estimator_state)


class Progress:
    """What one process() call has claimed so far; the bundle finalization callback commits it."""

    def __init__(self, restriction: Partitions):
        self.offsets = list(restriction.offsets)
        self.watermarks = list(restriction.watermarks)
        self.leader_epochs = [-1] * len(restriction.offsets)

