"""The stack's component `prometheus`: Debian's Prometheus on 127.0.0.1, scraping the monitoring service (which
passes the pipeline's metrics on) every 5 s and evaluating the alert rules of launch/monitor/prometheus/."""
from __future__ import annotations

import shutil
import urllib.error

from launch.stack import config as stack_config
from launch.stack.component import Component, StackError, http_json, wait_ready

RULES = stack_config.REPO_ROOT / 'launch' / 'monitor' / 'prometheus' / 'alerts.yml'
SCRAPE_INTERVAL = '5s'


def scrape_config(cfg: stack_config.StackConfig) -> str:
    """prometheus.yml: one job, the monitoring service on loopback; the rules of the repository."""
    return (f'global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n'
            f'rule_files:\n  - {RULES}\n'
            'scrape_configs:\n  - job_name: engagement\n    metrics_path: /metrics\n'
            f'    static_configs:\n      - targets: [\'127.0.0.1:{cfg.monitor_port}\']\n')


class Prometheus(Component):
    name = 'prometheus'
    port_settings = ('prometheus_port',)

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.cfg.prometheus_port}'

    def start(self) -> None:
        binary = shutil.which('prometheus')
        if not binary:
            raise StackError('prometheus not found: run `make install` (it installs the Debian package).')
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / 'prometheus.yml'
        config.write_text(scrape_config(self.cfg))
        self.proc.spawn([binary, f'--config.file={config}', f'--storage.tsdb.path={self.dir / "data"}',
                         f'--web.listen-address=127.0.0.1:{self.cfg.prometheus_port}',
                         '--storage.tsdb.retention.time=2d', '--log.level=warn'])
        wait_ready('GET /-/ready', self.proc, lambda: http_json(f'{self.url}/api/v1/status/buildinfo', timeout=1))

    def health(self):
        rows = super().health()
        if rows[0][1]:
            try:
                targets = http_json(f'{self.url}/api/v1/targets', timeout=2)['data']['activeTargets']
                up = [t['scrapeUrl'] for t in targets if t['health'] == 'up']
                # Prometheus is healthy whether or not the monitoring service it scrapes runs now
                rows.append(('targets', True, f'{len(up)}/{len(targets)} up (the monitoring service, '
                                              f'127.0.0.1:{self.cfg.monitor_port})'))
            except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                rows.append(('scraping', False, f'{type(exc).__name__}: {exc}'))
        return rows
