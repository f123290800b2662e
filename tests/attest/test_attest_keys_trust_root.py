"""`stella keys` and `stella trust-root`: key files, passphrases, fingerprints, roles, thresholds."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import CliResult

Run = Callable[..., CliResult]


def spki_fingerprint(private_pem: bytes, passphrase: bytes | None = None) -> str:
    """The SHA-256 of the SubjectPublicKeyInfo, computed independently of our code."""
    private = serialization.load_pem_private_key(private_pem, password=passphrase)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


@pytest.mark.parametrize(
    ("key_type", "keytype", "scheme"),
    [("ed25519", "ed25519", "ed25519"), ("ecdsa-p256", "ecdsa", "ecdsa-sha2-nistp256")],
)
def test_generate_writes_pkcs8_0600_and_public_json(
    key_type: str, keytype: str, scheme: str, run_cli: Run, tmp_path: Path
) -> None:
    result = run_cli("keys", "generate", "--type", key_type, "--out", tmp_path / "k")
    assert result.exit_code == 0, result.stderr
    private = tmp_path / "k.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    pem = private.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted
    public = json.loads((tmp_path / "k.pub.json").read_text())
    assert (public["keytype"], public["scheme"]) == (keytype, scheme)
    assert public["keyid"] in result.stdout
    expected = spki_fingerprint(pem)
    assert expected in result.stdout
    for key_file in (tmp_path / "k.pub.json", private):
        shown = run_cli("keys", "fingerprint", key_file, "--format", "json")
        assert shown.exit_code == 0, shown.stderr
        summary = json.loads(shown.stdout)
        assert summary["fingerprint_sha256"] == expected
        assert summary["keyid"] == public["keyid"]
    table = run_cli("keys", "fingerprint", tmp_path / "k.pub.json")
    assert f"fingerprint_sha256: {expected}" in table.stdout


def test_generate_refuses_to_overwrite(run_cli: Run, tmp_path: Path) -> None:
    assert run_cli("keys", "generate", "--out", tmp_path / "k").exit_code == 0
    before = (tmp_path / "k.key").read_bytes()
    again = run_cli("keys", "generate", "--out", tmp_path / "k")
    assert again.exit_code == 2
    assert "refusing to overwrite a key" in again.stderr
    assert (tmp_path / "k.key").read_bytes() == before
    assert run_cli("keys", "generate", "--out", tmp_path / "k", "--force").exit_code == 0
    assert (tmp_path / "k.key").read_bytes() != before


def test_unknown_key_type(run_cli: Run, tmp_path: Path) -> None:
    result = run_cli("keys", "generate", "--type", "rsa", "--out", tmp_path / "k")
    assert result.exit_code == 2
    assert "unknown key type 'rsa'" in result.stderr
    assert not (tmp_path / "k.key").exists()


def test_passphrase_from_env(run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY_SECRET", "correct horse")
    monkeypatch.delenv("STELLA_KEY_PASSPHRASE", raising=False)
    made = run_cli(
        "keys",
        "generate",
        "--type",
        "ecdsa-p256",
        "--out",
        tmp_path / "k",
        "--passphrase-env",
        "MY_KEY_SECRET",
    )
    assert made.exit_code == 0, made.stderr
    pem = (tmp_path / "k.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    document = tmp_path / "doc.json"
    document.write_text('{"a": 1}')
    sign = [
        "attest",
        "sign",
        "--input",
        document,
        "--predicate-type",
        "https://example.com/t/v1",
        "--key",
        tmp_path / "k.key",
        "--output",
        tmp_path / "doc.dsse.json",
    ]

    missing = run_cli(*sign)
    assert missing.exit_code == 2
    assert "the private key is encrypted: set $STELLA_KEY_PASSPHRASE" in missing.stderr
    assert not (tmp_path / "doc.dsse.json").exists()

    monkeypatch.setenv("STELLA_KEY_PASSPHRASE", "wrong horse")
    wrong = run_cli(*sign)
    assert wrong.exit_code == 2
    assert "wrong passphrase" in wrong.stderr
    assert not (tmp_path / "doc.dsse.json").exists()

    monkeypatch.setenv("STELLA_KEY_PASSPHRASE", "correct horse")
    signed = run_cli(*sign)
    assert signed.exit_code == 0, signed.stderr
    shown = run_cli("keys", "fingerprint", tmp_path / "k.key", "--format", "json")
    assert json.loads(shown.stdout)["fingerprint_sha256"] == spki_fingerprint(pem, b"correct horse")


def test_passphrase_env_unset(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    result = run_cli(
        "keys", "generate", "--out", tmp_path / "k", "--passphrase-env", "NOT_SET_ANYWHERE"
    )
    assert result.exit_code == 2
    assert "$NOT_SET_ANYWHERE is empty or not set" in result.stderr
    assert not (tmp_path / "k.key").exists()


def test_plain_key_ignores_exported_passphrase(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exported $STELLA_KEY_PASSPHRASE is for encrypted keys; plain keys still load."""
    assert run_cli("keys", "generate", "--out", tmp_path / "k").exit_code == 0
    monkeypatch.setenv("STELLA_KEY_PASSPHRASE", "anything")
    assert run_cli("keys", "fingerprint", tmp_path / "k.key").exit_code == 0


def test_not_a_key(run_cli: Run, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    result = run_cli("keys", "fingerprint", junk)
    assert result.exit_code == 2
    assert "not a PKCS#8 PEM private key" in result.stderr


# --- trust root ---------------------------------------------------------------------------------


@pytest.fixture
def root_with_key(run_cli: Run, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "trust-root.json"
    assert run_cli("trust-root", "init", "--output", root, "--days", "10").exit_code == 0
    assert run_cli("keys", "generate", "--out", tmp_path / "builder").exit_code == 0
    added = run_cli(
        "trust-root", "add-key", root, "--key", tmp_path / "builder.pub.json", "--role", "builder"
    )
    assert added.exit_code == 0, added.stderr
    return root, tmp_path / "builder.pub.json"


def test_init_add_show(run_cli: Run, root_with_key: tuple[Path, Path]) -> None:
    root, public = root_with_key
    keyid = json.loads(public.read_text())["keyid"]
    document = json.loads(root.read_text())
    assert document["_type"] == "https://stella.ops/trust-root/v1"
    assert sorted(document["roles"]) == ["auditor", "builder", "collector", "function-map"]
    assert document["roles"]["builder"] == {"keyids": [keyid], "threshold": 1}
    assert document["expires"].endswith("Z")
    shown = run_cli("trust-root", "show", root, "--format", "json")
    summary = json.loads(shown.stdout)
    assert summary["expired"] is False
    assert keyid in summary["fingerprints"]
    table = run_cli("trust-root", "show", root)
    assert "builder" in table.stdout and summary["fingerprints"][keyid] in table.stdout
    assert "valid" in table.stdout


def test_init_refuses_to_overwrite(run_cli: Run, root_with_key: tuple[Path, Path]) -> None:
    root, _ = root_with_key
    before = root.read_bytes()
    result = run_cli("trust-root", "init", "--output", root)
    assert result.exit_code == 2 and "pass --force" in result.stderr
    assert root.read_bytes() == before


def test_bad_role(run_cli: Run, root_with_key: tuple[Path, Path]) -> None:
    root, public = root_with_key
    before = root.read_bytes()
    result = run_cli("trust-root", "add-key", root, "--key", public, "--role", "janitor")
    assert result.exit_code == 2
    assert "unknown role 'janitor'; expected one of function-map, collector, builder, auditor" in (
        result.stderr
    )
    assert root.read_bytes() == before


@pytest.mark.parametrize(
    ("threshold", "message"),
    [("2", "threshold 2 exceeds the 1 keys of the role"), ("0", "expected an integer >= 1")],
)
def test_bad_threshold(
    threshold: str, message: str, run_cli: Run, root_with_key: tuple[Path, Path]
) -> None:
    root, public = root_with_key
    before = root.read_bytes()
    result = run_cli(
        "trust-root",
        "add-key",
        root,
        "--key",
        public,
        "--role",
        "builder",
        "--threshold",
        threshold,
    )
    assert result.exit_code == 2
    assert message in result.stderr
    assert "roles.builder.threshold" in result.stderr
    assert root.read_bytes() == before  # nothing half-written


def test_tampered_keyid(run_cli: Run, root_with_key: tuple[Path, Path]) -> None:
    """A keyid that does not match its key material is refused wherever the root is used."""
    root, _ = root_with_key
    document = json.loads(root.read_text())
    (real,) = document["keys"]
    forged = "0" * 64
    document["keys"] = {forged: document["keys"][real]}
    document["roles"]["builder"]["keyids"] = [forged]
    root.write_text(json.dumps(document))
    for command in (
        ("trust-root", "show", root),
        ("attest", "verify", root, "--trust-root", root, "--role", "builder"),
    ):
        result = run_cli(*command)
        assert result.exit_code == 2
        assert f"keyid {forged} does not match the key material (expected {real})" in (
            result.stderr
        )


def test_expired_root_is_flagged_by_show(run_cli: Run, tmp_path: Path) -> None:
    root = tmp_path / "old.json"
    made = run_cli("trust-root", "init", "--output", root, "--expires", "2021-01-01T00:00:00Z")
    assert made.exit_code == 0, made.stderr
    assert json.loads(run_cli("trust-root", "show", root, "--format", "json").stdout)["expired"]
    assert "EXPIRED" in run_cli("trust-root", "show", root).stdout


def test_malformed_trust_root(run_cli: Run, tmp_path: Path) -> None:
    root = tmp_path / "bad.json"
    root.write_text('{"_type": "something else"}')
    result = run_cli("trust-root", "show", root)
    assert result.exit_code == 2
    assert "field '_type': not a stella trust root" in result.stderr


def test_console_prints_fingerprints_literally() -> None:
    """Rich would turn ":AB:" or ":CD:" of a hex fingerprint into emoji; ours must not."""
    from stella_bundle.cli.output import console

    with console.capture() as captured:
        console.print("10:AB:C6:CD:EF")
    assert captured.get().strip() == "10:AB:C6:CD:EF"
