"""Fuzzing the observation-record validator with structurally mutated valid records.

Seeds are valid records (a minimal one and one with every optional field). A mutation replaces,
deletes, adds, wraps or edits a node, or splices in JSON text `json.dumps` cannot write (integers
of thousands of digits, deep nesting, NaN, lone surrogates, duplicate keys). Each mutated line
goes through every reader of a record: the JSON parse, the fast validator, the JSON Schema, the
collector's canonical encoder and the function-map aggregator. Only the project's own errors may
come out, and the fast validator must decide exactly as the published schema does.
"""

from __future__ import annotations

import json
from typing import Any

from fuzz_support import (
    ALLOWED,
    bounded_memory,
    call_allowing_own_errors,
    full_record,
    fuzz_settings,
    record,
)
from hypothesis import example, given
from hypothesis import strategies as st
from json_mutations import MUTATIONS, mutated_json

from stella_bundle.canonical import canonical_bytes
from stella_bundle.coverage.scan import ObservationAggregator
from stella_bundle.errors import MalformedDocumentError, SchemaValidationError
from stella_bundle.evidence.encoding import encode_record
from stella_bundle.formats.record import validate_record
from stella_bundle.jsonio import parse_json
from stella_bundle.schema import validate_document

SEEDS = (record(), full_record())
SOURCE = "fuzz.ndjson"


def decide(function: Any) -> bool:
    """True if `function` accepted; False if it refused with a project error (others escape)."""
    return call_allowing_own_errors(function) is None


def check_record_line(line: bytes) -> None:
    try:
        value = parse_json(line, SOURCE)
    except MalformedDocumentError:
        return  # the JSON reader refused it, properly

    def fresh() -> Any:  # each reader gets its own copy (validate_record may add a field)
        return json.loads(line)

    fast = decide(lambda: validate_record(fresh(), SOURCE, 1, default_probe_type=False))
    try:
        validate_document("observation-record", value, SOURCE, line=1)
        by_schema = True
    except SchemaValidationError:
        by_schema = False
    # One definition of a record: the fast path decides as the published schema does.
    assert fast == by_schema, (fast, by_schema, line[:300])
    admitted = decide(lambda: validate_record(fresh()))
    aggregated = decide(lambda: ObservationAggregator().add_record(fresh(), SOURCE, 1))
    # function-map verify counts exactly the records the validator admits.
    assert aggregated == admitted, line[:300]
    # The collector's encoder writes only admitted records, and canonically. (It refuses more: a
    # lone surrogate escape passes the validator and the schema but cannot be UTF-8; see issue 9.)
    if decide(lambda: encode_record(fresh(), SOURCE, 1)):
        assert admitted, line[:300]
        canonical_bytes(validate_record(fresh()))


def test_seed_records_are_valid() -> None:
    for seed in SEEDS:
        validate_record(dict(seed))
        validate_document("observation-record", seed)
        check_record_line(json.dumps(seed).encode())


@fuzz_settings(scale=1.0)
@given(
    seed=st.sampled_from(range(len(SEEDS))), mutations=st.lists(MUTATIONS, min_size=1, max_size=3)
)
@example(seed=1, mutations=[("raw", 21, 0)])  # a 4,301-digit integer in details
@example(seed=0, mutations=[("add-key", 0, "a\nb", 1)])  # an unknown field named over two lines
@example(seed=0, mutations=[("raw", 3, 11)])  # a lone surrogate in function_name
@example(seed=0, mutations=[("replace", 5, "9999-12-31T23:59:59-23:59")])  # past year 9999 in UTC
def test_records_mutated(seed: int, mutations: list[tuple[Any, ...]]) -> None:
    line = mutated_json(SEEDS[seed], mutations)
    with bounded_memory():
        check_record_line(line)


@fuzz_settings(scale=0.2)
@given(value=st.binary(max_size=512))
def test_records_random_bytes(value: bytes) -> None:
    with bounded_memory():
        check_record_line(value)


def test_allowed_errors_are_project_errors() -> None:
    assert all(issubclass(kind, Exception) for kind in ALLOWED)
