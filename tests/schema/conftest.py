"""Fixtures of the schema tests (helpers live in schema_examples.py: `conftest` is not a
unique module name across test folders)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from schema_examples import load_example


@pytest.fixture
def example() -> Callable[[str], Any]:
    """A fresh copy of the example of a kind, safe to mutate."""
    return load_example
