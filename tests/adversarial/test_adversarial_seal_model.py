"""One seal validation for every command: a seal the schema refuses fails everywhere.

Seals of a valid chain are re-signed by the real collector key with an unknown `loss`
counter, a negative one, or one past RFC 8785's integer range (2^53, 2^64; every integer of
the schemas is bounded by MAX_SAFE_INTEGER): `signals verify-chain` fails the chain
(`tampered_seal`, exit 1) and `bundle verify` fails its `schemas` step (exit 2), both naming
the seal file and the field.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.attest.dsse import parse_envelope, sign_payload
from stella_bundle.canonical import canonical_bytes
from stella_bundle.evidence.layout import seal_name
from tests.bundle.bundle_helpers import (
    BundleInputs,
    build_reproducible,
    make_inputs,
    read_members,
    resign_manifest,
    write_members,
)
from tests.conftest import CliResult


def _unknown_counter(loss: dict[str, Any]) -> None:
    loss["invented_counter"] = 1


def _negative_counter(loss: dict[str, Any]) -> None:
    counter = next(k for k, v in loss.items() if isinstance(v, int))
    loss[counter] = -1


def _past_the_bound(value: int) -> Callable[[dict[str, Any]], None]:
    def edit(loss: dict[str, Any]) -> None:
        loss["sampled_out"] = value

    return edit


CASES: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown-loss-counter": _unknown_counter,
    "negative-loss": _negative_counter,
    "loss-2^53": _past_the_bound(2**53),
    "loss-2^64": _past_the_bound(2**64),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> BundleInputs:
    return make_inputs(tmp_path_factory.mktemp("seal-inputs"), test_keys)


@pytest.mark.parametrize("case", sorted(CASES))
def test_schema_invalid_seal_fails_both_entry_points(
    case: str,
    pristine: BundleInputs,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:

    inputs = tmp_path / "inputs"
    shutil.copytree(pristine.directory, inputs)
    chain = inputs / "evidence" / "host-a"
    path = chain / seal_name(2)
    envelope = parse_envelope(json.loads(path.read_bytes()))
    statement = json.loads(envelope.payload)
    CASES[case](statement["predicate"]["loss"])
    # Plain JSON: RFC 8785 cannot carry 2^64, and DSSE signs whatever bytes it is given.
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    signed = sign_payload(payload, envelope.payload_type, [test_keys.signer("collector")])
    path.write_bytes(canonical_bytes(signed.to_dict()))

    chain_result = run_cli(
        "signals", "verify-chain", chain, "--trust-root", test_keys.trust_root, "--format", "json"
    )
    assert chain_result.exit_code == 1, chain_result.stderr
    findings = json.loads(chain_result.stdout)["chains"][0]["findings"]
    assert any(f["code"] == "tampered_seal" and "loss" in f["message"] for f in findings), findings

    # `bundle build` itself refuses such a seal, so the hostile bundle is a valid one with the
    # seal swapped in and the manifest re-signed by the builder (an insider's archive).
    valid = tmp_path / "valid.stella.bundle.tgz"
    build_reproducible(pristine.function_map, pristine.evidence, test_keys.signer("builder"), valid)
    member = f"evidence/host-a/{seal_name(2)}"
    swapped = [(n, path.read_bytes() if n == member else d) for n, d in read_members(valid)]
    bundle = write_members(
        tmp_path / "seal.stella.bundle.tgz",
        resign_manifest(swapped, test_keys.signer("builder")),
    )
    result = run_cli(
        "bundle",
        "verify",
        bundle,
        "--trust-root",
        test_keys.trust_root,
        "--output-dir",
        tmp_path / "out",
    )
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "step 'schemas'" in lines[0], result.stderr
    assert seal_name(2) in lines[0] and "loss" in lines[0], lines[0]
