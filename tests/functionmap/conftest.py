"""Fixtures for function-map tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from functionmap_helpers import JAVA_SBOM, write_debian_sbom


@pytest.fixture
def java_sbom() -> Path:
    assert JAVA_SBOM.is_file(), f"external SBOM missing: {JAVA_SBOM}"
    return JAVA_SBOM


@pytest.fixture
def debian_sbom(tmp_path: Path) -> Path:
    """A real CycloneDX SBOM of this machine's openssl, libssl3 and libc6 (dpkg)."""
    return write_debian_sbom(tmp_path / "debian.cdx.json")
