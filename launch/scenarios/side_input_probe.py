"""Does a refreshed side input reach live elements on this runner? The question behind `--content_enrichment=auto`.

    python -m launch.scenarios.side_input_probe --runner=FlinkRunner [--seconds 40] [--refresh 3] [runner flags]

Builds the slowly-updating side input the enrichment's `side_input` mode uses (PeriodicImpulse every `--refresh`
seconds -> a new version -> global window, one pane per version, discarding -> AsList) and a main input of one
element per second that records the newest version it sees. Prints how stale the version an element saw was at
worst (a refreshing side input keeps it near `--refresh`; one that does not refresh lets it grow with the run),
whether the job replayed ticks (it restarted), and a verdict. Streaming, on the runner the flags name (our presets
for Flink and Prism, as `python -m pipelines.engagement` uses them); the job is cancelled after `--seconds` plus a
minute. Exit 0 when the side input refreshes, 1 when it does not, 2 when the job restarted (each restart loads a
first version afresh, which hides the answer: on Flink give --checkpointing_interval=-1, as Flink fails every
checkpoint of a Python side input's state in Beam 2.77).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import apache_beam as beam


class _Version(beam.DoFn):
    def process(self, _impulse):
        yield time.time()


class _Record(beam.DoFn):
    """Appends (wall time, newest version seen) for each main element to a file: the workers may be other
    processes."""

    def __init__(self, path: str):
        self._path = path

    def process(self, tick, versions):
        with open(self._path, 'a') as out:
            out.write(json.dumps([time.time(), float(tick), max(versions, default=None)]) + '\n')


def probe(argv: list[str]) -> dict:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.transforms.periodicsequence import PeriodicImpulse

    from pipelines.runners import select_runner
    from transforms.enrich import slowly_updating
    parser = argparse.ArgumentParser(prog='python -m launch.scenarios.side_input_probe', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seconds', type=float, default=40, help='How long the main input runs. Default 40.')
    parser.add_argument('--refresh', type=float, default=3, help='Seconds between side input versions. Default 3.')
    args, rest = parser.parse_known_args(argv)
    options = PipelineOptions(rest)
    options.view_as(StandardOptions).streaming = True
    record = Path(tempfile.mkdtemp(prefix='side-input-probe-')) / 'seen.jsonl'
    start = time.time()
    stop = start + args.seconds
    p = beam.Pipeline(runner=select_runner(options), options=options)
    versions = slowly_updating(p, args.refresh, _Version(), stop_timestamp=stop)  # as the enrichment builds it
    (p | 'Ticks' >> PeriodicImpulse(fire_interval=1, apply_windowing=False, stop_timestamp=stop)
     | 'Record' >> beam.ParDo(_Record(str(record)), versions=beam.pvalue.AsList(versions)))
    result = None
    try:
        result = p.run()
        result.wait_until_finish(duration=int((args.seconds + 60) * 1000))
    except Exception as exc:  # noqa: BLE001 - e.g. Prism: "unsupported feature ... Triggered SideInput" (gRPC error)
        first = next((line.strip() for line in str(exc).splitlines() if 'unsupported feature' in line),
                     f'{type(exc).__name__}: {str(exc)[:300]}')
        return {'refused': first}
    finally:
        if result is not None and not str(result.state).endswith(('DONE', 'FAILED')):
            result.cancel()
    seen = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    ticks = [tick for _, tick, _ in seen]
    # staleness of what an element saw, once the first versions had time to arrive
    settled = [wall - version for wall, _, version in seen if version is not None and wall - start > 2 * args.refresh]
    worst = max(settled, default=float('inf'))
    return {'elements': len(seen), 'replayed': len(ticks) - len(set(ticks)), 'worst_age_s': worst,
            'refreshes': worst <= 3 * args.refresh + 2}


def main(argv: list[str] | None = None) -> int:
    result = probe(sys.argv[1:] if argv is None else argv)
    if 'refused' in result:
        print(f"the runner refused the job: {result['refused']}")
        return 1
    if result['replayed']:
        verdict = 'the job restarted, so the answer is hidden (each restart starts from a fresh first version)'
    elif result['refreshes']:
        verdict = 'a refreshed side input reaches live elements'
    else:
        verdict = 'a refreshed side input does NOT reach live elements: the main input kept the first version'

    replays = f" ({result['replayed']} replayed: the job restarted)" if result['replayed'] else ''
    print(f"main input: {result['elements']} elements{replays}; the version an element saw was at worst "
          f"{result['worst_age_s']:.1f} s old; {verdict}")
    return 2 if result['replayed'] else 0 if result['refreshes'] else 1


if __name__ == '__main__':
    sys.exit(main())
