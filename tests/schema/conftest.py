"""Fixtures of the schema tests: the shipped example documents (fixtures/schemas/examples/)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "schemas" / "examples"


def load_example(kind: str) -> Any:
    return json.loads((EXAMPLES / f"{kind}.json").read_text())


@pytest.fixture
def example() -> Callable[[str], Any]:
    """A fresh deep copy of the example of a kind, safe to mutate."""
    return lambda kind: copy.deepcopy(load_example(kind))
