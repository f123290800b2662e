"""Direct regression tests of what the fuzz targets found (each also kept as an @example there)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.attest.statement import STATEMENT_TYPE, validate_statement
from stella_bundle.bundle.inspect import inspect_bundle
from stella_bundle.bundle.tarwriter import ReproducibleTarWriter
from stella_bundle.digests import HashingReader
from stella_bundle.errors import MalformedDocumentError, StatementError
from stella_bundle.formats.record import validate_record
from stella_bundle.jsonio import parse_json_line
from stella_bundle.verify.chunkwork import ChunkWork, WorkLimits
from stella_bundle.verify.records import ChunkLimits, RecordPass
from stella_bundle.verify.steps import new_outcomes

STATEMENT: dict[str, Any] = {
    "_type": STATEMENT_TYPE,
    "subject": [{"name": "a", "digest": {"sha256": "0" * 64}}],
    "predicateType": "https://example.com/p",
    "predicate": {},
}


@pytest.mark.parametrize(
    "statement",
    [
        {**STATEMENT, "\ud800": 1},  # protobuf's parser raised SystemError
        {**STATEMENT, "subject": [{"name": "a", "digest": {"sha256": "0" * 64}, "\udfff": 1}]},
        {**STATEMENT, "predicate": {"k": "\ud800"}},
    ],
)
def test_statement_with_a_lone_surrogate_is_a_statement_error(statement: dict[str, Any]) -> None:
    with pytest.raises(StatementError, match="not valid Unicode"):
        validate_statement(statement)


def test_statement_with_a_number_past_a_double_is_a_statement_error() -> None:
    """The predicate is checked as a protobuf Struct, whose numbers are doubles: OverflowError."""
    with pytest.raises(StatementError, match="too large"):
        validate_statement({**STATEMENT, "predicate": {"n": 10**400}})


def test_statement_error_is_one_line() -> None:
    """protobuf lists the available fields over several lines; the error stays on one."""
    with pytest.raises(StatementError) as caught:
        validate_statement({**STATEMENT, "payload": 1})
    assert "\n" not in caught.value.describe()


@pytest.mark.parametrize("workers", [1, 2], ids=["inline", "workers"])
def test_observations_view_with_non_utf8_bytes_is_judged_not_crashed(workers: int) -> None:
    """A view line whose observed_at holds bytes that are not UTF-8 raised UnicodeDecodeError."""
    steps = new_outcomes()
    tally = RecordPass(steps, ChunkLimits())
    line = b'{"node_hash":"x","observed_at":"2026-\xbd-01"}\n{"observed_at":"2025"}\n'
    work = ChunkWork(len(line), WorkLimits(workers=workers, parallel_min_bytes=0))
    try:
        tally.view("observations/x-observations.ndjson", HashingReader(io.BytesIO(line)), work)
        work.drain()
    finally:
        work.close()
    assert steps["evidence-chains"].status == "failed"  # not in observed_at order


@pytest.mark.parametrize(
    "line",
    [b'\xef\xbb\xbf{"a":1}', '{"a":1}'.encode("utf-16-le"), '{"a":1}'.encode("utf-32")],
)
def test_ndjson_line_is_utf8_only(line: bytes) -> None:
    """`observations import` read past a BOM (and read UTF-16/32) where `function-map verify`
    refused the same file: one reading of a line, UTF-8 only."""
    with pytest.raises(MalformedDocumentError, match="malformed NDJSON"):
        parse_json_line(line, "x.ndjson", 1)


@pytest.mark.parametrize(
    "predicate", [5, [], "x", {"services": "svc"}, {"services": [1, None, "a"]}]
)
def test_bundle_inspect_takes_any_manifest_json(
    tmp_path: Path, predicate: Any, run_cli: Callable[..., Any]
) -> None:
    """`bundle inspect` reads an unverified manifest: a predicate that is not an object crashed
    it (AttributeError), services that are not strings crashed its table (TypeError)."""
    bundle = tmp_path / "x.stella.bundle.tgz"
    manifest = json.dumps({"predicate": predicate}).encode()
    with open(bundle, "wb") as out, ReproducibleTarWriter(out, 0) as writer:
        writer.add_bytes("manifest.json", manifest)
    summary = inspect_bundle(bundle)
    assert all(isinstance(s, str) for s in summary["services"])
    for output_format in ("table", "json"):
        assert run_cli("bundle", "inspect", bundle, "--format", output_format).exit_code == 0


def test_error_naming_a_field_with_a_newline_is_one_line() -> None:
    """The unknown key of a record is named as the field: a newline in it split the error."""
    record = {
        "node_hash": "sha256:" + "0" * 64,
        "function_name": "f",
        "probe_type": "uprobe",
        "observed_at": "2026-01-23T00:00:00Z",
        "a\nb": 1,
    }
    with pytest.raises(MalformedDocumentError) as caught:
        validate_record(record, "x.ndjson", 1)
    assert caught.value.describe().startswith("x.ndjson:1: field 'a\\nb': unknown field")
    assert "\n" not in caught.value.describe()
