"""Fixtures for function-map tests (`debian_sbom`, shared with tests/coverage, is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.functionmap.functionmap_helpers import JAVA_SBOM


@pytest.fixture
def java_sbom() -> Path:
    assert JAVA_SBOM.is_file(), f"external SBOM missing: {JAVA_SBOM}"
    return JAVA_SBOM
