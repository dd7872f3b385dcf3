"""Stop the pipeline's job on a Flink cluster with a savepoint, to resume it from there (an upgrade, a config change).

    python -m launch.tools.flink_savepoint [--job-name engagement-engagement-pipeline] [--rest-url URL]
                                           [--target-dir DIR] [--timeout 120]

Finds the running job of that name (the pipeline names its cluster jobs `engagement-<consumer group>`), asks Flink
to stop it with a savepoint (`POST /jobs/<id>/stop`: a final checkpoint, its offsets committed to Kafka, then the
job finishes and the driver that submitted it exits), waits for the savepoint and prints its location. Then:

    python -m pipelines.engagement --runner=FlinkRunner --streaming --flink_master=[cluster] \\
        --savepoint_path=<location> [--allow_non_restored_state]

The new job restores every window's state and the Kafka reader's positions from the savepoint. `--rest-url`
defaults to the stack's session cluster (http://127.0.0.1:$ENGAGEMENT_FLINK_REST_PORT); `--target-dir` to
`<state dir>/flink-savepoints`. Exit code 1 with one line when no such job runs or the savepoint fails.

    python -m launch.tools.flink_savepoint --latest-checkpoint [--job-id ID] [--checkpoint-dir DIR]

prints the newest completed checkpoint (`<checkpoint dir>/<job id>/chk-<n>` holding its `_metadata`) of that job,
or of any job, for `--savepoint_path` after the job was lost with its JobManager (a cluster without high
availability). `--checkpoint-dir` defaults to the local cluster's, `<state dir>/flink-checkpoints`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

from pipelines import local_stack

SAVEPOINTS_DIR = 'flink-savepoints'


def _call(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method='POST' if body is not None else 'GET',
                                     headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


def running_job(rest_url: str, name: str) -> str | None:
    jobs = _call(f'{rest_url}/jobs/overview')['jobs']
    ids = [j['jid'] for j in jobs if j['name'] == name and j['state'] == 'RUNNING']
    return ids[0] if ids else None


def stop_with_savepoint(rest_url: str, job_id: str, target_dir: str, timeout: float) -> str:
    """The savepoint's location; RuntimeError with Flink's reason when it fails or times out."""
    request_id = _call(f'{rest_url}/jobs/{job_id}/stop', {'targetDirectory': target_dir, 'drain': False})['request-id']
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _call(f'{rest_url}/jobs/{job_id}/savepoints/{request_id}')
        if status['status']['id'] == 'COMPLETED':
            operation = status.get('operation') or {}
            if 'location' in operation:
                return operation['location']
            cause = (operation.get('failure-cause') or {}).get('stack-trace', 'no reason given')
            raise RuntimeError(f'the savepoint failed: {cause.splitlines()[0] if cause else cause}')
        time.sleep(0.5)
    raise RuntimeError(f'no savepoint after {timeout:.0f} s (the job keeps running)')


def latest_checkpoint(checkpoint_dir: Path, job_id: str | None) -> str | None:
    """`file:<path>` of the newest completed checkpoint (its `_metadata` written last) of `job_id`, or of any job."""
    pattern = f'{job_id}/chk-*/_metadata' if job_id else '*/chk-*/_metadata'
    found = sorted(checkpoint_dir.glob(pattern), key=lambda meta: meta.stat().st_mtime)
    return f'file:{found[-1].parent.resolve()}' if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.tools.flink_savepoint', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--job-name', default='engagement-engagement-pipeline',
                        help='the job to stop: engagement-<consumer group> (default for the default group)')
    parser.add_argument('--rest-url', default=f'http://{local_stack.HOST}:{local_stack.port("flink_rest_port")}')
    parser.add_argument('--target-dir', default=(local_stack.state_dir() / SAVEPOINTS_DIR).resolve().as_uri())
    parser.add_argument('--timeout', type=float, default=120.0, help='seconds to wait for the savepoint')
    parser.add_argument('--latest-checkpoint', action='store_true',
                        help='print the newest completed checkpoint instead (no job is stopped)')
    parser.add_argument('--job-id', help='with --latest-checkpoint: that job\'s (default: any job\'s)')
    parser.add_argument('--checkpoint-dir', type=Path,
                        default=local_stack.state_dir() / local_stack.FLINK_CHECKPOINTS_DIR,
                        help='with --latest-checkpoint: where the checkpoints are (default: the local cluster\'s)')
    args = parser.parse_args(argv)
    if args.latest_checkpoint:
        location = latest_checkpoint(args.checkpoint_dir, args.job_id)
        if location is None:
            print(f'error: no completed checkpoint{" of job " + args.job_id if args.job_id else ""} under '
                  f'{args.checkpoint_dir}', file=sys.stderr)
            return 1
        print(location)
        return 0
    try:
        job_id = running_job(args.rest_url, args.job_name)
        if job_id is None:
            print(f'error: no running job named {args.job_name} on {args.rest_url}', file=sys.stderr)
            return 1
        location = stop_with_savepoint(args.rest_url, job_id, args.target_dir, args.timeout)
    except (OSError, RuntimeError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(location)
    return 0


if __name__ == '__main__':
    sys.exit(main())
