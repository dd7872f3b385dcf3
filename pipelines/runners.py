"""Runner selection, with the DirectRunner's silent fallback made impossible.

Beam 2.77's `DirectRunner` tries Prism first and, when Prism cannot start (binary missing and not downloadable,
as on a machine without internet) or the graph holds something it thinks Prism lacks, logs one INFO line and runs
the pipeline on the FnApiRunner instead. For a streaming job that is a silent disaster: the FnApiRunner emits
results only at the end. So for `--runner=DirectRunner` we check that the Prism binary is there (the one
`make install` builds, found at Beam's cache path or `--prism_location`) and hand the pipeline to `PrismRunner`
directly: if Prism fails, the run fails with Prism's error instead of quietly running elsewhere.
"""
from __future__ import annotations

import logging
import os

from apache_beam.options.pipeline_options import PipelineOptions, PrismRunnerOptions, StandardOptions
from apache_beam.version import __version__ as BEAM_VERSION

_LOG = logging.getLogger(__name__)
DIRECT_NAMES = {None, 'DirectRunner', 'direct', 'Direct', 'PrismRunner', 'prism', 'Prism'}


class PrismUnavailable(RuntimeError):
    pass


def prism_cache_zip() -> str:
    name = f'apache_beam-v{BEAM_VERSION}-prism-linux-amd64'
    return os.path.expanduser(f'~/.apache_beam/cache/prism/bin/{name}.zip')


def prism_source(options: PipelineOptions) -> str:
    """Where Prism will be loaded from; raises PrismUnavailable with what to do when it is not there."""
    location = options.view_as(PrismRunnerOptions).prism_location
    if location:
        if not os.path.isfile(location):
            raise PrismUnavailable(f'--prism_location={location} does not exist; run `make install` or fix the path.')
        return location
    cached = prism_cache_zip()
    if not os.path.isfile(cached):
        raise PrismUnavailable(
            f'the Prism runner (Beam v{BEAM_VERSION}) is not installed at {cached}, and this machine cannot '
            'download it; run `make install` (it builds Prism with go install), or pass --prism_location=<binary>. '
            'Refusing to let the DirectRunner fall back to the FnApiRunner, which emits streaming results only at '
            'the end.')
    return cached


def select_runner(options: PipelineOptions):
    """The runner object to build the pipeline with: PrismRunner for the DirectRunner, else the named runner."""
    name = options.view_as(StandardOptions).runner
    if isinstance(name, str) and name.endswith('DirectRunner') and '.' in name:
        name = name.rsplit('.', 1)[1]
    if name not in DIRECT_NAMES:
        return name
    from apache_beam.runners.portability.prism_runner import PrismRunner
    source = prism_source(options)
    _LOG.info('DirectRunner: running on Prism from %s', source)
    return PrismRunner()
