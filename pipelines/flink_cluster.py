"""The REST API of a Flink cluster, and the address of the stack's own session cluster (`launch.stack up --with
flink`)."""
from __future__ import annotations

import json
import urllib.request

from pipelines import local_stack


def local_cluster_master() -> str:
    """The REST address of the stack's Flink session cluster (`launch.stack up --with flink`)."""
    return f'{local_stack.HOST}:{local_stack.port("flink_rest_port")}'


def _host_port(flink_master: str) -> tuple[str, str]:
    host, _, port = flink_master.split('://', 1)[-1].rstrip('/').rpartition(':')
    return host, port


def is_local_cluster(flink_master: str) -> bool:
    """Whether `flink_master` is the stack's session cluster."""
    host, port = _host_port(flink_master)
    return host in ('127.0.0.1', 'localhost') and port == str(local_stack.port('flink_rest_port'))


def is_local_flink(flink_master: str) -> bool:
    """An embedded Flink or one on this machine (which shares its file system with this process)."""
    return flink_master in ('[local]', '[auto]') or _host_port(flink_master)[0] in ('127.0.0.1', 'localhost')


def slots_total(url: str) -> int:
    """The task slots of the Flink cluster at `url` (REST `/overview`); 1 when it cannot be asked (the job's
    submission then reports the unreachable cluster itself)."""
    try:
        with urllib.request.urlopen(f'{url}/overview', timeout=10) as resp:
            return max(1, int(json.load(resp)['slots-total']))
    except (OSError, ValueError, KeyError):
        return 1


def cancel_jobs(url: str, name: str) -> list[str]:
    """Cancel the unfinished jobs called `name` on the Flink cluster at `url` (REST API); returns their ids.

    Beam's job server cannot cancel a job it submitted to a cluster (cancelling its invocation only stops waiting
    for it), and a job on a session cluster outlives the driver that submitted it: a driver that stops, or one
    that restarts after a crash, cancels the earlier job of the same name itself."""
    with urllib.request.urlopen(f'{url}/jobs/overview', timeout=10) as resp:
        jobs = json.load(resp)['jobs']
    cancelled = []
    for job in jobs:
        if job['name'] == name and job['state'] not in ('FINISHED', 'CANCELED', 'FAILED', 'CANCELLING'):
            request = urllib.request.Request(f'{url}/jobs/{job["jid"]}?mode=cancel', method='PATCH')
            urllib.request.urlopen(request, timeout=10).close()
            cancelled.append(job['jid'])
    return cancelled
