"""Tokens Python's `json` takes that are not JSON: NaN, Infinity, numbers past a double, text in
UTF-16/32.

`json.loads` reads `NaN` and `Infinity` as floats and `1e400` as infinity; jsonschema's bounds
compare false against NaN, so `schema validate` passed a function map whose
`min_observation_rate` was NaN while the model (`bundle verify`, `function-map verify`) refused
it: two commands disagreeing about one file. orjson (the fast readers) and RFC 8785 (the
signed form) refuse them all. The one JSON parse of outside documents (`jsonio`) now refuses
them, naming the file, so every command decides alike; a UTF-8 byte order mark is still
skipped (Windows tools write one before SBOMs), UTF-16 and UTF-32 are refused as for NDJSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.errors import MalformedDocumentError
from stella_bundle.jsonio import parse_json, parse_json_line

NOT_JSON = {
    "NaN": b'{"rate": NaN}',
    "Infinity": b'{"rate": Infinity}',
    "-Infinity": b'{"rate": -Infinity}',
    "past a double": b'{"rate": 1e400}',
    "negative past a double": b'{"rate": -1e400}',
    "nested NaN": b'{"a": [1, {"b": NaN}]}',
}


@pytest.mark.parametrize("name", sorted(NOT_JSON))
def test_parse_json_refuses_what_is_not_json(name: str) -> None:
    with pytest.raises(MalformedDocumentError) as caught:
        parse_json(NOT_JSON[name], "doc.json")
    message = str(caught.value)
    assert message.startswith("doc.json: ")
    assert "not a JSON number" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(NOT_JSON))
def test_parse_json_line_refuses_what_is_not_json(name: str) -> None:
    with pytest.raises(MalformedDocumentError) as caught:
        parse_json_line(NOT_JSON[name], "records.ndjson", 7)
    assert str(caught.value).startswith("records.ndjson:7: ")


def test_numbers_that_are_json_still_parse() -> None:
    assert parse_json(b'{"a": 1e308, "b": -0.0, "c": -0, "d": 0.5, "e": 12}', "d") == {
        "a": 1e308,
        "b": -0.0,
        "c": 0,
        "d": 0.5,
        "e": 12,
    }


def test_utf16_and_utf32_are_refused_and_a_utf8_bom_is_skipped() -> None:
    text = '{"a": "é"}'
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        with pytest.raises(MalformedDocumentError, match="not UTF-8"):
            parse_json(text.encode(encoding), "doc.json")
    assert parse_json(b"\xef\xbb\xbf" + text.encode(), "doc.json") == {"a": "é"}
    assert parse_json(text, "doc.json") == {"a": "é"}


def test_schema_validate_refuses_a_nan_rate_as_the_model_does(tmp_path: Path, run_cli: Any) -> None:
    # A function map whose min_observation_rate is NaN: before, `schema validate` said valid
    # (jsonschema's `maximum: 1` compares false against NaN) while the model refused it.
    example = Path(__file__).parents[2] / "fixtures/schemas/examples/function-map.json"
    predicate = json.loads(example.read_text())
    predicate["coverage"]["min_observation_rate"] = 0.5
    text = json.dumps(predicate).replace(
        '"min_observation_rate": 0.5', '"min_observation_rate": NaN'
    )
    path = tmp_path / "fm.json"
    path.write_text(text)
    result = run_cli("schema", "validate", "--kind", "function-map", str(path))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "not a JSON number" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # The same document with a number: valid.
    path.write_text(json.dumps(predicate))
    assert run_cli("schema", "validate", "--kind", "function-map", str(path)).exit_code == 0
