"""`stella schema validate|list|show` on real files, and kind detection."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from schema_examples import EXAMPLES, load_example

from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, STATEMENT_TYPE
from stella_bundle.canonical import canonical_bytes
from stella_bundle.errors import MalformedDocumentError
from stella_bundle.schema import KINDS, detect_kind

EXAMPLE_FILES = sorted(EXAMPLES.iterdir())


def _records(count: int) -> list[dict[str, Any]]:
    base = load_example("observation-record")
    return [{**base, "pid": 1000 + n} for n in range(count)]


def _write_ndjson(path: Path, records: list[Any]) -> Path:
    path.write_bytes(b"".join(canonical_bytes(r) + b"\n" for r in records))
    return path


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_validate_every_example_file(run_cli: Callable[..., Any], path: Path) -> None:
    result = run_cli("schema", "validate", path)
    assert result.exit_code == 0, result.stderr
    assert "valid" in result.stdout and result.stderr == ""


def test_ndjson_bad_line_3_is_named(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    records: list[Any] = _records(5)
    records[2]["probe_type"] = "ebpf-magic"
    path = _write_ndjson(tmp_path / "obs.ndjson", records)
    result = run_cli("schema", "validate", path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {path}:3: field 'probe_type':")
    assert "expected one of" in lines[0] and "ebpf-magic" in lines[0]


def test_ndjson_malformed_line_is_named(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    path = _write_ndjson(tmp_path / "obs.ndjson", _records(4))
    with path.open("ab") as handle:
        handle.write(b'{"node_hash": \n')
    result = run_cli("schema", "validate", path)
    assert result.exit_code == 2
    assert f"{path}:5:" in result.stderr and "malformed NDJSON" in result.stderr


def test_ndjson_zst_line_by_line(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    records: list[Any] = _records(1000)
    plain = _write_ndjson(tmp_path / "plain.ndjson", records)
    packed = tmp_path / "0000000001.ndjson.zst"
    packed.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    result = run_cli("schema", "validate", packed, "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {
        "valid": True,
        "path": str(packed),
        "kind": "observation-record",
        "container": "ndjson",
        "documents": 1000,
        "predicate_type": None,
    }
    records[998]["count"] = 2.5
    packed.write_bytes(
        zstandard.ZstdCompressor().compress(
            b"".join(json.dumps(r).encode() + b"\n" for r in records)
        )
    )
    result = run_cli("schema", "validate", packed)
    assert result.exit_code == 2
    assert f"{packed}:999: field 'count'" in result.stderr and "floating-point" in result.stderr


def test_invalid_document_json_output(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    seal = load_example("evidence-chunk")
    seal["reason"] = "prune"
    path = tmp_path / "seal.json"
    path.write_text(json.dumps(seal))
    result = run_cli("schema", "validate", path, "--format", "json")
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["field"] == "reason"
    assert report["error"] == "SchemaValidationError"
    assert result.stderr.count("\n") == 1 and "field 'reason'" in result.stderr


def test_statement_checked_by_predicate_type(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    statement = load_example("statement")
    statement["predicate"]["expected_paths"][0]["nodes"][0]["probe_types"] = ["magic"]
    path = tmp_path / "function-map.json"
    path.write_text(json.dumps(statement))
    result = run_cli("schema", "validate", path)
    assert result.exit_code == 2
    assert "field 'predicate.expected_paths[0].nodes[0].probe_types[0]'" in result.stderr
    result = run_cli("schema", "validate", EXAMPLES / "statement.json", "--kind", "evidence-chunk")
    assert result.exit_code == 2 and "predicateType" in result.stderr


def test_envelope_payload_is_checked(run_cli: Callable[..., Any]) -> None:
    result = run_cli("schema", "validate", EXAMPLES / "dsse-envelope.json", "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "function-map" and report["container"] == "dsse-envelope"
    assert report["predicate_type"] == FUNCTION_MAP_PREDICATE
    shape_only = run_cli(
        "schema", "validate", EXAMPLES / "dsse-envelope.json", "--kind", "dsse-envelope"
    )
    assert shape_only.exit_code == 0, shape_only.stderr


def test_explicit_kind_overrides_detection(run_cli: Callable[..., Any]) -> None:
    result = run_cli(
        "schema", "validate", EXAMPLES / "evidence-chunk.json", "--kind", "function-map"
    )
    assert result.exit_code == 2
    assert "field 'service': not a valid function-map: required field is missing" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"hello": "world"}', "cannot tell which kind"),
        (b"[1, 2]", "cannot tell which kind"),
    ],
)
def test_bad_files(
    run_cli: Callable[..., Any], tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "doc.json"
    path.write_bytes(content)
    result = run_cli("schema", "validate", path)
    assert result.exit_code == 2
    assert message in result.stderr and str(path) in result.stderr


def test_missing_file_and_unknown_kind(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    result = run_cli("schema", "validate", tmp_path / "absent.json")
    assert result.exit_code == 2 and "not found" in result.stderr
    result = run_cli("schema", "validate", EXAMPLES / "trust-root.json", "--kind", "nope")
    assert result.exit_code == 2 and "unknown schema kind 'nope'" in result.stderr


def test_list_and_show(run_cli: Callable[..., Any]) -> None:
    listed = run_cli("schema", "list", "--format", "json")
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)["schemas"]
    assert [row["kind"] for row in rows] == list(KINDS)
    assert all(row["id"] == f"https://stella.ops/schemas/{row['kind']}.schema.json" for row in rows)
    table = run_cli("schema", "list")
    assert table.exit_code == 0 and "observation-record" in table.stdout
    shown = run_cli("schema", "show", "observation-record")
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["$id"].endswith("/observation-record.schema.json")
    assert run_cli("schema", "show", "nope").exit_code == 2


# --- detect_kind -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example_kind", "detected"),
    [
        ("function-map", "function-map"),
        ("observation-record", "observation-record"),
        ("evidence-chunk", "evidence-chunk"),
        ("evidence-prune", "evidence-prune"),
        ("bundle-manifest", "bundle-manifest"),
        ("verification-report", "verification-report"),
        ("trust-root", "trust-root"),
        ("statement", "function-map"),  # a statement is known by its predicateType
        ("dsse-envelope", "dsse-envelope"),
    ],
)
def test_detect_kind_of_examples(example_kind: str, detected: str) -> None:
    assert detect_kind(load_example(example_kind)) == detected


def test_detect_kind_of_foreign_and_unknown_documents() -> None:
    foreign = {
        "_type": STATEMENT_TYPE,
        "subject": [],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {},
    }
    assert detect_kind(foreign) == "statement"
    record_without_probe_type = {"node_hash": "sha256:" + "0" * 64, "function_name": "f"}
    assert detect_kind(record_without_probe_type) == "observation-record"
    for unknown in ({}, {"files": "x"}, [], "text", 3):
        with pytest.raises(MalformedDocumentError, match="cannot tell"):
            detect_kind(unknown)
