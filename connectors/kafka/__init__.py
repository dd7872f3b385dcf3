"""Kafka I/O: our splittable-DoFn reader (the default on every runner) and Beam's cross-language reader, both
emitting `KafkaRecord`s and committing offsets with the reader's watermark as metadata.

| module | concern |
|---|---|
| `records` | the element both readers emit (`schemas.kafka.KafkaRecord`) and its coder |
| `client` | kafka-python settings, read arguments, consumers, partitions |
| `offsets` | where a read starts (`PlanRead`) and the committed positions a restart replays from |
| `restriction` | the reader's restriction: all partitions in one element, their offsets and watermarks |
| `reader` | `ReadFromKafka`, the splittable DoFn |
| `fetch` | the librdkafka fetch (confluent-kafka) the reader uses |
| `xlang` | `ReadFromKafkaXlang`, Beam's Java KafkaIO through an expansion service |
| `expansion_service` | the local expansion service process |
"""
from connectors.kafka.offsets import committed_positions
from connectors.kafka.reader import ReadFromKafka
from connectors.kafka.records import KafkaRecord

__all__ = ['KafkaRecord', 'ReadFromKafka', 'committed_positions']
