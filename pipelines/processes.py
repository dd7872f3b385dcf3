"""The process tree below a PID, read from /proc: how the pipeline finds (and stops) the job server JVMs and
runner binaries it started, and how the local stack and the tests find theirs."""
from __future__ import annotations

from pathlib import Path


def descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid` (children first level first)."""
    children: dict[int, list[int]] = {}
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / 'stat').read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(')') + 2:].split()[1]), []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        current = todo.pop(0)
        found.append(current)
        todo.extend(children.get(current, []))
    return found
