"""`python -m launch.stack.compose_init`: the one-shot set-up of the docker-compose stack (docker-compose.yml).

`launch.stack up` creates the topics and the BigQuery dataset, tables and views as it starts Kafka and the emulator;
under docker-compose the images start themselves, so this service does those two steps once both answer (the same
code: Kafka's topic creation and connectors/bigquery/tables.py). Idempotent; exits 0 when both are done, 1 with one
line saying what did not answer within `--timeout` seconds. Settings as `launch.stack` (ENGAGEMENT_* variables).
"""
from __future__ import annotations

import argparse
import sys
import time

from launch.stack import config as stack_config
from launch.stack.component import http_json
from launch.stack.kafka import Kafka


def _until(what: str, step, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = 'no answer yet'
    while time.monotonic() < deadline:
        try:
            if step():
                print(f'compose-init: {what}: done', flush=True)
                return
        except Exception as exc:  # a service still starting: retry until the deadline
            last = f'{type(exc).__name__}: {exc}'
        time.sleep(1)
    raise TimeoutError(f'{what}: not done after {timeout:.0f} s ({last})')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--timeout', type=float, default=180.0, help='seconds to wait for each service')
    stack_config.add_arguments(parser)
    args = parser.parse_args(argv)
    cfg = stack_config.from_args(args)

    def tables() -> bool:
        from connectors.bigquery.tables import ensure_tables
        if http_json(f'{cfg.bq_endpoint}/readyz', timeout=2)['status'] != 'ok':
            return False
        ensure_tables(cfg.bq_project, cfg.bq_dataset, cfg.bq_endpoint)
        return True

    try:
        _until(f'topics {", ".join(cfg.topics)}', Kafka(cfg).create_topics, args.timeout)
        _until(f'BigQuery dataset {cfg.bq_dataset} (tables, views)', tables, args.timeout)
    except TimeoutError as exc:
        print(f'compose-init: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
