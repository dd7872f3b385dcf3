"""Drive a DoFn the way a runner does, without a runner: for sink DoFns that batch per bundle."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PANE_INFO_UNKNOWN


def run_bundles(fn: beam.DoFn, bundles, timestamp: Timestamp) -> tuple[list, list]:
    """setup once, then start_bundle / process (each element, at `timestamp` in the global window) / finish_bundle
    per bundle, teardown at the end; a callable in place of a bundle is called between bundles. Returns (values of
    the main output, values of the tagged outputs)."""
    main, tagged = [], []

    def collect(outputs):
        for out in outputs or ():
            if isinstance(out, beam.pvalue.TaggedOutput):
                tagged.append(getattr(out.value, 'value', out.value))
            else:
                main.append(out.value)

    fn.setup()
    try:
        for bundle in bundles:
            if callable(bundle):
                bundle()
                continue
            fn.start_bundle()
            for element in bundle:
                collect(fn.process(element, timestamp, GlobalWindow(), PANE_INFO_UNKNOWN))
            collect(fn.finish_bundle())
    finally:
        fn.teardown()
    return main, tagged
