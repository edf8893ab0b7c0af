"""Strict JSON text for every file and listing attd writes.

Python's `json` writes a non-finite float as a bare `NaN` or `Infinity`, which strict
parsers (browsers, jq, most languages) reject. attd writes such a number as `null`
instead, whatever the nesting: a metric that can legitimately overflow (the perplexity
of a diverged model) then reads as "no value" everywhere. `allow_nan=False` backs this
up, so a non-finite float that slipped past fails loudly rather than being written.
Pydantic's `model_dump_json` does the same by default (`ser_json_inf_nan="null"`).
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every non-finite float, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def json_text(value: Any, **options: Any) -> str:
    """`json.dumps(value, **options)`, strict: non-finite floats become null."""
    return json.dumps(finite(value), allow_nan=False, **options)
