"""What every group of options shares: the error that names a flag, environment fallbacks, range checks."""
from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterable
from typing import NoReturn

from apache_beam.options.pipeline_options import PipelineOptions

NAME = re.compile(r'[A-Za-z0-9._-]+')


class InvalidOption(ValueError):
    """A flag has a value the pipeline cannot run with; the message names the flag."""


def env(name: str, default: str | None = None, *more: str) -> str | None:
    """The first of the variables `name`, `*more` that is set and not empty, else `default` (flag > variable >
    default)."""
    for var in (name, *more):
        if os.environ.get(var):
            return os.environ[var]
    return default


def parse_utc(text: str) -> datetime.datetime:
    """An ISO-8601 time, UTC unless it names an offset ('Z' included); ValueError when it is not one."""
    when = datetime.datetime.fromisoformat(text.strip().replace('Z', '+00:00'))
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.timezone.utc)


def bad(flag: str, value: object, why: str) -> NoReturn:
    raise InvalidOption(f'--{flag}={value!r}: {why}')


def check_ranges(opts: PipelineOptions, ranges: Iterable[tuple[str, float, float]]) -> None:
    for flag, low, high in ranges:
        value = getattr(opts, flag)
        if not low <= value <= high:
            bad(flag, value, f'expected {low}..{high}')


def check_names(opts: PipelineOptions, flags: Iterable[str]) -> None:
    for flag in flags:
        value = getattr(opts, flag)
        if not value or not NAME.fullmatch(value):
            bad(flag, value, 'expected a non-empty name of letters, digits, ".", "_" or "-"')
