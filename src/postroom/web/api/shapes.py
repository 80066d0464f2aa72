"""Domain records as JSON: one generic conversion for the REST API's responses.

Dataclasses and pydantic models become objects, datetimes ISO 8601 strings, enums their
values, compiled patterns their source; bytes are never sent (an archive copy's data, a
mirror page's HTML). A record with its own `to_json` (reports, import reports, analysis,
audit entries) is shown as that, so the CLI's ``--json`` and the API agree.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

__all__ = ["jsonable"]

_MAX_DEPTH = 12


def jsonable(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return None
    if isinstance(value, re.Pattern):
        return value.pattern
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return jsonable(to_json(), depth + 1)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), depth + 1)
                for f in dataclasses.fields(value) if not isinstance(
                    getattr(value, f.name), bytes | bytearray | memoryview)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    return str(value)
