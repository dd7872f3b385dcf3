"""Generate the Flex Template's `metadata.json` from `pipelines.options.EngagementOptions`, never by hand.

    python -m launch.dataflow.metadata            # print it
    python -m launch.dataflow.metadata --write    # (re)write launch/dataflow/metadata.json
    python -m launch.dataflow.metadata --check    # exit 1 if the file differs from what the options say

Every flag of the options class becomes a template parameter with its help text; numeric flags get a validation
regex (Dataflow checks it when a job is launched), flags with a fixed set of values an alternation of them. The
local defaults (127.0.0.1 addresses) mean nothing on Dataflow, so the connection flags are required parameters of
the template. Secrets (`--kafka_sasl_password`, `--api_client_secret`) stay optional parameters: pass them from
Secret Manager through the launch environment instead of as plain parameters where you can.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines import options as pipeline_options

METADATA_PATH = Path(__file__).with_name('metadata.json')
# Pointing at the local stack by default; a Dataflow job must be told where its services are.
REQUIRED_ON_DATAFLOW = ('kafka_bootstrap_servers', 'pg_dsn', 'redis_url')
# Flags whose value is one of a fixed set (validated by EngagementOptions.validate() too).
ENUMERATIONS = pipeline_options.CHOICES
_NUMBER_REGEX = {int: r'^[0-9]+$', float: r'^[0-9]+(\.[0-9]+)?$'}


def option_actions() -> list[argparse.Action]:
    """The argparse actions EngagementOptions declares (one per flag), in declaration order."""
    parser = argparse.ArgumentParser(add_help=False)
    pipeline_options.add_arguments(parser)
    return [a for a in parser._actions if a.option_strings]


_WORDS = {'cdc': 'CDC', 'api': 'API', 'url': 'URL', 'dsn': 'DSN', 'pg': 'Postgres', 'bq': 'BigQuery',
          'ttl': 'TTL', 'ssl': 'SSL', 'sasl': 'SASL', 'cafile': 'CA file', 'id': 'ID', 'xlang': 'xlang'}


def _label(name: str) -> str:
    words = [_WORDS.get(w, w) for w in name.split('_')]
    return ' '.join([words[0][:1].upper() + words[0][1:], *words[1:]])


def parameter(action: argparse.Action) -> dict:
    name = action.dest
    param = {'name': name, 'label': _label(name), 'helpText': ' '.join(action.help.split()),
             'isOptional': name not in REQUIRED_ON_DATAFLOW}
    if name in ENUMERATIONS:
        param['regexes'] = ['^(' + '|'.join(ENUMERATIONS[name]) + ')$']
    elif action.type in _NUMBER_REGEX:
        param['regexes'] = [_NUMBER_REGEX[action.type]]
    return param


def metadata() -> dict:
    return {
        'name': 'Engagement analytics (Kafka CDC -> Beam -> Redis, BigQuery, REST API)',
        'description': ('Reads Debezium change events of engagement_events (and direct JSON events) from Kafka, '
                        'validates and enriches them with content metadata from Postgres, computes per-content '
                        'event-time windows and writes Redis, BigQuery and a REST API, with dead letters for '
                        'everything that fails. See the project README.'),
        'streaming': True,
        'supportsAtLeastOnce': False,
        'supportsExactlyOnce': True,
        'parameters': [parameter(a) for a in option_actions()],
    }


def render() -> str:
    return json.dumps(metadata(), indent=2) + '\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--write', action='store_true', help=f'write {METADATA_PATH}')
    group.add_argument('--check', action='store_true', help='exit 1 if the file is not up to date')
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        METADATA_PATH.write_text(text)
        print(f'wrote {METADATA_PATH} ({len(metadata()["parameters"])} parameters)')
    elif args.check:
        current = METADATA_PATH.read_text() if METADATA_PATH.exists() else ''
        if current != text:
            print(f'{METADATA_PATH} is out of date: run `python -m launch.dataflow.metadata --write`',
                  file=sys.stderr)
            return 1
        print(f'{METADATA_PATH} is up to date')
    else:
        sys.stdout.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
