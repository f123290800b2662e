"""Hostile nesting and the review fixes around it: a clear exit-2 error, never a RecursionError."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from stella_bundle.canonical import canonical_bytes
from stella_bundle.errors import InputError, MalformedDocumentError
from stella_bundle.jsonio import parse_json


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_canonical_fast_path_falls_back_on_deep_nesting() -> None:
    # deep enough for the fast path to decline, shallow enough for the reference
    value = json.loads("[" * 900 + "]" * 900)
    assert canonical_bytes(value) == rfc8785.dumps(value)


def test_canonical_refuses_hostile_nesting_clearly() -> None:
    with pytest.raises(InputError, match="nested too deeply"):
        canonical_bytes(nested_lists(5000))


def test_parse_json_refuses_hostile_nesting() -> None:
    with pytest.raises(MalformedDocumentError, match="nested too deeply"):
        parse_json(b"[" * 5000 + b"]" * 5000, "deep.json")


@pytest.mark.parametrize("name", ["deep.json", "deep.ndjson"])
def test_cli_reports_hostile_nesting(
    run_cli: Callable[..., Any], tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    path.write_bytes(b"[" * 5000 + b"]" * 5000 + b"\n")
    result = run_cli("schema", "validate", path)
    assert result.exit_code == 2
    assert "nested too deeply" in result.stderr and str(path) in result.stderr
    assert "internal error" not in result.stderr
