"""The writer's fast record path is the reference: same bytes, same accept/reject decisions."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from evidence_support import make_record
from hypothesis import given, settings
from hypothesis import strategies as st

from stella_bundle.canonical import canonical_bytes
from stella_bundle.evidence.encoding import _fast_accept, encode_record
from stella_bundle.formats.record import KINDS, PROBE_TYPES, ObservationError, validate_record
from tests.conftest import scaled_examples

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "é", "😀", "\u2028", 'a"b\\c', "\x00"]
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_timestamp = st.sampled_from(
    [
        "2026-01-23T00:00:00.000000Z",
        "2026-02-30T00:00:00.000000Z",  # no such day
        "2026-01-23T00:00:00Z",
        "2026-01-23T00:00:00.123+02:00",
        "2026-01-23t00:00:00.000000Z",
        "2026-01-23T00:00:00.00000١Z",  # an Arabic-Indic digit
        "2026-01-23T24:00:00.000000Z",
    ]
)
_field_values = {
    "node_hash": st.sampled_from(
        ["sha256:" + "a" * 64, "sha256:" + "A" * 64, "sha256:" + "a" * 64 + "\n"]
    ),
    "function_name": _text,
    "probe_type": st.sampled_from([*PROBE_TYPES, "laser"]),
    "observed_at": _timestamp,
    "first_observed_at": _timestamp,
    "last_observed_at": _timestamp,
    "count": st.integers(-1, 2**54) | st.booleans(),
    "pid": st.integers(-1, 2**54) | st.none(),
    "kind": st.sampled_from([*KINDS, "other"]),
    "comm": _text | st.integers(0, 3),
    "purl": _text | st.none(),
    "image_digest": st.sampled_from(["sha256:" + "b" * 64, "sha1:00"]),
    "details": _json,
    "unknown_field": _text,
}
_records = st.fixed_dictionaries(
    {},
    optional={name: strategy for name, strategy in _field_values.items()},
)


def _reference(record: Any) -> bytes | None:
    try:
        return canonical_bytes(validate_record(record))
    except ObservationError:
        return None


@settings(max_examples=scaled_examples(400), deadline=None)
@given(_records)
def test_fast_path_equals_reference(record: dict[str, Any]) -> None:
    expected = _reference(copy.deepcopy(record))
    if expected is None:
        with pytest.raises(ObservationError):
            encode_record(copy.deepcopy(record))
    else:
        assert encode_record(copy.deepcopy(record)) == expected


@settings(max_examples=scaled_examples(300), deadline=None)
@given(st.integers(0, 10**6), st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_typical_records_take_the_fast_path(index: int, suffix: str) -> None:
    record = make_record(index)
    record["comm"] += suffix
    record["details"] = {"path": "/etc/" + suffix, "argv": ["a", suffix], "port": 443}
    assert _fast_accept(record)
    assert encode_record(copy.deepcopy(record)) == canonical_bytes(validate_record(record))


def test_typical_record_digest_is_stable() -> None:
    line = encode_record(make_record(7))
    assert (
        hashlib.sha256(line).hexdigest()
        == hashlib.sha256(canonical_bytes(make_record(7))).hexdigest()
    )
