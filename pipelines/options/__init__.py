"""The engagement pipeline's flags, one `PipelineOptions` class per concern (as Beam's own `GoogleCloudOptions`,
`StandardOptions`, ... and DataflowTemplates' `KafkaReadOptions`, ... are composed), and `EngagementOptions`, all
of them at once.

Defaults match the local stack (`pipelines.local_stack`, the same `ENGAGEMENT_*` variables), so locally no flag is
needed beyond the runner. Where operators expect an environment variable, it is the fallback when the flag is
absent (flag > variable > default). `validate()` rejects bad values at start with a message naming the flag.
"""
from __future__ import annotations

import argparse

from pipelines.options.backfill import MODES, ModeOptions
from pipelines.options.common import InvalidOption
from pipelines.options.kafka import (
    KAFKA_READERS,
    KAFKA_SASL_MECHANISMS,
    KAFKA_SECURITY_PROTOCOLS,
    START_OFFSETS,
    KafkaReadOptions,
)
from pipelines.options.monitoring import MonitoringOptions
from pipelines.options.privacy import PrivacyOptions
from pipelines.options.processing import EnrichmentOptions, InputLimitOptions, WindowOptions
from pipelines.options.sinks import BQ_WRITE_METHODS, ApiOptions, BigQueryOptions, DeadLetterOptions, RedisOptions

CONCERNS = (ModeOptions, KafkaReadOptions, InputLimitOptions, EnrichmentOptions, WindowOptions, RedisOptions,
            ApiOptions, BigQueryOptions, DeadLetterOptions, MonitoringOptions, PrivacyOptions)
# Flags whose value is one of a fixed set (the Flex Template's metadata turns them into a regex).
CHOICES = {'mode': MODES, 'start_offset': START_OFFSETS, 'kafka_reader': KAFKA_READERS,
           'kafka_security_protocol': KAFKA_SECURITY_PROTOCOLS, 'kafka_sasl_mechanism': KAFKA_SASL_MECHANISMS,
           'bq_write_method': BQ_WRITE_METHODS}

__all__ = ['CHOICES', 'CONCERNS', 'EngagementOptions', 'InvalidOption', 'add_arguments', 'KafkaReadOptions',
           'InputLimitOptions', 'EnrichmentOptions', 'WindowOptions', 'RedisOptions', 'ApiOptions', 'BigQueryOptions',
           'DeadLetterOptions', 'MonitoringOptions', 'ModeOptions', 'PrivacyOptions']


class EngagementOptions(ModeOptions, KafkaReadOptions, InputLimitOptions, EnrichmentOptions, WindowOptions,
                        RedisOptions, ApiOptions, BigQueryOptions, DeadLetterOptions, MonitoringOptions,
                        PrivacyOptions):
    """Every flag of the pipeline. Beam registers each concern's flags once (it parses with every direct subclass
    of `PipelineOptions`), so this class declares none of its own."""

    def validate(self) -> 'EngagementOptions':
        """Raise InvalidOption naming the first bad flag; return self so it chains."""
        for concern in CONCERNS:
            concern.check(self)
        return self


def add_arguments(parser: argparse.ArgumentParser, but: tuple[type, ...] = ()) -> None:
    """Every flag of the pipeline on `parser`, in the order of `CONCERNS` (but those of the concerns in `but`)."""
    for concern in CONCERNS:
        if concern not in but:
            concern._add_argparse_args(parser)
