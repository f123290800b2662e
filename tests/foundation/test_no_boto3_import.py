"""Signing and verifying commands do not pay for boto3 (securesystemslib's AWS KMS signer)."""

from __future__ import annotations

import subprocess
import sys


def test_securesystemslib_signer_loads_without_boto3_and_boto3_stays_importable() -> None:
    script = (
        "import sys\n"
        "import stella_bundle.attest.keys, stella_bundle.verify.pipeline\n"
        "from securesystemslib.signer import CryptoSigner\n"
        "assert 'boto3' not in sys.modules, 'boto3 imported'\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('boto3') is not None:\n"
        "    import boto3  # anyone else's import of boto3 still works\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
