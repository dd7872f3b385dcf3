"""`launch.tools.flink_savepoint --latest-checkpoint`: the newest completed checkpoint, of one job or of any."""
from __future__ import annotations

import os

from launch.tools import flink_savepoint


def checkpoint(root, job: str, n: int, mtime: float, complete: bool = True):
    path = root / job / f'chk-{n}'
    path.mkdir(parents=True)
    if complete:
        (path / '_metadata').write_bytes(b'x')
        os.utime(path / '_metadata', (mtime, mtime))
    return path


def test_the_newest_completed_checkpoint_of_the_job_or_of_any(tmp_path, capsys):
    checkpoint(tmp_path, 'a1', 7, 100)
    newest_a = checkpoint(tmp_path, 'a1', 8, 200)
    checkpoint(tmp_path, 'a1', 9, 0, complete=False)  # being written: no _metadata yet
    newest_any = checkpoint(tmp_path, 'b2', 3, 300)
    args = ['--latest-checkpoint', '--checkpoint-dir', str(tmp_path)]
    assert flink_savepoint.main([*args, '--job-id', 'a1']) == 0
    assert capsys.readouterr().out.strip() == f'file:{newest_a}'
    assert flink_savepoint.main(args) == 0
    assert capsys.readouterr().out.strip() == f'file:{newest_any}'


def test_no_completed_checkpoint_is_one_error_line(tmp_path, capsys):
    checkpoint(tmp_path, 'a1', 1, 0, complete=False)
    assert flink_savepoint.main(['--latest-checkpoint', '--checkpoint-dir', str(tmp_path), '--job-id', 'a1']) == 1
    err = capsys.readouterr().err
    assert err == f'error: no completed checkpoint of job a1 under {tmp_path}\n'
