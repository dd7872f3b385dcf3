"""Where every stage's dead letters go, in the live pipeline and the backfill alike."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from connectors.bigquery import sink as bigquery
from connectors.dead_letters import WriteDeadLettersToKafka
from pipelines.options import EngagementOptions
from schemas.dead_letter import MAX_DEAD_LETTER_BYTES, DeadLetter


def write_dead_letters(stages: dict[str, beam.PCollection], opts: EngagementOptions) -> beam.PCollection:
    """The dead letters of every stage (stage name -> PCollection), in the global window, cut to fit, to the
    BigQuery dead_letter table when BigQuery is on and to the dead-letter topic; returns what goes to Kafka."""
    # Dead letters of the Redis stage live in the event-time windows of the stats; Prism cannot flatten
    # collections of different windowing (it panics), and dead letters have no business being windowed.
    dead_letters = ([dl | f'{stage}DeadLettersInGlobalWindow' >> beam.WindowInto(GlobalWindows())
                     for stage, dl in stages.items()]
                    | 'AllDeadLetters' >> beam.Flatten()
                    # A hostile record's dead letter can exceed what Kafka and BigQuery take: the payload is cut.
                    | 'CutDeadLettersToFit' >> beam.Map(DeadLetter.fitted, MAX_DEAD_LETTER_BYTES))
    if opts.bigquery_enabled:
        # Rows of the dead_letter table that BigQuery rejects are reported in the Kafka topic only (never fed back).
        dead_letters_bq = dead_letters | 'WriteDeadLettersToBigQuery' >> bigquery.WriteDeadLettersToBigQuery(
            opts.bq_project, opts.bq_dataset, **bigquery.write_kwargs(opts))
        dead_letters = ((dead_letters, dead_letters_bq.dead_letters
                         | 'RejectedDeadLettersInGlobalWindow' >> beam.WindowInto(GlobalWindows()))
                        | 'DeadLettersForKafka' >> beam.Flatten())
    dead_letters | 'WriteDeadLettersToKafka' >> WriteDeadLettersToKafka(
        opts.kafka_bootstrap_servers, opts.dead_letter_topic, producer_config=opts.kafka_producer_config())
    return dead_letters
