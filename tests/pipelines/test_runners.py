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
