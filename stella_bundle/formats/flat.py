"""Reading flat result models back from their JSON: the small dataclasses whose fields are
strings, integers, booleans, lists of strings and counts (a chain report's chunks and findings,
a symbol summary...). Unknown and missing fields and wrong types are refused, naming the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ..canonical import MAX_SAFE_INTEGER
from ..errors import MalformedDocumentError


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SAFE_INTEGER


_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "str": lambda v: isinstance(v, str),
    "int": _count,
    "bool": lambda v: isinstance(v, bool),
    "object": lambda v: True,  # a nested part, read by its own reader
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "list[int]": lambda v: isinstance(v, list) and all(_count(i) for i in v),
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
    # A set is written as a sorted list.
    "set[str]": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
    "dict[str, int]": lambda v: isinstance(v, dict) and all(_count(i) for i in v.values()),
}


def read_flat(cls: type[Any], data: Any, source: str | Path | None, where: str) -> dict[str, Any]:
    """A flat dataclass's fields from an object: unknown or missing fields and wrong types are
    refused, naming the field."""
    if not isinstance(data, dict):
        raise MalformedDocumentError("expected an object", path=source, field=where)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(data.keys() - known.keys())
    if unknown:
        raise MalformedDocumentError("unknown field", path=source, field=f"{where}.{unknown[0]}")
    for name, spec in known.items():
        required = (
            spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        )
        if name not in data:
            if required:
                raise MalformedDocumentError(
                    "required field is missing", path=source, field=f"{where}.{name}"
                )
            continue
        kind, _, optional = str(spec.type).partition(" | ")
        value = data[name]
        if (value is None and optional == "None") or _CHECKS[kind](value):
            continue
        raise MalformedDocumentError(f"expected {spec.type}", path=source, field=f"{where}.{name}")
    return dict(data)


def read_list(data: Any, source: str | Path | None, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise MalformedDocumentError("expected a list", path=source, field=where)
    return data
