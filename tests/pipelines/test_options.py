"""Pipeline options: defaults that match the local stack, environment fallbacks, bad values named at start."""
import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import local_stack
from pipelines.options import EngagementOptions, InvalidOption

PIPELINE_DOC = Path(__file__).resolve().parents[2] / 'docs' / 'pipeline.md'


def documented_flags() -> list[str]:
    """The flags of the table under '## Flags' in docs/pipeline.md (one row per flag: | `--flag` | meaning |)."""
    section = PIPELINE_DOC.read_text().split('\n## Flags\n', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'^\| `(--[a-z0-9_]+)` \|', section, flags=re.MULTILINE)


def options(*argv) -> EngagementOptions:
    return PipelineOptions(list(argv)).view_as(EngagementOptions)


def test_defaults_match_the_local_stack():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('KAFKA_', 'REDIS_', 'ENGAGEMENT_'))}  # defaults read the environment at import
    code = ('from apache_beam.options.pipeline_options import PipelineOptions\n'
            'from pipelines.options import EngagementOptions\n'
            'o = PipelineOptions([]).view_as(EngagementOptions).validate()\n'
            'print(o.kafka_bootstrap_servers, o.redis_url, o.cdc_topic, o.window_seconds, o.early_firing_seconds,'
            ' o.allowed_lateness_seconds, o.kafka_consumer_config())')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split(' ', 6)
    assert out[:6] == ['127.0.0.1:19092', 'redis://127.0.0.1:16379/0', 'engagement.public.engagement_events',
                       '60', '1', '600']
    assert out[6].strip() == "{'bootstrap_servers': ['127.0.0.1:19092'], 'security_protocol': 'PLAINTEXT'}"


def test_environment_variables_are_the_fallback():
    env = {**os.environ, 'KAFKA_BOOTSTRAP_SERVERS': 'broker:9093', 'REDIS_URL': 'redis://cache:6379/2'}
    code = ('from apache_beam.options.pipeline_options import PipelineOptions\n'
            'from pipelines.options import EngagementOptions\n'
            'o = PipelineOptions(["--redis_url=redis://flag:1/0"]).view_as(EngagementOptions)\n'
            'print(o.kafka_bootstrap_servers, o.redis_url)')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    assert out == ['broker:9093', 'redis://flag:1/0']


@pytest.mark.parametrize('argv, message', [
    (['--window_seconds=0'], "--window_seconds=0: expected 1..86400"),
    (['--window_seconds=7'], "--window_seconds=7: must divide a day"),
    (['--start_offset=newest'], "--start_offset='newest': expected one of committed, earliest, latest"),
    (['--kafka_bootstrap_servers=localhost'], "--kafka_bootstrap_servers='localhost': expected host:port"),
    (['--redis_url=http://x'], "--redis_url='<redacted>': expected a redis://"),
    (['--kafka_security_protocol=SASL_SSL', '--kafka_sasl_mechanism=PLAIN'],
     '--kafka_sasl_username and --kafka_sasl_password (or KAFKA_SASL_PASSWORD) are required with PLAIN'),
    (['--cdc_topic=a b'], "--cdc_topic='a b': expected a non-empty name"),
])
def test_invalid_values_are_rejected_naming_the_flag(argv, message):
    with pytest.raises(InvalidOption) as err:
        options(*argv).validate()
    assert message in str(err.value)


def test_a_bad_flag_stops_the_command_with_one_line():
    proc = subprocess.run([sys.executable, '-m', 'pipelines.engagement', '--runner=DirectRunner',
                           '--allowed_lateness_seconds=-5'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == 'error: --allowed_lateness_seconds=-5: expected 0..604800'


def test_sasl_settings_reach_the_kafka_client_config():
    config = options('--kafka_security_protocol=SASL_SSL', '--kafka_sasl_mechanism=SCRAM-SHA-512',
                     '--kafka_sasl_username=u', '--kafka_sasl_password=p',
                     '--kafka_ssl_cafile=/ca.pem').validate().kafka_consumer_config()
    assert config['sasl_mechanism'] == 'SCRAM-SHA-512' and config['sasl_plain_password'] == 'p'
    assert config['ssl_cafile'] == '/ca.pem'


def test_help_lists_every_flag_and_the_flag_table_documents_each():
    parser = argparse.ArgumentParser()
    EngagementOptions._add_argparse_args(parser)
    flags = [a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != 'help']
    help_text = subprocess.run([sys.executable, '-m', 'pipelines.engagement', '--help'], capture_output=True,
                               text=True, timeout=120).stdout
    table = documented_flags()
    assert [f for f in flags if f not in help_text] == []
    assert [f for f in flags if f not in table] == []  # a flag without its row in docs/pipeline.md
    assert [f for f in table if f not in flags] == []  # a row for a flag that no longer exists
    assert len(table) == len(set(table))  # one row per flag


def test_the_pipelines_defaults_follow_the_stacks_variables(monkeypatch):
    """A stack started on other ports (ENGAGEMENT_*) and the pipeline started in the same environment meet."""
    from launch import config as stack_config
    for variable in [v for v, _ in local_stack.PORTS.values()] + [v for v, _ in local_stack.NAMES.values()] + [
            'KAFKA_BOOTSTRAP_SERVERS', 'ENGAGEMENT_KAFKA_BOOTSTRAP', 'ENGAGEMENT_CDC_TOPIC', 'ENGAGEMENT_PG_DSN',
            'REDIS_URL', 'ENGAGEMENT_REDIS_URL', 'ENGAGEMENT_API_URL', 'ENGAGEMENT_BQ_ENDPOINT',
            'ENGAGEMENT_GCS_ENDPOINT']:
        monkeypatch.delenv(variable, raising=False)
    custom = {'ENGAGEMENT_KAFKA_PORT': '29092', 'ENGAGEMENT_PG_PORT': '25432', 'ENGAGEMENT_REDIS_PORT': '26379',
              'ENGAGEMENT_API_PORT': '28090', 'ENGAGEMENT_BQ_PORT': '29050', 'ENGAGEMENT_GCS_PORT': '29023',
              'ENGAGEMENT_TOPIC_PREFIX': 'other', 'ENGAGEMENT_RAW_TOPIC': 'other.raw',
              'ENGAGEMENT_DEAD_LETTER_TOPIC': 'other.dead', 'ENGAGEMENT_BQ_PROJECT': 'other-project',
              'ENGAGEMENT_PG_DATABASE': 'otherdb'}
    for variable, value in custom.items():
        monkeypatch.setenv(variable, value)
    opts = PipelineOptions([]).view_as(EngagementOptions)
    cfg = stack_config.load(environ=custom)

    assert (opts.kafka_bootstrap_servers, opts.pg_dsn, opts.redis_url, opts.api_url, opts.bq_endpoint,
            opts.gcs_endpoint) == (cfg.kafka_bootstrap, cfg.pg_dsn, cfg.redis_url, cfg.api_url, cfg.bq_endpoint,
                                   cfg.gcs_endpoint)
    assert (opts.cdc_topic, opts.raw_topic, opts.dead_letter_topic, opts.bq_project) == (
        cfg.events_topic, cfg.raw_topic, cfg.dead_letter_topic, cfg.bq_project)
    assert opts.kafka_bootstrap_servers == '127.0.0.1:29092'
