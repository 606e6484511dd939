"""Small pydantic building blocks shared by the site config and the driver settings."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as `500ms`, `30s`, `5m`, `12h`, `7d`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 12h or 7d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration such as 30s, 5m, 12h or 7d, got {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def duplicates(keys: Iterable) -> list:
    """The keys that occur again in `keys`, in the order they repeat (a key seen n times: n - 1 times)."""
    seen, repeated = set(), []
    for key in keys:
        if key in seen:
            repeated.append(key)
        seen.add(key)
    return repeated


# Editors see what the file may hold (30, "30s", "5m"), not the float it becomes.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0},
                              {"type": "string", "pattern": _DURATION.pattern}],
                    "description": "seconds, or a number with a unit: ms, s, m, h, d"}),
]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a site config must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")
