"""Flink's checkpoint and restart counts of a running job, from its REST API (the web UI's), for benchmarks.

An embedded Flink (`--flink_master=[local]`) serves that API on a port it picks: `rest_urls(pid)` finds the
listening ports of the job server JVM from /proc and keeps those that answer `GET /jobs/overview`.
"""
from __future__ import annotations

import json
import os
import time
import urllib.request


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = f'/proc/{pid}/fd'
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(f'{fd_dir}/{fd}')
        except OSError:
            continue
        if link.startswith('socket:['):
            inodes.add(link[8:-1])
    return inodes


def listening_ports(pid: int) -> list[int]:
    """TCP ports process `pid` listens on (IPv4 and IPv6)."""
    inodes = _socket_inodes(pid)
    ports = []
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == '0A' and fields[9] in inodes:  # 0A: LISTEN
                ports.append(int(fields[1].rsplit(':', 1)[1], 16))
    return sorted(set(ports))


def _get(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def rest_urls(pid: int) -> list[str]:
    urls = []
    for port in listening_ports(pid):
        url = f'http://127.0.0.1:{port}'
        try:
            if 'jobs' in _get(f'{url}/jobs/overview', timeout=1.0):
                urls.append(url)
        except Exception:  # a gRPC or blob port: not Flink's REST API
            continue
    return urls


def job_report(url: str) -> list[dict]:
    """Per job of the Flink at `url`: name, state, parallelism, checkpoint counts (completed, failed, restored, in
    progress), the reasons of the failed ones still in Flink's history, and the size of the last completed one."""
    report = []
    for job in _get(f'{url}/jobs/overview')['jobs']:
        jid = job['jid']
        checkpoints = _get(f'{url}/jobs/{jid}/checkpoints')
        completed = (checkpoints.get('latest') or {}).get('completed') or {}
        vertices = _get(f'{url}/jobs/{jid}')['vertices']
        report.append({'name': job['name'], 'state': job['state'], **checkpoints['counts'],
                       'parallelism': max(v['parallelism'] for v in vertices),
                       'failures': sorted({(h.get('failure_message') or '?')[:160]
                                           for h in checkpoints.get('history', []) if h['status'] == 'FAILED'}),
                       'last_checkpoint_bytes': completed.get('state_size', completed.get('checkpointed_size')),
                       'subtasks': subtask_records(url, jid, vertices)})
    return report


def subtask_records(url: str, jid: str, vertices: list[dict]) -> list[tuple[str, list[int]]]:
    """(vertex name, records received by each subtask) of the vertices that run in parallel: how evenly the
    work spread (the Kafka reader's partition groups arrive by a shuffle, at the vertex that reads them)."""
    found = []
    parallel = [vertex for vertex in vertices if vertex['parallelism'] > 1]
    if parallel:  # the REST API serves metrics fetched at most every 10 s, and only after they were asked for
        _get(f"{url}/jobs/{jid}/vertices/{parallel[0]['id']}")
        time.sleep(11)
    for vertex in parallel:
        detail = _get(f"{url}/jobs/{jid}/vertices/{vertex['id']}")
        name = vertex['name'] if len(vertex['name']) <= 90 else vertex['name'][:87] + '...'
        found.append((name, [sub['metrics'].get('read-records', 0) for sub in detail['subtasks']]))
    return found


def describe(pid: int) -> str:
    """One line per job of the Flink inside JVM `pid`, or why there is none."""
    urls = rest_urls(pid)
    if not urls:
        return f'Flink REST API not found among the ports of pid {pid}'
    return describe_url(urls[0])


def describe_url(url: str) -> str:
    """One line per job of the Flink whose REST API is at `url`."""
    lines = []
    for job in job_report(url):
        lines.append(f"Flink job {job['name']} ({job['state']}, parallelism {job['parallelism']}): checkpoints "
                     f"completed {job['completed']}, failed {job['failed']}, restored {job['restored']} (a restart "
                     f"from a checkpoint), in progress {job['in_progress']}; last checkpoint "
                     f"{job['last_checkpoint_bytes'] or 0:,} bytes"
                     + (f"; failures among the last 10: {job['failures']}" if job['failures'] else ''))
        lines += [f'  {name}: records in per subtask {records}' for name, records in job['subtasks']]
    return '\n'.join(lines) or 'no Flink job'
