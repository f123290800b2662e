"""stella-bundle: airgap-first runtime evidence (function maps, eBPF observations, offline bundles)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

__version__ = "0.1.0"

_AWS_SIGNER = "securesystemslib.signer._aws_signer"


class _NoBoto3ForSecuresystemslib(importlib.abc.MetaPathFinder):
    """securesystemslib's signer package imports its optional AWS KMS signer, which imports
    boto3 wherever boto3 is installed: ~1 s of every signing or verifying command's start-up
    on a loaded machine. stella signs and verifies with local keys only (no awskms: URIs), so
    that one import, made while the AWS signer module initialises, finds no boto3 and the
    signer reports itself unavailable, as it does on a machine without boto3. Any other
    import of boto3 is untouched."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "boto3":
            module = sys.modules.get(_AWS_SIGNER)
            if module is not None and not hasattr(module, "AWSSigner"):  # still initialising
                raise ModuleNotFoundError("boto3 is not used by stella", name="boto3")
        return None


if not any(isinstance(finder, _NoBoto3ForSecuresystemslib) for finder in sys.meta_path):
    sys.meta_path.insert(0, _NoBoto3ForSecuresystemslib())
