"""JSON for reports and records: NaN/Inf spelled as strings, files replaced atomically."""
from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ['json_number', 'json_ready', 'write_json']


def json_number(value: float) -> float | str:
    """JSON has no NaN/Inf: keep finite floats, spell the others ``'nan'``/``'inf'``/``'-inf'``."""
    value = float(value)
    return value if math.isfinite(value) else str(value)


def json_ready(obj: Any) -> Any:
    """Recursively replace NaN/Inf floats (invalid JSON) by strings."""
    if isinstance(obj, float):
        return json_number(obj)
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def write_json(path: str, data: Any, indent: int = 1, strict: bool = False) -> None:
    """Write ``data`` to ``path`` atomically: a reader (a sweep polling a record, a snapshot
    copied or committed mid-run) never sees half a file. ``strict``: valid JSON only (NaN/Inf
    spelled as strings) rather than Python's ``NaN`` extension."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(json_ready(data) if strict else data, f, indent=indent, allow_nan=not strict)
    os.replace(tmp, path)
