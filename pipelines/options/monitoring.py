"""How the pipeline shows itself: the Prometheus endpoint of the pipeline process."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options.common import bad, env

LOOPBACK_HOSTS = ('127.0.0.1', '::1', 'localhost')


class MonitoringOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        monitoring = parser.add_argument_group('monitoring')
        monitoring.add_argument('--metrics_port', type=int, default=int(env('ENGAGEMENT_METRICS_PORT', '0') or 0),
                                help='Serve the pipeline\'s metrics in Prometheus exposition at '
                                     'http://<metrics_host>:<port>/metrics (see docs/operations.md, "Metrics"); 0 '
                                     'serves none. Local runners only: their SDK worker runs in this process (on '
                                     'Dataflow the same metrics are Beam metrics in Cloud Monitoring). Env '
                                     'ENGAGEMENT_METRICS_PORT; default 0.')
        monitoring.add_argument('--metrics_host', default=env('ENGAGEMENT_METRICS_HOST', '127.0.0.1'),
                                help='Address the metrics endpoint binds to. Env ENGAGEMENT_METRICS_HOST; default '
                                     '127.0.0.1 (this machine only).')

    def check(self) -> None:
        if not 0 <= self.metrics_port <= 65535:
            bad('metrics_port', self.metrics_port, 'expected 0 (off) or a port 1..65535')
        if not self.metrics_host:
            bad('metrics_host', self.metrics_host, 'expected an address to bind to, such as 127.0.0.1')
