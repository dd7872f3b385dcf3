"""List or delete the windows the pipeline wrote to Redis, by window start: the step before rebuilding them with
`--start_timestamp` (the Redis sink keeps a stored pane that has more events than a new one, so windows counted
too high by a bug must go first).

    python -m launch.tools.redis_windows [--since TIME] [--until TIME] [--prefix engagement] [--delete]

TIME: ISO-8601 (UTC without an offset) or epoch seconds; a window is selected when its start is in
[--since, --until). Without `--delete` it only counts. Redis from `--redis-url` (default $ENGAGEMENT_REDIS_URL, the
local stack's); credentials from REDIS_USERNAME and REDIS_PASSWORD or REDIS_PASSWORD_FILE.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import os
import sys

from connectors.credentials import redis_credentials
from connectors.redis import redact_url
from pipelines import local_stack
from pipelines.options.common import parse_utc

KINDS = ('stats', 'top', 'totals')


def parse_time(text: str) -> int:
    """Epoch seconds from ISO-8601 (UTC unless it says otherwise) or a number of seconds."""
    if text.strip().isdigit():
        return int(text)
    try:
        return int(parse_utc(text).timestamp())
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected ISO-8601 or epoch seconds') from None


def window_keys(client, prefix: str, since: int | None, until: int | None) -> dict[int, list[bytes]]:
    """{window start: its keys} for the windows starting in [since, until)."""
    out: dict[int, list[bytes]] = collections.defaultdict(list)
    for key in client.scan_iter(f'{prefix}:*', count=1000):
        parts = key.decode().split(':')
        if len(parts) < 3 or parts[1] not in KINDS or not parts[2].lstrip('-').isdigit():
            continue
        window = int(parts[2])
        if (since is None or window >= since) and (until is None or window < until):
            out[window].append(key)
    return dict(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m launch.tools.redis_windows', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--since', type=parse_time, help='first window start to select (default: the oldest)')
    parser.add_argument('--until', type=parse_time, help='select windows starting before this (default: all)')
    parser.add_argument('--prefix', default='engagement', help="the pipeline's --redis_prefix (default engagement)")
    parser.add_argument('--redis-url',
                        default=os.environ.get('ENGAGEMENT_REDIS_URL') or local_stack.addresses().redis_url,
                        help='Redis URL. Env ENGAGEMENT_REDIS_URL; default the local stack.')
    parser.add_argument('--delete', action='store_true', help='delete the selected windows (default: only count)')
    args = parser.parse_args(argv)

    import redis
    client = redis.Redis.from_url(args.redis_url, **redis_credentials())
    try:
        selected = window_keys(client, args.prefix, args.since, args.until)
        keys = [k for ks in selected.values() for k in ks]
        span = (f'{datetime.datetime.fromtimestamp(min(selected), datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ} .. '
                f'{datetime.datetime.fromtimestamp(max(selected), datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}'
                if selected else 'none')
        if args.delete:
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i:i + 1000])
        print(f'{"deleted" if args.delete else "found"} {len(selected)} windows ({span}), {len(keys)} keys')
    except redis.RedisError as exc:
        print(f'error: Redis at {redact_url(args.redis_url)}: {exc}', file=sys.stderr)
        return 2
    finally:
        client.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
