"""Models built from values that are valid already, without `model_construct`'s per-field walk.

    event = trusted(IngestedEvent, {**validated.__dict__, 'source': 'cdc', ...})

The per-event path validates each record once (JSON -> model, in pydantic's Rust core) and then only adds fields
whose types the adding code guarantees (Kafka coordinates, catalogue values). `Model.model_construct` would do,
but it walks every field in Python looking for aliases and defaults: ~10 us per call on these models, as much as
the validation itself, twice per event. `trusted` sets the instance's state directly (~1 us).
"""
from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar('M', bound=BaseModel)
_set = object.__setattr__


def trusted(model: type[M], values: dict[str, Any]) -> M:
    """An instance of `model` whose fields are `values`, unvalidated. `values` must hold every field of the model,
    each already of its declared type; the dict becomes the instance's state (do not reuse it)."""
    instance = model.__new__(model)
    _set(instance, '__dict__', values)
    _set(instance, '__pydantic_fields_set__', set(values))
    _set(instance, '__pydantic_extra__', None)
    _set(instance, '__pydantic_private__', None)
    return instance
