"""`stella attest sign` → `stella attest verify` round trips, and every way verification says no."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from stella_bundle.attest.dsse import sign_payload
from stella_bundle.attest.keys import load_signer
from stella_bundle.attest.signing import write_envelope
from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement, subject_for_bytes
from tests import conftest as shared
from tests.conftest import CliResult

Run = Callable[..., CliResult]


@dataclass
class Workspace:
    directory: Path
    document: Path
    trust_root: Path

    def path(self, name: str) -> Path:
        return self.directory / name


def make_workspace(run_cli: Run, directory: Path, key_type: str) -> Workspace:
    """A key of `key_type` trusted for function-map, and a document to sign."""
    generated = run_cli("keys", "generate", "--type", key_type, "--out", directory / "signer")
    assert generated.exit_code == 0, generated.stderr
    root = directory / "trust-root.json"
    assert run_cli("trust-root", "init", "--output", root).exit_code == 0
    added = run_cli(
        "trust-root",
        "add-key",
        root,
        "--key",
        directory / "signer.pub.json",
        "--role",
        "function-map",
    )
    assert added.exit_code == 0, added.stderr
    document = directory / "function-map-body.json"
    document.write_text(json.dumps({"service": "checkout", "expected_paths": [], "count": 3}))
    return Workspace(directory, document, root)


def sign(run_cli: Run, ws: Workspace, *keys: Path, output: str = "doc.dsse.json") -> Path:
    key_args: list[str | Path] = []
    for key in keys:
        key_args += ["--key", key]
    result = run_cli(
        "attest",
        "sign",
        "--input",
        ws.document,
        "--predicate-type",
        FUNCTION_MAP_PREDICATE,
        *key_args,
        "--output",
        ws.path(output),
    )
    assert result.exit_code == 0, result.stderr
    return ws.path(output)


def verify(run_cli: Run, ws: Workspace, envelope: Path, *extra: str | Path) -> CliResult:
    return run_cli(
        "attest",
        "verify",
        envelope,
        "--trust-root",
        ws.trust_root,
        "--role",
        "function-map",
        "--artifact",
        ws.document,
        *extra,
    )


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256"])
def test_round_trip(key_type: str, run_cli: Run, no_network: list[str], tmp_path: Path) -> None:
    ws = make_workspace(run_cli, tmp_path, key_type)
    envelope = sign(run_cli, ws, ws.path("signer.key"))
    result = verify(run_cli, ws, envelope)
    assert result.exit_code == 0, result.stderr
    assert "VERIFIED" in result.stdout
    summary = json.loads(verify(run_cli, ws, envelope, "--format", "json").stdout)
    keyid = json.loads(ws.path("signer.pub.json").read_text())["keyid"]
    assert summary["verified"] is True
    assert summary["predicate_type"] == FUNCTION_MAP_PREDICATE
    assert [s["keyid"] for s in summary["signers"]] == [keyid]
    assert summary["signers"][0]["roles"] == ["function-map"]
    # The integers of the predicate stay integers (no protobuf float conversion).
    payload = json.loads(base64.b64decode(json.loads(envelope.read_text())["payload"]))
    assert payload["predicate"]["count"] == 3


def test_ready_statement_and_digest(run_cli: Run, no_network: list[str], tmp_path: Path) -> None:
    ws = make_workspace(run_cli, tmp_path, "ed25519")
    data = b"the SBOM bytes"
    statement = make_statement(
        [subject_for_bytes("sbom.json", data)], FUNCTION_MAP_PREDICATE, {"service": "x"}
    )
    ws.path("statement.json").write_text(json.dumps(statement))
    signed = run_cli(
        "attest",
        "sign",
        "--input",
        ws.path("statement.json"),
        "--statement",
        "--key",
        ws.path("signer.key"),
        "--output",
        ws.path("st.dsse.json"),
    )
    assert signed.exit_code == 0, signed.stderr
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    result = run_cli(
        "attest",
        "verify",
        ws.path("st.dsse.json"),
        "--trust-root",
        ws.trust_root,
        "--role",
        "function-map",
        "--digest",
        digest,
        "--predicate-type",
        FUNCTION_MAP_PREDICATE,
    )
    assert result.exit_code == 0, result.stderr


# --- each failure: its own exit code and its own message -------------------------------------


@pytest.fixture
def failures(run_cli: Run, tmp_path: Path, test_keys: shared.TestKeys) -> dict[str, CliResult]:
    """Run every failing verification once; the tests below read their outcomes."""
    ws = make_workspace(run_cli, tmp_path, "ed25519")
    good = sign(run_cli, ws, ws.path("signer.key"))
    outcomes: dict[str, CliResult] = {}

    stranger = sign(run_cli, ws, test_keys.private("stranger"), output="stranger.dsse.json")
    outcomes["wrong key"] = verify(run_cli, ws, stranger)

    # A trusted key, but trusted for another role.
    added = run_cli(
        "trust-root",
        "add-key",
        ws.trust_root,
        "--key",
        test_keys.public("collector"),
        "--role",
        "collector",
    )
    assert added.exit_code == 0, added.stderr
    collector = sign(run_cli, ws, test_keys.private("collector"), output="collector.dsse.json")
    outcomes["wrong role"] = verify(run_cli, ws, collector)

    # Threshold 2 for function-map: one signature is not enough, two are.
    second = run_cli(
        "trust-root",
        "add-key",
        ws.trust_root,
        "--key",
        test_keys.public("auditor"),
        "--role",
        "function-map",
        "--threshold",
        "2",
    )
    assert second.exit_code == 0, second.stderr
    outcomes["threshold not met"] = verify(run_cli, ws, good)
    both = sign(
        run_cli, ws, ws.path("signer.key"), test_keys.private("auditor"), output="two.dsse.json"
    )
    outcomes["two signatures"] = verify(run_cli, ws, both)

    statement = json.loads(base64.b64decode(json.loads(both.read_text())["payload"]))
    other_type = sign_payload(
        json.dumps(statement).encode(),
        "application/json",
        [load_signer(ws.path("signer.key")), load_signer(test_keys.private("auditor"))],
    )
    write_envelope(ws.path("type.dsse.json"), other_type)
    outcomes["wrong payloadType"] = verify(run_cli, ws, ws.path("type.dsse.json"))

    tampered = json.loads(both.read_text())
    statement["predicate"]["service"] = "evil"
    tampered["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    ws.path("tampered.dsse.json").write_text(json.dumps(tampered))
    outcomes["tampered payload"] = verify(run_cli, ws, ws.path("tampered.dsse.json"))

    other = ws.path("other.json")
    other.write_text("{}")
    outcomes["subject digest mismatch"] = run_cli(
        "attest",
        "verify",
        both,
        "--trust-root",
        ws.trust_root,
        "--role",
        "function-map",
        "--artifact",
        other,
    )

    outcomes["wrong predicate type"] = verify(
        run_cli, ws, both, "--predicate-type", "https://example.com/other/v1"
    )

    ws.path("malformed.dsse.json").write_text('{"payload": "abc", ')
    outcomes["malformed JSON"] = verify(run_cli, ws, ws.path("malformed.dsse.json"))

    missing = json.loads(both.read_text())
    del missing["signatures"]
    ws.path("missing.dsse.json").write_text(json.dumps(missing))
    outcomes["missing field"] = verify(run_cli, ws, ws.path("missing.dsse.json"))

    expired_root = ws.path("expired-root.json")
    root = json.loads(ws.trust_root.read_text())
    root["expires"] = "2020-01-01T00:00:00.000000Z"
    expired_root.write_text(json.dumps(root))
    outcomes["expired trust root"] = run_cli(
        "attest",
        "verify",
        both,
        "--trust-root",
        expired_root,
        "--role",
        "function-map",
        "--artifact",
        ws.document,
    )
    return outcomes


EXPECTED: dict[str, tuple[int, str]] = {
    "wrong key": (1, "not signed by any trusted key (wrong key?)"),
    "wrong role": (1, "signed by a trusted key without the 'function-map' role"),
    "threshold not met": (1, "threshold not met: 1 of 2 required signatures verified"),
    "wrong payloadType": (1, "payloadType is 'application/json', expected"),
    "tampered payload": (1, "does not verify: the payload, payloadType or signature was altered"),
    "subject digest mismatch": (1, "no subject matches"),
    "wrong predicate type": (1, "predicateType is 'https://stella.ops/predicates/function-map/v1'"),
    "malformed JSON": (2, "malformed JSON at column"),
    "missing field": (2, "field 'signatures': DSSE envelope lacks this required field"),
    "expired trust root": (
        1,
        "expired-root.json: field 'expires': trust root expired at 2020-01-01T00:00:00.000000Z",
    ),
}


def test_two_signatures_meet_threshold_two(failures: dict[str, CliResult]) -> None:
    assert failures["two signatures"].exit_code == 0, failures["two signatures"].stderr


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_failure_is_clear(case: str, failures: dict[str, CliResult]) -> None:
    code, message = EXPECTED[case]
    result = failures[case]
    assert result.exit_code == code, (case, result)
    assert message in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_failure_messages_are_distinct(failures: dict[str, CliResult]) -> None:
    messages = [failures[case].stderr for case in EXPECTED]
    assert len(set(messages)) == len(messages)


def test_json_failure_report(run_cli: Run, tmp_path: Path, test_keys: shared.TestKeys) -> None:
    ws = make_workspace(run_cli, tmp_path, "ed25519")
    stranger = sign(run_cli, ws, test_keys.private("stranger"))
    result = verify(run_cli, ws, stranger, "--format", "json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["verified"] is False and report["error"] == "SignatureError"


def test_usage_errors(run_cli: Run, tmp_path: Path) -> None:
    ws = make_workspace(run_cli, tmp_path, "ed25519")
    envelope = sign(run_cli, ws, ws.path("signer.key"))
    no_role = run_cli("attest", "verify", envelope, "--trust-root", ws.trust_root)
    assert no_role.exit_code == 2 and "--role R" in no_role.stderr
    bad_role = run_cli(
        "attest", "verify", envelope, "--trust-root", ws.trust_root, "--role", "janitor"
    )
    assert bad_role.exit_code == 2 and "unknown role 'janitor'" in bad_role.stderr
    stray = run_cli(
        "attest",
        "verify",
        envelope,
        "--trust-root",
        ws.trust_root,
        "--role",
        "builder",
        "--identity",
        "x",
        "--issuer",
        "y",
    )
    assert stray.exit_code == 2 and "need --sigstore-bundle" in stray.stderr
    two_subjects = run_cli(
        "attest",
        "verify",
        envelope,
        "--trust-root",
        ws.trust_root,
        "--role",
        "function-map",
        "--artifact",
        ws.document,
        "--digest",
        "sha256:" + "0" * 64,
    )
    assert two_subjects.exit_code == 2 and "not both" in two_subjects.stderr
    both = run_cli(
        "attest",
        "sign",
        "--input",
        ws.document,
        "--statement",
        "--predicate-type",
        "x",
        "--key",
        ws.path("signer.key"),
        "--output",
        ws.path("x.json"),
    )
    assert both.exit_code == 2 and "exactly one of" in both.stderr
    assert not ws.path("x.json").exists()


# --- the same verifier as a subprocess in a network namespace without interfaces ---------------


@pytest.mark.netns
def test_dsse_verify_in_empty_netns(
    run_cli: Run, netns_cli: Run, tmp_path: Path, test_keys: shared.TestKeys
) -> None:
    ws = make_workspace(run_cli, tmp_path, "ecdsa-p256")
    envelope = sign(run_cli, ws, ws.path("signer.key"))
    ok = netns_cli(
        "attest",
        "verify",
        envelope,
        "--trust-root",
        ws.trust_root,
        "--role",
        "function-map",
        "--artifact",
        ws.document,
        "--format",
        "json",
    )
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["verified"] is True
    stranger = sign(run_cli, ws, test_keys.private("stranger"), output="s.dsse.json")
    refused = netns_cli(
        "attest",
        "verify",
        stranger,
        "--trust-root",
        ws.trust_root,
        "--role",
        "function-map",
    )
    assert refused.exit_code == 1
    assert "not signed by any trusted key" in refused.stderr


def test_paths_with_brackets_print_literally(run_cli: Run, tmp_path: Path) -> None:
    """Rich markup must not swallow parts of file names such as "[bold]"."""
    directory = tmp_path / "[bold]evidence"
    directory.mkdir()
    ws = make_workspace(run_cli, directory, "ed25519")
    envelope = sign(run_cli, ws, ws.path("signer.key"), output="[red]x.dsse.json")
    result = verify(run_cli, ws, envelope)
    assert result.exit_code == 0, result.stderr
    assert f"VERIFIED {envelope}" in result.stdout
