"""The demo's exit: a failure while starting is said and fails the demo; only a closed output is a quiet stop."""
from __future__ import annotations

import errno

import pytest

from launch.scenarios import demo


class FailingStack:
    """A stack whose start raises `error`; nothing of it runs."""

    def __init__(self, error: OSError):
        self.error = error
        self.components = []

    def __call__(self, cfg, with_=()):
        return self

    def up(self):
        raise self.error


@pytest.mark.parametrize('error, status, said', [
    (PermissionError(errno.EACCES, 'Permission denied', '/var/tmp/x/logs'), 1, 'error: [Errno 13] Permission denied'),
    (BrokenPipeError(errno.EPIPE, 'Broken pipe'), 0, 'stopping: cannot write the output any more'),
])
def test_an_oserror_while_starting_fails_the_demo_unless_the_output_is_gone(monkeypatch, tmp_path, capsys, error,
                                                                             status, said):
    monkeypatch.setattr(demo, 'Stack', FailingStack(error))
    monkeypatch.setenv('ENGAGEMENT_STATE_DIR', str(tmp_path))
    try:
        assert demo.main(['--runner=prism']) == status
    finally:
        demo.signal.signal(demo.signal.SIGTERM, demo.signal.SIG_DFL)
        demo.signal.signal(demo.signal.SIGHUP, demo.signal.SIG_DFL)
        demo.signal.signal(demo.signal.SIGINT, demo.signal.default_int_handler)
    out = capsys.readouterr()
    assert said in out.out + out.err
