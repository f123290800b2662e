"""One definition of the observation record: every command and every fast path decides alike.

The record's nesting bound is `MAX_DETAILS_DEPTH` (formats/record.py), stated in the
published schema as its chain of `details_value_<n>` definitions. A record whose `details` nest
deeper (9 levels, 50 levels) is refused by `observations import`, `bundle build`, the bundle's
`schemas` step, `stella schema validate` and `observations query`, each naming the field; one
at the bound is accepted by all five. Hypothesis then draws `details` of every depth and
integers at and past RFC 8785's range and checks that the schema, `validate_record`, the
writer's fast encoder and the verifier's fast block decoder decide identically.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stella_bundle.canonical import MAX_SAFE_INTEGER
from stella_bundle.coverage.scan import ObservationAggregator
from stella_bundle.errors import MalformedDocumentError, SchemaValidationError
from stella_bundle.evidence.encoding import encode_record
from stella_bundle.formats.record import MAX_DETAILS_DEPTH, validate_record
from stella_bundle.schema import load_schema, validate_document
from tests.adversarial.chain_surgery import Predicate, Records, rewrite_chain
from tests.adversarial.test_adversarial_time import _build
from tests.bundle.bundle_helpers import (
    BundleInputs,
    make_inputs,
    read_members,
    resign_manifest,
    write_members,
)
from tests.conftest import CliResult, scaled_examples


def nested(levels: int, leaf: Any = 1) -> dict[str, Any]:
    """`details` holding `levels` levels of objects, itself included."""
    value: Any = leaf
    for _ in range(levels):
        value = {"k": value}
    return value  # type: ignore[no-any-return]


def test_the_schema_states_the_same_nesting_bound() -> None:
    defs = load_schema("observation-record")["$defs"]
    chain = sorted(int(name.rsplit("_", 1)[1]) for name in defs if name.startswith("details_"))
    # details itself, then details_value_<n> for n = MAX_DETAILS_DEPTH - 1 .. 0
    assert chain == list(range(MAX_DETAILS_DEPTH))
    assert load_schema("observation-record")["properties"]["details"]["additionalProperties"] == {
        "$ref": f"#/$defs/details_value_{MAX_DETAILS_DEPTH - 1}"
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> BundleInputs:
    return make_inputs(tmp_path_factory.mktemp("validator-inputs"), test_keys)


def _hostile_bundle(pristine: BundleInputs, chain: Path, tmp_path: Path, keys: Any) -> Path:
    """A valid bundle with the chain's files swapped in, manifest re-signed (an insider's
    archive: `bundle build` itself refuses such a chain)."""
    valid = tmp_path / "valid.stella.bundle.tgz"
    _build(pristine.directory, pristine, valid, keys)
    prefix = "evidence/host-a/"
    swapped = [
        (name, (chain / name[len(prefix) :]).read_bytes() if name.startswith(prefix) else data)
        for name, data in read_members(valid)
    ]
    return write_members(
        tmp_path / "hostile.stella.bundle.tgz", resign_manifest(swapped, keys.signer("builder"))
    )


@pytest.mark.parametrize("levels", [MAX_DETAILS_DEPTH, MAX_DETAILS_DEPTH + 1, 50])
def test_every_command_decides_nesting_alike(
    levels: int,
    pristine: BundleInputs,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    refused = levels > MAX_DETAILS_DEPTH
    expected = 2 if refused else 0

    def check(result: CliResult, what: str) -> None:
        assert result.exit_code == expected, (what, result.stdout + result.stderr)
        if refused:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and "details" in lines[0], (what, result.stderr)

    record = dict(pristine.records[0], details=nested(levels))
    observations = tmp_path / "obs.ndjson"
    observations.write_text(json.dumps(record) + "\n")
    check(
        run_cli(
            "observations", "import", observations, "--target", tmp_path / "imported",
            "--key", test_keys.private("collector"),
        ),
        "observations import",
    )  # fmt: skip
    check(run_cli("schema", "validate", observations), "schema validate")
    check(run_cli("observations", "query", "--observations", observations), "observations query")

    inputs = tmp_path / "inputs"
    shutil.copytree(pristine.directory, inputs)
    chain = inputs / "evidence" / "host-a"

    def inject(records: Records, seals: dict[int, Predicate]) -> None:
        records[2][3]["details"] = nested(levels)

    rewrite_chain(chain, test_keys.signer("collector"), records=inject)
    check(
        run_cli(
            "bundle", "build", "--function-map", inputs / pristine.function_map.name,
            "--evidence", inputs / "evidence", "--key", test_keys.private("builder"),
            "--output", tmp_path / "built.stella.bundle.tgz",
        ),
        "bundle build",
    )  # fmt: skip

    bundle = _hostile_bundle(pristine, chain, tmp_path, test_keys)
    out = tmp_path / "out"
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    if refused:
        # Refused as every other command refuses it: one line, exit 2, and no report (a
        # FAILED report is for well-formed content that fails a check).
        check(result, "bundle verify")
        assert "step 'schemas'" in result.stderr, result.stderr
        assert not (out / "verification-report.json").exists()
    else:
        report = json.loads((out / "verification-report.json").read_text())["predicate"]
        schemas = next(step for step in report["steps"] if step["name"] == "schemas")
        assert schemas["status"] == "passed", schemas


# --- the fast paths against the schema ----------------------------------------------------------

_LEAVES = st.one_of(
    st.text(max_size=3),
    st.booleans(),
    st.none(),
    st.sampled_from([0, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, 2**64]),
    st.integers(-(10**6), 10**6),
)


@st.composite
def _details(draw: st.DrawFn) -> dict[str, Any]:
    """An object nesting 1 to MAX_DETAILS_DEPTH + 3 levels, objects and arrays mixed."""
    levels = draw(st.integers(1, MAX_DETAILS_DEPTH + 3))
    value: Any = draw(_LEAVES)
    for _ in range(levels - 1):
        if draw(st.booleans()):
            value = {draw(st.sampled_from(["a", "b", "path"])): value, "n": draw(_LEAVES)}
        else:
            value = [value, draw(_LEAVES)]
    return {"inner": value} if not isinstance(value, dict) else value


def _refused(decide: Callable[[], Any]) -> bool:
    try:
        decide()
    except (MalformedDocumentError, SchemaValidationError):
        return True
    return False


@settings(max_examples=scaled_examples(150), deadline=None)
@given(details=_details())
def test_fast_paths_decide_details_like_the_schema(details: dict[str, Any]) -> None:
    record = {
        "node_hash": "sha256:" + "ab" * 32,
        "function_name": "SSL_write",
        "probe_type": "uprobe",
        "observed_at": "2026-01-23T00:00:00.000000Z",
        "details": details,
    }
    line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    def scan() -> None:
        ObservationAggregator().scan_stream(io.BytesIO(line * 3), "r.ndjson")

    by_schema = _refused(lambda: validate_document("observation-record", record, "r.ndjson"))
    decisions = {
        "schema": by_schema,
        "validate_record": _refused(lambda: validate_record(dict(record), "r.ndjson", 1)),
        "encode_record (writer fast path)": _refused(lambda: encode_record(dict(record))),
        "scan (verifier fast block decoder)": _refused(scan),
    }
    assert set(decisions.values()) == {by_schema}, decisions
