"""The DirectRunner must run on Prism or fail loudly; never silently on the FnApiRunner."""
import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.prism_runner import PrismRunner
from apache_beam.testing.util import assert_that, equal_to

from pipelines import runners


def test_missing_prism_is_a_clear_error_not_a_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    with pytest.raises(runners.PrismUnavailable,
                       match=r'run `make install`.*Refusing to let the DirectRunner fall back'):
        runners.select_runner(PipelineOptions(['--runner=DirectRunner']))


def test_wrong_prism_location_is_named(tmp_path):
    with pytest.raises(runners.PrismUnavailable, match=r'--prism_location=.*/nope does not exist'):
        runners.select_runner(PipelineOptions(['--runner=DirectRunner', f'--prism_location={tmp_path}/nope']))


def test_other_runners_pass_through():
    assert runners.select_runner(PipelineOptions(['--runner=DataflowRunner'])) == 'DataflowRunner'
    dotted = 'apache_beam.runners.dataflow.dataflow_runner.DataflowRunner'
    assert runners.select_runner(PipelineOptions([f'--runner={dotted}'])) == dotted


@pytest.mark.parametrize('runner', ['DataflowRunner', 'dataflow', 'Dataflow',
                                    'apache_beam.runners.dataflow.dataflow_runner.DataflowRunner'])
def test_dataflow_is_recognised_by_any_name_beam_accepts(runner):
    assert runners.is_dataflow(runner)


@pytest.mark.parametrize('runner', [None, 'DirectRunner', 'FlinkRunner', PrismRunner()])
def test_other_runners_are_not_dataflow(runner):
    assert not runners.is_dataflow(runner)


def test_direct_runner_runs_on_prism():
    options = PipelineOptions(['--runner=DirectRunner'])
    runner = runners.select_runner(options)
    assert isinstance(runner, PrismRunner)
    with beam.Pipeline(runner=runner, options=options) as p:
        counts = (p | beam.Create(['play', 'pause', 'play']) | beam.combiners.Count.PerElement())
        assert_that(counts, equal_to([('play', 2), ('pause', 1)]))


def _flink_rest_with_slots(slots: int):
    """A one-endpoint HTTP server answering GET /overview as a Flink JobManager does; returns (server, port)."""
    import http.server
    import json
    import threading

    class Overview(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({'taskmanagers': 2, 'slots-total': slots, 'slots-available': slots}).encode()
            self.send_response(200 if self.path == '/overview' else 404)
            self.send_header('Content-Type', 'application/json')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Overview)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def test_the_reader_splits_follow_the_flink_parallelism_and_stay_one_elsewhere():
    assert runners.default_read_splits(PipelineOptions(['--runner=DirectRunner'])) == 1
    assert runners.default_read_splits(PipelineOptions(['--runner=DataflowRunner'])) == 1
    assert runners.default_read_splits(PipelineOptions(['--runner=FlinkRunner'])) == 1  # embedded, parallelism 1
    assert runners.default_read_splits(PipelineOptions(['--runner=FlinkRunner', '--parallelism=4'])) == 4
    server, port = _flink_rest_with_slots(3)
    try:
        cluster = PipelineOptions(['--runner=FlinkRunner', f'--flink_master=127.0.0.1:{port}'])
        assert runners.default_read_splits(cluster) == 3
    finally:
        server.shutdown()
    # an unreachable cluster: one element (the submission reports the cluster itself)
    gone = PipelineOptions(['--runner=FlinkRunner', f'--flink_master=127.0.0.1:{port}'])
    assert runners.default_read_splits(gone) == 1


@pytest.mark.parametrize('argv', [['--kafka_read_splits=2'], ['--runner=PrismRunner', '--kafka_read_splits=4']])
def test_several_reader_splits_are_refused_on_prism(argv, capsys):
    """Prism keeps one watermark estimate for the reader's stage, not the minimum over its elements: a slow
    partition's records in another group would be dropped as too late (tests/connectors/kafka/test_reader.py reads
    with two groups on Flink, where the watermark is that minimum)."""
    from pipelines.engagement import run
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --kafka_read_splits=') and 'use 1 (or 0) on Prism' in err


def test_the_catalogue_side_input_is_refused_on_prism_and_auto_picks_it_only_on_dataflow(capsys):
    """Prism 2.77 refuses a triggered global-window side input (apache/beam#31438), and Flink's runner neither
    refreshes one for live elements nor checkpoints it (docs/runners.md): auto is the cache there."""
    from pipelines.engagement import run
    assert run(['--content_enrichment=side_input']) == 2
    assert capsys.readouterr().err.startswith('error: --content_enrichment=side_input: Prism 2.77 refuses')
    modes = {runner: runners.enrichment_mode(PipelineOptions([f'--runner={runner}']))
             for runner in ('DirectRunner', 'FlinkRunner', 'DataflowRunner')}
    assert modes == {'DirectRunner': 'cache', 'FlinkRunner': 'cache', 'DataflowRunner': 'side_input'}
    assert runners.enrichment_mode(PipelineOptions(['--runner=FlinkRunner', '--content_enrichment=side_input'])) \
        == 'side_input'
