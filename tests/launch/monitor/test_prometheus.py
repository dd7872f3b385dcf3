"""The alert rules: `promtool check rules` accepts them and `promtool test rules` shows every alert firing on the
situation it names and quiet otherwise (launch/monitor/prometheus/alerts_test.yml); the stack's scrape config
passes `promtool check config`."""
from __future__ import annotations

import re
import subprocess

from launch.stack import config as stack_config
from launch.stack.prometheus import RULES, scrape_config

TESTS = RULES.with_name('alerts_test.yml')


def promtool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(['promtool', *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_the_rules_are_valid():
    result = promtool('check', 'rules', str(RULES))
    assert result.returncode == 0 and 'SUCCESS: 9 rules found' in result.stdout, result.stdout + result.stderr


def test_every_alert_has_a_passing_promtool_test_that_fires_it_and_one_that_does_not():
    result = promtool('test', 'rules', TESTS.name, cwd=TESTS.parent)
    assert result.returncode == 0 and 'SUCCESS' in result.stdout, result.stdout + result.stderr
    alerts = set(re.findall(r'^\s+- alert: (\w+)$', RULES.read_text(), flags=re.MULTILINE))
    tested = re.findall(r'alertname: (\w+)\n\s+exp_alerts:(.*?)(?=\n\s+- eval_time|\n\n|\Z)', TESTS.read_text(),
                        flags=re.DOTALL)
    fired = {name for name, expected in tested if 'exp_labels' in expected}
    quiet = {name for name, expected in tested if expected.strip() == '[]'}
    assert alerts == fired == quiet and len(alerts) == 9


def test_the_stacks_scrape_config_is_valid(tmp_path):
    config = tmp_path / 'prometheus.yml'
    config.write_text(scrape_config(stack_config.load(environ={})))
    result = promtool('check', 'config', str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "targets: ['127.0.0.1:18095']" in config.read_text()
