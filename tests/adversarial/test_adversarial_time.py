"""Time rules of the chain verifier: each broken rule is its own finding and fails the verdict.

Hostile chains are made here from a valid chain written by the project's own writer: seals
re-signed by the real collector key with an inverted window, a window after `sealed_at`, a
`sealed_at` going backwards, evidence dated 2099. `signals verify-chain` and `bundle verify`
both give exit 1 naming the same finding, the bundle's FAILED report written in its output
directory and nothing elsewhere.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.attest.dsse import parse_envelope, sign_payload
from stella_bundle.canonical import canonical_bytes
from stella_bundle.evidence.layout import seal_name
from stella_bundle.evidence.timecheck import (
    CLOCK_SKEW,
    EVIDENCE_FROM_FUTURE,
    OBSERVED_AFTER_SEAL,
    SEAL_TIME_REGRESSED,
    WINDOW_INVERTED,
)
from stella_bundle.timeutil import format_timestamp, parse_timestamp
from tests.bundle.bundle_helpers import SOURCE_DATE_EPOCH, BundleInputs, make_inputs, snapshot
from tests.conftest import CliResult

Predicate = dict[str, Any]
Edit = Callable[[dict[int, Predicate]], None]


def _shift(value: str, delta: dt.timedelta) -> str:
    return format_timestamp(parse_timestamp(value) + delta)


def window_swapped(seals: dict[int, Predicate]) -> None:
    window = seals[2]["window"]
    window["first_observed_at"], window["last_observed_at"] = (
        window["last_observed_at"],
        window["first_observed_at"],
    )


def sealed_before_its_records(seals: dict[int, Predicate]) -> None:
    seals[1]["sealed_at"] = _shift(seals[1]["window"]["first_observed_at"], -dt.timedelta(hours=1))


def last_observed_past_the_skew(seals: dict[int, Predicate]) -> None:
    seal = seals[3]
    seal["window"]["last_observed_at"] = _shift(seal["sealed_at"], CLOCK_SKEW * 2)
    seal["sealed_at"] = _shift(seal["sealed_at"], -dt.timedelta(minutes=1))


def sealed_at_goes_backwards(seals: dict[int, Predicate]) -> None:
    seals[3]["sealed_at"] = _shift(seals[2]["sealed_at"], -dt.timedelta(seconds=1))


def records_dated_2099_sealed_now(seals: dict[int, Predicate]) -> None:
    last = max(seals)
    seals[last]["window"]["last_observed_at"] = "2099-01-01T00:00:00.000000Z"


def everything_dated_2099(seals: dict[int, Predicate]) -> None:
    last = max(seals)
    seals[last]["window"]["last_observed_at"] = "2099-01-01T00:00:00.000000Z"
    seals[last]["sealed_at"] = "2099-01-01T00:00:01.000000Z"


CASES: dict[str, tuple[Edit, str]] = {
    "window-inverted": (window_swapped, WINDOW_INVERTED),
    "sealed-before-its-records": (sealed_before_its_records, OBSERVED_AFTER_SEAL),
    "last-observed-past-the-skew": (last_observed_past_the_skew, OBSERVED_AFTER_SEAL),
    "sealed-at-goes-backwards": (sealed_at_goes_backwards, SEAL_TIME_REGRESSED),
    "records-2099-sealed-now": (records_dated_2099_sealed_now, EVIDENCE_FROM_FUTURE),
    "everything-2099": (everything_dated_2099, EVIDENCE_FROM_FUTURE),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> BundleInputs:
    return make_inputs(tmp_path_factory.mktemp("time-inputs"), test_keys)


def _rewrite_seals(chain: Path, edit: Edit, signer: Any) -> None:
    """Apply `edit` to the seal predicates and re-sign every changed seal with `signer`."""
    envelopes = {}
    statements: dict[int, dict[str, Any]] = {}
    sequence = 1
    while (chain / seal_name(sequence)).exists():
        envelopes[sequence] = parse_envelope(json.loads((chain / seal_name(sequence)).read_bytes()))
        statements[sequence] = json.loads(envelopes[sequence].payload)
        sequence += 1
    before = json.dumps(statements, sort_keys=True)
    edit({seq: statement["predicate"] for seq, statement in statements.items()})
    assert json.dumps(statements, sort_keys=True) != before, "the edit must change a seal"
    for seq, statement in statements.items():
        payload = canonical_bytes(statement)
        if payload != envelopes[seq].payload:
            signed = sign_payload(payload, envelopes[seq].payload_type, [signer])
            (chain / seal_name(seq)).write_bytes(canonical_bytes(signed.to_dict()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_time_rule_fails_both_entry_points(
    case: str,
    pristine: BundleInputs,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    from stella_bundle.bundle.build import build_bundle

    edit, code = CASES[case]
    inputs = tmp_path / "inputs"
    shutil.copytree(pristine.directory, inputs)
    chain = inputs / "evidence" / "host-a"
    _rewrite_seals(chain, edit, test_keys.signer("collector"))

    chain_result = run_cli(
        "signals", "verify-chain", chain, "--trust-root", test_keys.trust_root, "--format", "json"
    )
    assert chain_result.exit_code == 1, chain_result.stderr
    findings = json.loads(chain_result.stdout)["chains"][0]["findings"]
    assert code in {f["code"] for f in findings}, findings

    bundle = tmp_path / "time.stella.bundle.tgz"
    previous = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = SOURCE_DATE_EPOCH
    try:
        build_bundle(
            function_maps=[inputs / pristine.function_map.name],
            evidence=[inputs / "evidence"],
            signer=test_keys.signer("builder"),
            output=bundle,
        )
    finally:
        if previous is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous
    out = tmp_path / "work" / "out"
    before = snapshot(tmp_path)
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    created = {p for p in snapshot(tmp_path) - before if not p.startswith("work")}
    assert not created, f"written outside the output directory: {created}"
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "step 'evidence-chains'" in lines[0], result.stderr
    # The first time rule broken is named; the case's own rule is among the report's.
    report = json.loads((out / "verification-report.json").read_text())["predicate"]
    assert report["verification_result"] == "FAILED"
    assert code in json.dumps(report), report["steps"]


def test_pristine_chain_passes_the_time_rules(
    pristine: BundleInputs, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    result = run_cli(
        "signals",
        "verify-chain",
        pristine.evidence / "host-a",
        "--trust-root",
        test_keys.trust_root,
    )
    assert result.exit_code == 0, result.stdout + result.stderr
