"""Pipeline options: defaults that match the local stack, environment fallbacks, bad values named at start."""
import argparse
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from connectors.bigquery import sink as bigquery_sink
from connectors.http_api.client import ApiSinkConfig
from pipelines import local_stack
from pipelines.options import CONCERNS, EngagementOptions, InvalidOption, KafkaReadOptions, add_arguments

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
    (['--kafka_read_splits=-1'], '--kafka_read_splits=-1: expected 0 (automatic) or a whole number >= 1'),
    (['--kafka_bootstrap_servers=localhost'], "--kafka_bootstrap_servers='localhost': expected host:port"),
    (['--redis_url=http://x'], "--redis_url='<redacted>': expected a redis://"),
    (['--kafka_security_protocol=SASL_SSL', '--kafka_sasl_mechanism=PLAIN'],
     '--kafka_sasl_username and KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE) are required with PLAIN'),
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


def test_each_concern_is_its_own_options_class_and_engagement_options_composes_them_once():
    argv = ['--kafka_bootstrap_servers=broker:9093', '--window_seconds=30', '--redis_prefix=p', '--api_url=']
    kafka = PipelineOptions(argv).view_as(KafkaReadOptions)
    kafka.check()
    assert kafka.kafka_bootstrap_servers == 'broker:9093' and kafka.topics()[0].endswith('.public.engagement_events')
    everything = PipelineOptions(argv)
    assert everything.get_all_options()['window_seconds'] == 30   # Beam parses each concern once, no conflict
    opts = everything.view_as(EngagementOptions).validate()
    assert (opts.window_seconds, opts.redis_prefix, opts.kafka_bootstrap_servers) == (30, 'p', 'broker:9093')
    per_concern = {}
    for concern in CONCERNS:
        parser = argparse.ArgumentParser()
        concern._add_argparse_args(parser)
        per_concern[concern.__name__] = {a.dest for a in parser._actions if a.option_strings and a.dest != 'help'}
    flags = [flag for dests in per_concern.values() for flag in dests]
    assert len(flags) == len(set(flags)) and all(per_concern.values())


def test_sasl_settings_reach_the_kafka_client_config():
    config = options('--kafka_security_protocol=SASL_SSL', '--kafka_sasl_mechanism=SCRAM-SHA-512',
                     '--kafka_sasl_username=u', '--kafka_sasl_password=p',
                     '--kafka_ssl_cafile=/ca.pem').validate().kafka_consumer_config()
    assert config['sasl_mechanism'] == 'SCRAM-SHA-512' and config['sasl_plain_password'] == 'p'
    assert config['ssl_cafile'] == '/ca.pem'


def test_help_lists_every_flag_and_the_flag_table_documents_each():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
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
    from launch.stack import config as stack_config
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


def test_api_defaults_reach_the_local_receiver(monkeypatch):
    for name in ('ENGAGEMENT_API_URL', 'ENGAGEMENT_API_PORT', 'ENGAGEMENT_API_CLIENT_SECRET'):
        monkeypatch.delenv(name, raising=False)
    defaults = options()
    assert (defaults.api_url, defaults.api_client_id, defaults.api_client_secret) == (
        'http://127.0.0.1:18090', local_stack.API_CLIENT_ID, local_stack.LOCAL_API_CLIENT_SECRET)
    opts = options('--api_url=http://127.0.0.1:1/base/', '--api_batch_size=7', '--api_max_attempts=2',
                       '--api_breaker_failures=4', '--api_breaker_cooldown_seconds=2.5',
                       '--api_timeout_seconds=1.5').validate()
    config = ApiSinkConfig.from_options(opts).check()
    assert (config.events_url, config.resolved_token_url) == ('http://127.0.0.1:1/base/v1/events',
                                                              'http://127.0.0.1:1/base/oauth/token')
    assert (config.batch_size, config.max_attempts, config.breaker_failures, config.breaker_cooldown_seconds,
            config.timeout_seconds, config.client_id) == (7, 2, 4, 2.5, 1.5, 'engagement-local')


@pytest.mark.parametrize('argv, message', [
    (['--api_url=ftp://x'], "--api_url='ftp://x': expected an http:// or https:// URL"),
    (['--api_url=http://user:hunter2@x'], "--api_url='<redacted>': expected an http:// or https:// URL"),
    (['--api_token_url=token'], "--api_token_url='token': expected an http:// or https:// URL"),
    (['--api_batch_size=0'], '--api_batch_size=0: expected 1..1000'),
    (['--api_max_attempts=11'], '--api_max_attempts=11: expected 1..10'),
    (['--api_timeout_seconds=0'], '--api_timeout_seconds=0.0: expected 0.1..300'),
    (['--api_breaker_failures=0'], '--api_breaker_failures=0: expected 1..1000'),
    (['--api_client_secret='], '--api_client_secret (or ENGAGEMENT_API_CLIENT_SECRET) is required'),
])
def test_invalid_api_flags_are_rejected_naming_the_flag(argv, message, monkeypatch):
    monkeypatch.delenv('ENGAGEMENT_API_CLIENT_SECRET', raising=False)
    with pytest.raises(InvalidOption) as err:
        options(*argv).validate()
    assert message in str(err.value) and 'hunter2' not in str(err.value)


def test_an_empty_api_url_turns_the_sink_off_without_other_checks():
    assert options('--api_url=', '--api_batch_size=0').validate().api_url == ''


@pytest.mark.parametrize('argv, message', [
    (['--bq_write_method=storage_write_api'], 'the Storage Write API cannot run locally'),
    (['--bq_write_method=merge'], 'expected one of streaming_inserts, file_loads, storage_write_api'),
    (['--bq_enabled=maybe'], "--bq_enabled='maybe': expected true or false"),
    (['--bq_dataset=my-data'], "--bq_dataset='my-data': expected a dataset name"),
    (['--bq_endpoint=localhost:9050'], "--bq_endpoint='localhost:9050': expected an http:// or https:// URL"),
    (['--bq_write_method=file_loads', '--bq_temp_location=/tmp/x'], "--bq_temp_location='/tmp/x': expected a gs://"),
])
def test_bigquery_options_are_validated(argv, message):
    with pytest.raises(InvalidOption, match=message.replace('(', r'\(').replace(')', r'\)')):
        options(*argv).validate()


def test_bigquery_options_defaults_and_switch():
    o = options('--bq_write_method=file_loads').validate()
    assert o.bigquery_enabled and o.bq_temp_location == 'gs://engagement-temp/bigquery'
    assert bigquery_sink.write_kwargs(o)['temp_location'] == 'gs://engagement-temp/bigquery'
    assert options('--bq_endpoint=', '--bq_write_method=storage_write_api').validate().bq_endpoint == ''
    assert options('--bq_enabled=false', '--bq_write_method=nonsense').validate().bigquery_enabled is False


@pytest.mark.parametrize('argv, message', [
    (['--mode=replay'], "--mode='replay': expected one of live, backfill"),
    (['--mode=backfill'], "--since='': a backfill needs the first event time"),
    (['--mode=backfill', '--since=yesterday'], "--since='yesterday': expected an ISO-8601 time"),
    (['--mode=backfill', '--since=2026-12-02', '--until=2026-12-01'], "--until='2026-12-01': must be after"),
    (['--since=2026-12-02'], "--since='2026-12-02': only with --mode=backfill"),
])
def test_backfill_flags_are_checked(argv, message):
    with pytest.raises(InvalidOption, match=re.escape(message)):
        PipelineOptions(argv).view_as(EngagementOptions).validate()


def test_the_backfill_range_is_whole_windows_and_stops_at_the_window_in_progress():
    now = datetime.datetime(2026, 12, 5, 12, 30, 20, tzinfo=datetime.timezone.utc)
    def window_range(*argv):
        return PipelineOptions(['--mode=backfill', *argv]).view_as(EngagementOptions).backfill_range(60, now)
    noon = int(datetime.datetime(2026, 12, 5, 12, tzinfo=datetime.timezone.utc).timestamp())
    assert window_range('--since=2026-12-05T12:00:30Z', '--until=2026-12-05T12:10:01Z') == (noon, noon + 660)
    assert window_range('--since=2026-12-05T13:00:00+01:00') == (noon, noon + 30 * 60)  # until: now's window
    assert window_range('--since=2026-12-05T12:00:00Z', '--until=2026-12-06') == (noon, noon + 30 * 60)
    assert window_range('--since=2026-12-05T12:30:05Z') == (noon + 30 * 60,) * 2  # nothing complete to read
