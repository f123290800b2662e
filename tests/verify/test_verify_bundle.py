"""End to end: build → split → join → verify offline; the report is the map's own verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.bundle.build import build_bundle
from stella_bundle.coverage import VerifyOptions, verify_observations
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.formats.report import VerificationReport
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.functionmap.load import load_function_map
from stella_bundle.schema import validate_document
from stella_bundle.timeutil import parse_timestamp
from stella_bundle.verify import verify_bundle
from tests.bundle.bundle_helpers import (
    BundleInputs,
    chains_inputs,
    make_inputs,
    records_for,
    write_chain,
)


def _expected(inputs: BundleInputs, trust_root: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The function-map verifier run directly on the same records, over the same window."""
    loaded = load_function_map(inputs.function_map_envelope, trust_root)
    window = report["window"]
    options = VerifyOptions(parse_timestamp(window["from"]), parse_timestamp(window["to"]))
    return verify_observations(loaded, inputs.records, options).to_dict()


def test_build_split_join_verify(
    tmp_path: Path, built_bundle: Path, bundle_inputs: BundleInputs, test_keys: Any, run_cli: Any
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(built_bundle, media / built_bundle.name)
    assert run_cli("bundle", "split", media / built_bundle.name, "--part-size", "8K").exit_code == 0
    (media / built_bundle.name).unlink()
    airgap = tmp_path / "airgap"
    joined = airgap / built_bundle.name
    join = run_cli("bundle", "join", media / f"{built_bundle.name}.parts.json", "--output", joined)
    assert join.exit_code == 0, join.stderr
    assert joined.read_bytes() == built_bundle.read_bytes()

    out = airgap / "report"
    result = run_cli(
        "bundle", "verify", joined, "--trust-root", test_keys.trust_root,
        "--output-dir", out, "--report-key", test_keys.private("auditor"),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "PASSED" in result.stdout and "verification-report.html" in result.stdout
    statement = json.loads((out / "verification-report.json").read_text())
    validate_document("verification-report", statement)
    report = statement["predicate"]
    assert VerificationReport.from_dict(report).to_dict() == report  # the typed model, exactly
    assert report["verification_result"] == "PASSED" and report["verified"] is True
    assert [s["name"] for s in report["steps"]] == [
        "trust-root", "archive", "manifest-signature", "file-list", "schemas",
        "function-map-signature", "evidence-chains", "coverage",
    ]  # fmt: skip
    assert {s["status"] for s in report["steps"]} == {"passed"}
    assert statement["subject"][0]["digest"]["sha256"] == _sha256(joined)

    expected = _expected(bundle_inputs, test_keys.trust_root, report)
    for key in ("verified", "observation_rate", "target_rate", "per_path_breakdown", "per_tag",
                "unexpected_symbols", "missing_symbols"):  # fmt: skip
        assert report[key] == expected[key], key
    confidence = expected["confidence"]
    assert report["confidence"] == (
        confidence["overall"] if isinstance(confidence, dict) else confidence
    )
    assert report["observation_rate"] == 1.0

    chain = verify_chain(bundle_inputs.evidence / "host-a", test_keys.trust_root).to_dict()
    (summary,) = report["evidence"]
    assert chain["passed"] is True
    for key in ("chunks", "records", "events_lost", "loss", "first_sequence", "last_sequence",
                "first_observed_at", "last_observed_at"):  # fmt: skip
        assert summary[key] == chain[key], key
    assert summary["final_seal_present"] is chain["final_seal"] is True
    assert summary["gaps"] == [] and chain["gaps"] == 0
    assert summary["chunks"] == 5 and summary["records"] == 200

    roles = {a["role"] for a in report["input_attestations"]}
    assert roles == {"builder", "function-map", "collector"}
    assert all(
        s["fingerprint"].count(":") == 31
        for a in report["input_attestations"]
        for s in a["signers"]
    )

    # The auditor's DSSE verifies with the generic attestation verifier (compliance).
    check = run_cli(
        "attest", "verify", out / "verification-report.dsse.json", "--trust-root",
        test_keys.trust_root, "--role", "auditor", "--artifact", joined,
        "--predicate-type", "https://stella.ops/predicates/function-map-verification/v1",
    )  # fmt: skip
    assert check.exit_code == 0, check.stderr
    wrong = run_cli(
        "attest", "verify", out / "verification-report.dsse.json", "--trust-root",
        test_keys.trust_root, "--role", "builder",
    )  # fmt: skip
    assert wrong.exit_code == 1


def test_compliance_sign_of_a_report(
    tmp_path: Path, built_bundle: Path, test_keys: Any, run_cli: Any
) -> None:
    out = tmp_path / "r"
    assert run_cli("bundle", "verify", built_bundle, "--trust-root", test_keys.trust_root,
                   "--output-dir", out).exit_code == 0  # fmt: skip
    signed = tmp_path / "compliance.dsse.json"
    sign = run_cli(
        "attest", "sign", "--input", out / "verification-report.json", "--statement",
        "--key", test_keys.private("auditor"), "--output", signed,
    )  # fmt: skip
    assert sign.exit_code == 0, sign.stderr
    check = run_cli("attest", "verify", signed, "--trust-root", test_keys.trust_root,
                    "--role", "auditor", "--artifact", built_bundle)  # fmt: skip
    assert check.exit_code == 0, check.stderr


def test_report_key_must_be_an_auditor_key(
    tmp_path: Path, built_bundle: Path, test_keys: Any, run_cli: Any
) -> None:
    result = run_cli("bundle", "verify", built_bundle, "--trust-root", test_keys.trust_root,
                     "--output-dir", tmp_path / "o", "--report-key", test_keys.private("builder"))  # fmt: skip
    assert result.exit_code == 2 and "not an auditor key" in result.stderr
    assert not (tmp_path / "o").exists()


def test_coverage_not_met_fails_with_the_map_verdict(
    tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    inputs = make_inputs(tmp_path / "in", test_keys)
    shutil.rmtree(inputs.evidence)
    write_chain(inputs.evidence, "host-b", test_keys.signer("collector"),
                records_for(inputs.nodes[:1], 30))  # fmt: skip
    bundle = build_bundle(function_maps=[inputs.function_map], evidence=[inputs.evidence],
                          signer=test_keys.signer("builder"),
                          output=tmp_path / "low.stella.bundle.tgz").output  # fmt: skip
    result = run_cli("bundle", "verify", bundle, "--trust-root", test_keys.trust_root,
                     "--output-dir", tmp_path / "r", "--format", "json")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "step 'coverage'" in result.stderr
    report = json.loads(result.stdout)
    validate_document("verification-report", report)
    assert VerificationReport.from_dict(report).to_dict() == report
    assert report["verification_result"] == "FAILED"
    assert report["steps"][-1]["error_type"] == "CoverageNotMetError"
    assert 0 < report["observation_rate"] < report["target_rate"]
    assert len(report["missing_symbols"]) == len(inputs.nodes) - 1


def test_verify_opens_no_socket(built_bundle: Path, test_keys: Any, no_network: list[str]) -> None:
    outcome = verify_bundle(built_bundle, TrustRoot.load(test_keys.trust_root))
    assert outcome.passed and outcome.exit_code == 0
    assert no_network == []


@pytest.mark.netns
def test_verify_in_a_network_namespace_without_interfaces(
    tmp_path: Path, built_bundle: Path, test_keys: Any, netns_cli: Any
) -> None:
    out = tmp_path / "netns-report"
    result = netns_cli("bundle", "verify", built_bundle, "--trust-root", test_keys.trust_root,
                       "--output-dir", out, "--report-key", test_keys.private("auditor"))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (out / "verification-report.dsse.json").exists()


def test_inspect_is_marked_not_verified(built_bundle: Path, run_cli: Any) -> None:
    table = run_cli("bundle", "inspect", built_bundle)
    assert table.exit_code == 0 and "NOT VERIFIED" in table.stdout and "host-a" in table.stdout
    as_json = json.loads(run_cli("bundle", "inspect", built_bundle, "--format", "json").stdout)
    assert as_json["verified"] is False and as_json["services"] == ["demo"]
    assert as_json["chains"][0]["chunks"] == 5


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_build_is_reproducible_and_verify_prints_html(
    tmp_path: Path,
    bundle_inputs: BundleInputs,
    built_bundle: Path,
    test_keys: Any,
    run_cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.bundle.bundle_helpers import SOURCE_DATE_EPOCH

    monkeypatch.setenv("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
    output = tmp_path / built_bundle.name
    built = run_cli("bundle", "build", "--function-map", bundle_inputs.function_map,
                    "--evidence", bundle_inputs.evidence, "--key", test_keys.private("builder"),
                    "--output", output)  # fmt: skip
    assert built.exit_code == 0, built.stderr
    assert "200 records" in built.stdout
    assert output.read_bytes() == built_bundle.read_bytes()
    page = run_cli("bundle", "verify", output, "--trust-root", test_keys.trust_root,
                   "--output-dir", tmp_path / "r", "--format", "html")  # fmt: skip
    assert page.exit_code == 0 and page.stdout.startswith("<!DOCTYPE html>")
    bad = run_cli("bundle", "build", "--function-map", bundle_inputs.function_map,
                  "--evidence", bundle_inputs.evidence, "--key", test_keys.private("builder"),
                  "--output", tmp_path / "wrong-suffix.tgz")  # fmt: skip
    assert bad.exit_code == 2 and ".stella.bundle.tgz" in bad.stderr


@pytest.fixture(scope="module")
def sized_bundles(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> list[Path]:
    """Bundles of 24,000 and 96,000 records, built once for both ways of verifying them."""
    tmp_path = tmp_path_factory.mktemp("sized")
    bundles = []
    for count in (24_000, 96_000):
        inputs = chains_inputs(tmp_path / f"in-{count}", test_keys, {"host-m": 4_000}, count)
        built = build_bundle(function_maps=[inputs.function_map], evidence=[inputs.evidence],
                             signer=test_keys.signer("builder"),
                             output=tmp_path / f"m{count}.stella.bundle.tgz")  # fmt: skip
        bundles.append(built.output)
    return bundles


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [False, True], ids=["inline", "workers"])
def test_verify_memory_does_not_grow_with_the_bundle(
    sized_bundles: list[Path], test_keys: Any, parallel: bool
) -> None:
    """Peak traced memory of a verification is the same for 24,000 and 96,000 records
    (past the size where the 1 MiB read blocks and the gzip buffers are in full use), with
    the chunks and the view's blocks scanned here or in worker processes (the bytes handed to
    them are bounded: `chunkwork.IN_FLIGHT_MAX`)."""
    import tracemalloc

    from stella_bundle.verify import VerifyLimits
    from stella_bundle.verify.chunkwork import WorkLimits

    work = WorkLimits(parallel_min_bytes=0, workers=2) if parallel else WorkLimits(workers=1)
    peaks = []
    for bundle in sized_bundles:
        tracemalloc.start()
        try:
            outcome = verify_bundle(
                bundle, TrustRoot.load(test_keys.trust_root), limits=VerifyLimits(work=work)
            )
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert outcome.passed, outcome.failure_line()
    small, large = peaks
    print(f"verify peak traced memory: {small >> 10} KiB and {large >> 10} KiB")
    # 4x the records; the inflate-ahead queue makes the peak wobble by a few MiB, not 4x.
    assert large < small * 1.5, peaks
    assert large < 32 << 20, peaks
