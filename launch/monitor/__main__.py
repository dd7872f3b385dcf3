"""`python -m launch.monitor`: serve the monitoring and query service on 127.0.0.1:$ENGAGEMENT_MONITOR_PORT (18095).

    python -m launch.monitor [--window-seconds 60] [--redis-prefix engagement] [--group engagement-pipeline]

API keys of the query API: $ENGAGEMENT_QUERY_API_KEYS as `client:key,client2:key2` (keys of 16 characters or
more); without it, the local stack's documented key `engagement-local-query-key` for client `local`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from launch.stack import config as stack_config
from pipelines import logs

QUERY_API_KEYS_ENV = 'ENGAGEMENT_QUERY_API_KEYS'
LOCAL_QUERY_API_KEYS = 'local:engagement-local-query-key'


def settings_from(cfg: stack_config.StackConfig, args: argparse.Namespace):
    from launch.monitor.app import Settings, parse_api_keys
    from launch.monitor.probes import Targets
    from launch.stack.connect import CONNECTOR_NAME
    targets = Targets(kafka_bootstrap=cfg.kafka_bootstrap, pg_dsn=cfg.pg_dsn, redis_url=cfg.redis_url,
                      group=args.group, topics=(cfg.events_topic, cfg.raw_topic),
                      pipeline_metrics_url=cfg.pipeline_metrics_url, connect_url=cfg.connect_url,
                      connector=CONNECTOR_NAME, bq_endpoint=None if args.no_bigquery else cfg.bq_endpoint,
                      api_url=None if args.no_api else cfg.api_url)
    keys = parse_api_keys(os.environ.get(QUERY_API_KEYS_ENV) or LOCAL_QUERY_API_KEYS)
    return Settings(targets=targets, api_keys=keys, redis_prefix=args.redis_prefix,
                    window_seconds=args.window_seconds, rate_per_second=args.rate_limit, burst=args.burst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.monitor', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--window-seconds', type=int, default=60, help='The pipeline\'s --window_seconds.')
    parser.add_argument('--redis-prefix', default='engagement', help='The pipeline\'s --redis_prefix.')
    parser.add_argument('--group', default='engagement-pipeline', help='The pipeline\'s --consumer_group.')
    parser.add_argument('--rate-limit', type=float, default=10.0, help='Query API requests per second per client.')
    parser.add_argument('--burst', type=int, default=20, help='Query API requests at once per client.')
    parser.add_argument('--no-bigquery', action='store_true', help='Do not check BigQuery in /health.')
    parser.add_argument('--no-api', action='store_true', help='Do not check the REST API in /health.')
    parser.add_argument('--host', default='127.0.0.1',
                        help='Address to listen on (default 127.0.0.1). docker-compose.yml gives 0.0.0.0 inside its '
                             'container so that the port it publishes on the host\'s 127.0.0.1 reaches the page.')
    stack_config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = stack_config.from_args(args)
        settings = settings_from(cfg, args)
    except (stack_config.ConfigError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    import uvicorn

    from launch.monitor.app import create_app
    logs.configure('INFO')
    logging.getLogger('kafka').setLevel(logging.WARNING)  # kafka-python logs every connection at INFO
    # log_config=None: uvicorn's loggers go through ours (JSON lines) instead of handlers of its own
    uvicorn.run(create_app(settings), host=args.host, port=cfg.monitor_port, log_config=None, access_log=False)
    return 0


if __name__ == '__main__':
    sys.exit(main())
