"""`stella serve` refuses certificate and key files it cannot load before it announces or
opens anything: not PEM, an encrypted key (it would wait for a passphrase), a key of another
certificate. Each was an internal error (exit 3) after "stella serve: https://…"."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest


def _pair(directory: Path, name: str, *passphrase: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert),
            *(["-passout", f"pass:{passphrase[0]}"] if passphrase else ["-nodes"]),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize(
    ("case", "field", "words"),
    [
        ("not PEM", "--tls-cert", "cannot load the certificate and key"),
        ("encrypted key", "--tls-key", "the key is encrypted"),
        ("another certificate's key", "--tls-cert", "cannot load the certificate and key"),
    ],
)
def test_tls_files_that_do_not_load_are_refused_before_anything_starts(
    case: str, field: str, words: str, run_cli: Any, test_keys: Any, tmp_path: Path
) -> None:
    cert, key = _pair(tmp_path, "good")
    if case == "not PEM":
        cert.write_text("not a certificate\n")
    elif case == "encrypted key":
        cert, key = _pair(tmp_path, "locked", "a passphrase")
    else:
        key = _pair(tmp_path, "other")[1]
    store = tmp_path / "s.sqlite"
    done = run_cli(
        "serve", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key,
        "--trust-root", test_keys.trust_root, "--store", f"sqlite:///{store}",
    )  # fmt: skip
    assert done.exit_code == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"field '{field}'" in lines[0] and words in lines[0], lines
    assert not store.exists()  # refused before the store was opened
