"""The load generator's command line: bad arguments are refused with a message that says what is wrong."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize('args, message', [
    (['--rate', '0', '--count', '1'], '--rate must be between'),
    (['--rate', '10', '--count', '5', '--late-share', '1.5'], '--late-share must be between 0 and 1'),
    (['--rate', '10', '--count', '5', '--bad-share', '0.1'], '--bad-share needs --direct'),
    (['--rate', '10'], 'one of the arguments --duration --count is required'),
])
def test_generator_rejects_bad_arguments(args, message):
    proc = subprocess.run([sys.executable, '-m', 'launch.scenarios.generate', *args], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
