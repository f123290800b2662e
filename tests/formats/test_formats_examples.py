"""Every example of every format reads into its model and writes back exactly."""

from __future__ import annotations

from typing import Any

import pytest
from formats_cases import CASES, EXAMPLES, examples

from stella_bundle.canonical import canonical_bytes

EXAMPLE_DOCUMENTS = [
    (kind, name, document) for kind in sorted(CASES) for name, document in examples(kind)
]


def test_every_example_has_a_format() -> None:
    kinds = {path.name.split(".")[0] for path in EXAMPLES.iterdir()}
    # statement and dsse-envelope are the wrappers around the predicates, not formats of ours.
    assert kinds - {"statement", "dsse-envelope"} == set(CASES)
    assert {kind for kind, _, _ in EXAMPLE_DOCUMENTS} == set(CASES)


@pytest.mark.parametrize(
    ("kind", "name", "document"), EXAMPLE_DOCUMENTS, ids=[name for _, name, _ in EXAMPLE_DOCUMENTS]
)
def test_example_round_trips_exactly(kind: str, name: str, document: Any) -> None:
    model = CASES[kind].parse(document)
    written = model.to_dict()
    assert written == document
    # Exactly: the same canonical bytes (key order aside, 1.0 and 1 are one JSON number).
    assert canonical_bytes(written) == canonical_bytes(document)
    assert CASES[kind].parse(written) == model
