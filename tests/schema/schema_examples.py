"""The shipped example documents (fixtures/schemas/examples/), for the schema tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "schemas" / "examples"


def load_example(kind: str) -> Any:
    """A fresh copy of the example of a kind, safe to mutate."""
    return json.loads((EXAMPLES / f"{kind}.json").read_text())
