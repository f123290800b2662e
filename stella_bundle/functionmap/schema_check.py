"""Checking a function-map predicate against its shipped JSON Schema (draft 2020-12)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..schema import validate_document

SCHEMA_NAME = "function-map"


def check_function_map_predicate(predicate: Mapping[str, Any], source: str | Path | None) -> None:
    """Raise SchemaValidationError naming the file and the first offending field."""
    validate_document(SCHEMA_NAME, dict(predicate), source)
