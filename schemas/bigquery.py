"""BigQuery table schemas derived from the pydantic models, so a column is never restated by hand.

    bigquery_fields(EnrichedEvent)
    -> [{'name': 'id', 'type': 'INT64', 'mode': 'REQUIRED', 'description': ...}, ...]

`WriteToBigQuery(schema={'fields': bigquery_fields(Model)})` accepts the result as is. Types: int -> INT64,
str/Literal -> STRING, float -> FLOAT64, datetime -> TIMESTAMP, bool -> BOOLEAN, dict/list/Any -> JSON. A field
that admits None is NULLABLE, every other one REQUIRED. Computed fields (e.g. engagement_seconds) are columns too,
since they are part of the dumped row; fields excluded from dumps (run-time state such as watermark_ms) are not.
"""
from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel

_SCALARS = ((bool, 'BOOLEAN'), (int, 'INT64'), (float, 'FLOAT64'), (str, 'STRING'), (datetime, 'TIMESTAMP'),
            (AwareDatetime, 'TIMESTAMP'))


def _bigquery_type(annotation: Any) -> tuple[str, bool]:
    """(BigQuery type, nullable) of a Python annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _bigquery_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        non_null = [a for a in args if a is not type(None)]
        kinds = {_bigquery_type(a)[0] for a in non_null}
        if len(kinds) != 1:
            raise TypeError(f'no single BigQuery type for {annotation!r}')
        return kinds.pop(), len(non_null) < len(args)
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        kinds = {_bigquery_type(type(v))[0] for v in values}
        if len(kinds) != 1:
            raise TypeError(f'no single BigQuery type for {annotation!r}')
        return kinds.pop(), None in values
    if annotation is Any or origin in (dict, list) or annotation in (dict, list):
        return 'JSON', False
    if isinstance(annotation, type):
        for python_type, bq_type in _SCALARS:  # bool before int: bool is a subclass of int
            if issubclass(annotation, python_type):
                return bq_type, False
    raise TypeError(f'no BigQuery type for {annotation!r}')


def bigquery_fields(model: type[BaseModel]) -> list[dict[str, str]]:
    """The model's fields, then its computed fields, as BigQuery schema fields (name, type, mode, description)."""
    fields = []
    columns = [(name, info.annotation, info.description) for name, info in model.model_fields.items()
               if not info.exclude]
    columns += [(name, info.return_type, info.description) for name, info in model.model_computed_fields.items()]
    for name, annotation, description in columns:
        bq_type, nullable = _bigquery_type(annotation)
        field = {'name': name, 'type': bq_type, 'mode': 'NULLABLE' if nullable else 'REQUIRED'}
        if description:
            field['description'] = description
        fields.append(field)
    return fields
