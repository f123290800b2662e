"""The fast canonical path is byte-identical to the RFC 8785 reference."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from stella_bundle.canonical import canonical_bytes, canonical_record_bytes
from stella_bundle.errors import InputError
from tests.conftest import scaled_examples

json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=scaled_examples(1500), deadline=None)
@given(json_values)
def test_fast_path_matches_reference(value: object) -> None:
    try:
        reference = rfc8785.dumps(value)
    except Exception:
        with pytest.raises(InputError):
            canonical_record_bytes(value)
        return
    assert canonical_record_bytes(value) == reference


@settings(max_examples=scaled_examples(300), deadline=None)
@given(st.dictionaries(st.text(alphabet=st.characters(min_codepoint=0xE000)), st.integers(0, 9)))
def test_keys_beyond_the_bmp_sort_by_utf16(value: dict[str, int]) -> None:
    assert canonical_record_bytes(value) == rfc8785.dumps(value)


def test_known_vector() -> None:
    # Sorted keys, no whitespace, control characters escaped, U+2028 raw, -0 as 0.
    value = {"b": 1, "a": [True, None, "x\u0007\u2028"], "c": -0}
    expected = b'{"a":[true,null,"x\\u0007\xe2\x80\xa8"],"b":1,"c":0}'
    assert canonical_record_bytes(value) == expected
    assert canonical_bytes(value) == expected


def test_floats_use_the_reference() -> None:
    assert canonical_record_bytes({"x": 1.5}) == b'{"x":1.5}'
    assert canonical_record_bytes({"x": 1e21}) == rfc8785.dumps({"x": 1e21})


def test_unsafe_integer_refused() -> None:
    with pytest.raises(InputError):
        canonical_record_bytes({"n": 2**60})


def test_output_is_valid_json() -> None:
    value = {"z": "é", "a": {"y": [1, 2, {"k": "\n"}]}}
    assert json.loads(canonical_record_bytes(value)) == value
