"""Report fixtures: the inputs every result kind is built from (report_support)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from report_support import Inputs, write_inputs


@pytest.fixture
def inputs(tmp_path: Path, test_keys: Any) -> Inputs:
    return write_inputs(tmp_path, test_keys.signer("collector"))
