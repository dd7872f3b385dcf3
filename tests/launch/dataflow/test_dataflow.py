"""Dataflow: the Flex Template files and an offline translation of the whole graph (`--dry_run=True`).

Nothing here reaches Google: DataflowRunner with `--dry_run=True` builds the job (the portable pipeline proto)
and returns before any API call.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from launch.dataflow import metadata
from pipelines.backfill import build_backfill
from pipelines.engagement import build
from pipelines.options import EngagementOptions

REPO = Path(__file__).resolve().parents[3]
DATAFLOW = REPO / 'launch' / 'dataflow'
OFFLINE_FLAGS = ['--runner=DataflowRunner', '--dry_run=True', '--project=demo-project', '--region=europe-west1',
                 '--temp_location=gs://demo-bucket/tmp', '--streaming',
                 '--kafka_bootstrap_servers=10.255.0.1:9092', '--pg_dsn=host=10.255.0.2 dbname=engagement',
                 '--redis_url=redis://10.255.0.3:6379/0', '--api_url=https://crm.example.test/api',
                 '--bq_endpoint=', '--bq_project=demo-project']
OFFLINE_ENV = {'NO_GCE_CHECK': 'True', 'GOOGLE_CLOUD_PROJECT': 'demo-project'}


def pipeline_flags_in_help() -> set[str]:
    """Our flags as `python -m pipelines.engagement --help` prints them, less Beam's own (runner, Prism)."""
    out = subprocess.run([sys.executable, '-m', 'pipelines.engagement', '--help'], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    ours = out.split('Kafka source', 1)[1]  # the first group of EngagementOptions; Beam's groups come before it
    return set(re.findall(r'^\s+--([a-z0-9_]+)', ours, flags=re.M))


def test_metadata_json_is_generated_from_the_options_and_up_to_date():
    assert (DATAFLOW / 'metadata.json').read_text() == metadata.render(), \
        'run `python -m launch.dataflow.metadata --write` after changing pipelines/options/'


def test_metadata_covers_every_pipeline_option_with_its_help():
    params = {p['name']: p for p in json.loads((DATAFLOW / 'metadata.json').read_text())['parameters']}
    flags = pipeline_flags_in_help()
    assert len(flags) > 20
    assert flags <= set(params), f'missing from metadata.json: {sorted(flags - set(params))}'
    for name in flags:
        assert len(params[name]['helpText']) > 10, name
    for name in metadata.REQUIRED_ON_DATAFLOW:
        assert params[name]['isOptional'] is False


def test_metadata_regexes_accept_defaults_and_reject_garbage():
    defaults = PipelineOptions([]).view_as(EngagementOptions)
    checked = 0
    for param in metadata.metadata()['parameters']:
        for regex in param.get('regexes', []):
            default = getattr(defaults, param['name'])
            if default is not None:
                assert re.fullmatch(regex, str(default)), (param['name'], default, regex)
            assert not re.fullmatch(regex, 'not a value'), param['name']
            checked += 1
    assert checked >= 10
    start = next(p for p in metadata.metadata()['parameters'] if p['name'] == 'start_offset')
    assert all(re.fullmatch(start['regexes'][0], v) for v in ('committed', 'earliest', 'latest'))


def dry_run_pipeline(extra: list[str] = ()):
    options = PipelineOptions([*OFFLINE_FLAGS, *extra])
    p = beam.Pipeline(options=options)
    build(p, options.view_as(EngagementOptions), None)
    return p.run().job.proto_pipeline


@pytest.mark.parametrize('write_method', ['streaming_inserts', 'file_loads'])
def test_dataflow_dry_run_translates_the_whole_graph(monkeypatch, write_method):
    for name, value in OFFLINE_ENV.items():
        monkeypatch.setenv(name, value)
    proto = dry_run_pipeline([f'--bq_write_method={write_method}', '--bq_temp_location=gs://demo-bucket/bq'])
    names = {t.unique_name for t in proto.components.transforms.values()}
    for expected in ('ReadFromKafka/ReadPartitions', 'ParseEvents/ParseAndValidate', 'EnrichWithContent',
                     'ContentStatsPerWindow/FixedWindows', 'WriteContentStatsToRedis', 'WriteDeadLettersToKafka',
                     'DeliverToApi', 'WriteEventsToBigQuery', 'WriteStatsToBigQuery', 'WriteDeadLettersToBigQuery'):
        assert any(n == expected or n.startswith(expected + '/') for n in names), (expected, sorted(names)[:50])
    sizes = []
    for strategy in proto.components.windowing_strategies.values():
        if strategy.window_fn.urn == 'beam:window_fn:fixed_windows:v1':
            from apache_beam.portability.api import standard_window_fns_pb2
            payload = standard_window_fns_pb2.FixedWindowsPayload.FromString(strategy.window_fn.payload)
            sizes.append(payload.size.seconds)
            assert strategy.allowed_lateness == 600_000
            assert strategy.trigger.WhichOneof('trigger') == 'after_end_of_window'
            assert strategy.trigger.after_end_of_window.HasField('early_firings')
    assert sizes and set(sizes) == {60}


@pytest.mark.parametrize('flag, side_input', [([], True), (['--content_enrichment=cache'], False)])
def test_on_dataflow_the_catalogue_is_a_periodically_refreshed_side_input_by_default(monkeypatch, flag, side_input):
    for name, value in OFFLINE_ENV.items():
        monkeypatch.setenv(name, value)
    proto = dry_run_pipeline(['--api_url=', '--bq_enabled=false', *flag])
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert any(n.startswith('EnrichWithContent/CatalogueImpulse') for n in names) is side_input
    [join] = [t for t in proto.components.transforms.values()
              if t.unique_name == 'EnrichWithContent/JoinContentCatalogue/ParDo(EnrichWithContentFn)']
    from apache_beam.portability.api import beam_runner_api_pb2
    pardo = beam_runner_api_pb2.ParDoPayload.FromString(join.spec.payload)
    assert len(pardo.side_inputs) == (1 if side_input else 0)
    if side_input:  # the catalogue's panes: global window, one pane per load, discarding
        [tag] = pardo.side_inputs
        strategy = proto.components.windowing_strategies[
            proto.components.pcollections[join.inputs[tag]].windowing_strategy_id]
        assert strategy.window_fn.urn == 'beam:window_fn:global_windows:v1'
        assert strategy.trigger.WhichOneof('trigger') == 'repeat'
        assert strategy.accumulation_mode == beam_runner_api_pb2.AccumulationMode.DISCARDING


def test_dataflow_dry_run_translates_the_backfill_graph(monkeypatch):
    """--mode=backfill for Dataflow: a bounded job (no streaming flag), the Postgres read and the live transforms,
    no Kafka reader and no REST API."""
    for name, value in OFFLINE_ENV.items():
        monkeypatch.setenv(name, value)
    batch = [flag for flag in OFFLINE_FLAGS if flag != '--streaming']  # run() turns streaming off for a backfill
    options = PipelineOptions([*batch, '--mode=backfill', '--since=2026-12-01T00:00:00Z',
                               '--until=2026-12-02T00:00:00Z', '--bq_temp_location=gs://demo-bucket/bq'])
    p = beam.Pipeline(options=options)
    build_backfill(p, options.view_as(EngagementOptions), 1_764_547_200, 1_764_633_600)
    proto = p.run().job.proto_pipeline
    names = {t.unique_name for t in proto.components.transforms.values()}
    for expected in ('ReadEventRows/ReadIdRange', 'ParseRows/ValidateRows', 'EnrichWithContent',
                     'ContentStatsPerWindow/FixedWindows', 'WriteContentStatsToRedis', 'WriteEventsToBigQuery',
                     'WriteStatsToBigQuery', 'WriteDeadLettersToKafka'):
        assert any(n == expected or n.startswith(expected + '/') for n in names), (expected, sorted(names)[:50])
    assert not any(n.startswith(('ReadFromKafka', 'DeliverToApi')) for n in names)
    from apache_beam.portability.api import beam_runner_api_pb2
    bounded = beam_runner_api_pb2.IsBounded.BOUNDED
    assert [pc.unique_name for pc in proto.components.pcollections.values() if pc.is_bounded != bounded] == []


def test_template_entry_point_builds_the_graph_offline():
    """What the Flex Template launcher runs (FLEX_TEMPLATE_PYTHON_PY_FILE), with --dry_run=True: exits 0 without
    Kafka (no committed positions are asked for in a dry run) and without Google credentials."""
    dockerfile = (DATAFLOW / 'Dockerfile').read_text()
    entry = re.search(r'^ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/(\S+)$', dockerfile, re.M).group(1)
    done = subprocess.run([sys.executable, str(REPO / entry), *OFFLINE_FLAGS], cwd='/', capture_output=True,
                          text=True, timeout=120, env={**_clean_env(), **OFFLINE_ENV, 'PYTHONPATH': str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'dry run' in done.stderr


def _clean_env():
    import os
    return {k: v for k, v in os.environ.items() if not k.startswith(('ENGAGEMENT_', 'KAFKA_', 'REDIS_'))}


def test_dockerfile_copies_what_the_image_needs():
    text = (DATAFLOW / 'Dockerfile').read_text()
    copied = set()
    for line in text.splitlines():
        if line.startswith('COPY ') and '--from=' not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), f'Dockerfile copies {source}, which does not exist'
                copied.add(source)
    packages = set(re.search(r"include=\[([^\]]*)\]", (REPO / 'setup.py').read_text()).group(1)
                   .replace("'", '').replace('*', '').replace(' ', '').split(','))
    assert packages <= copied, f'packages installed by setup.py but not copied: {packages - copied}'
    entry = re.search(r'^ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/(\S+)$', text, re.M).group(1)
    assert entry.split('/')[0] in copied and (REPO / entry).is_file()
    sdk_image = re.search(r'^ARG BEAM_SDK_IMAGE=(\S+)$', text, re.M).group(1)
    assert sdk_image == f'apache/beam_python{sys.version_info.major}.{sys.version_info.minor}_sdk:{beam.__version__}'
    assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]$', text, re.M), 'workers need Beam\'s boot entrypoint'
    assert ':latest' not in text


def test_packages_in_the_image_do_not_import_launch_at_module_level():
    """The image holds schemas, transforms, connectors, pipelines; `launch/` (local stack tooling) is not in it."""
    offenders = []
    for package in ('schemas', 'transforms', 'connectors', 'pipelines'):
        for path in (REPO / package).glob('*.py'):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.Import) and any(a.name.split('.')[0] in ('launch', 'tests')
                                                        for a in node.names):
                    offenders.append(str(path.relative_to(REPO)))
                if isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] in ('launch', 'tests'):
                    offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f'module-level imports of launch/tests (not in the Dataflow image): {offenders}'


def test_template_script_passes_shellcheck():
    shellcheck = shutil.which('shellcheck')
    if shellcheck is None:
        pytest.fail('shellcheck is missing: `make install` installs it')
    done = subprocess.run([shellcheck, str(DATAFLOW / 'template.sh')], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
