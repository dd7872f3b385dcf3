"""The engagement pipeline as an installable package (also what a Dataflow worker or Flex Template image installs).

requirements.txt pins the whole dependency closure for reproducible environments; install_requires names the
top-level dependencies only.
"""
import setuptools

setuptools.setup(
    name='engagement-pipeline',
    version='0.1.0',
    description='Real-time engagement analytics on Apache Beam: Postgres CDC -> Kafka -> Beam -> Redis/BigQuery/API',
    packages=setuptools.find_packages(include=['pipelines*', 'transforms*', 'connectors*', 'schemas*']),
    python_requires='>=3.10',
    install_requires=[
        'apache-beam[gcp]==2.77.0',
        'kafka-python==3.0.12',
        'confluent-kafka==2.16.1',  # the Kafka reader's fetch path (librdkafka): connectors/kafka/fetch.py
        'crc32c==2.9.post0',  # kafka-python checks record CRCs in pure Python without it (3x slower reads)
        'redis==8.1.0',
        'hiredis==3.5.0',  # redis-py packs commands and parses replies in C with it: ~20% less CPU per Redis pane
        'psycopg2-binary==2.9.13',
        'pydantic==2.14.4',
        'requests==2.34.2',
        'prometheus-client==0.26.0',  # the pipeline's metrics in Prometheus exposition: connectors/metrics.py
    ],
    extras_require={'test': ['pytest==9.2.0']},
)
