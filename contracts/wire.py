"""orjson (de)serialisation of outbound events: the one place that turns models into bytes."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel


def _model_fields(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(event: BaseModel) -> bytes:
    """Serialise an event (built with `model_construct` or validated) to compact JSON bytes."""
    return orjson.dumps(event, default=_model_fields)
