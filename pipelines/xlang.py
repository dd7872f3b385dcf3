"""`--kafka_reader=xlang`: Beam's cross-language Kafka reader (`connectors.kafka.xlang.ReadFromKafkaXlang`) with the
expansion service this run needs.

Which expansion service:
  - `--kafka_expansion_service host:port`: that one (it must stay up while the pipeline runs when the runner
    executes the Java read in its loopback worker, as Prism does).
  - `--runner=DataflowRunner` without it: Beam's default (`apache_beam.io.kafka.default_io_expansion_service`),
    the `beam-sdks-java-io-expansion-service` jar of the SDK's own version, which Beam downloads and runs with
    `java` for the expansion only; Dataflow runs the Java read in its own Java harness.
  - any other runner: the service `make install` assembles (`$ENGAGEMENT_HOME/kafka-expansion-service/`), started
    here on a free port of 127.0.0.1 and stopped when this process exits (or dies: parent-death signal).
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from connectors.kafka.expansion_service import LocalExpansionService
from connectors.kafka.xlang import ReadFromKafkaXlang
from pipelines import artifacts
from pipelines.options import EngagementOptions, InvalidOption
from pipelines.runners import is_dataflow

_started: list[LocalExpansionService] = []


def kafka_expansion_service_jar():
    return artifacts.kafka_expansion_service_jar(artifacts.engagement_home())


def expansion_service(options: PipelineOptions) -> str | None:
    """The address of the expansion service for this run (starting the local one), or None for Beam's default."""
    opts = options.view_as(EngagementOptions)
    if opts.kafka_expansion_service:
        return opts.kafka_expansion_service
    if is_dataflow(options.view_as(StandardOptions).runner):
        return None
    if _started:
        return _started[0].address
    jar = kafka_expansion_service_jar()
    if not jar.is_file():
        raise InvalidOption(f'--kafka_reader=xlang: the Kafka expansion service is not installed at {jar}; run '
                            '`make install`, or pass --kafka_expansion_service=host:port of a running one')
    service = LocalExpansionService(jar)
    service.start()
    _started.append(service)
    return service.address


def read_from_kafka_xlang(options: PipelineOptions, start_timestamp_ms: int | None,
                          max_delay_ms: int, start_offset: str | None = None) -> ReadFromKafkaXlang:
    opts = options.view_as(EngagementOptions)
    return ReadFromKafkaXlang(opts.kafka_consumer_config(), opts.topics(), group_id=opts.consumer_group,
                              start_offset=start_offset or opts.start_offset, start_timestamp_ms=start_timestamp_ms,
                              max_delay_ms=max_delay_ms, expansion_service=expansion_service(options))
