"""The writer's fast record paths are the reference: the compiled encoder (_record.c) and the
Python fast path give the reference's bytes, and accept only records the reference accepts
(the C encoder's None leaves the decision to Python; encode_record's errors are the reference's).
Under CI=true the compiled encoder must be the one in use."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from evidence_support import make_record
from hypothesis import given, settings
from hypothesis import strategies as st

from stella_bundle.canonical import MAX_SAFE_INTEGER, canonical_bytes, plain_canonical_bytes
from stella_bundle.errors import StellaError
from stella_bundle.evidence import encoding
from stella_bundle.evidence.encoding import _fast_accept, encode_record
from stella_bundle.formats.record import KINDS, PROBE_TYPES, validate_record
from stella_bundle.timeutil import format_timestamp
from tests.conftest import IN_CI, scaled_examples

needs_compiled = pytest.mark.skipif(
    encoding.compiled_encode is None, reason=encoding.ENCODER_STATUS
)

# Odd strings: escapes and controls (JCS's short and \u00xx forms), DEL, non-ASCII of every
# width (latin-1, BMP, astral), line separators, and lone surrogates (not UTF-8: refused).
_odd = st.sampled_from(
    ["", "é", "ÿ", "😀", "\u2028", "\u2029", 'a"b\\c', "\x00", "\x1f", "\x7f", "\b\t\n\f\r",
     "\ud800", "a\udfffb", "\ufffe", "中文", "/", "\u0080", 'say "hello" to the world',
     "C:\\Program Files\\x", "line one\nline two\tand three\x1f"]
)  # fmt: skip
_text = (
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
    | st.text(st.characters(), max_size=6)  # surrogates included
    | st.text(st.characters(max_codepoint=0x7F), max_size=12)  # ASCII: the C loop's fast case
    # Long ASCII with the characters to escape anywhere (the C loop reads 8 bytes at a time).
    | st.text(st.sampled_from('abc"\\\n\x01\x7f '), min_size=8, max_size=40)
    | _odd
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _calendar_timestamp(draw: st.DrawFn) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` around the calendar's edges: year 0 and 9999, month 0 and
    13, day 0 and the month's last day and the one after (29 February of leap and common years:
    1900, 2000, 2023, 2024), hour 24, minute 60, second 60; mostly one edge at a time."""
    year = draw(st.sampled_from([0, 1, 4, 100, 1900, 2000, 2023, 2024, 2100, 2400, 9999]))
    month = draw(st.sampled_from([2, 2, 2, 1, 4, 12, 0, 13]))
    day = draw(st.sampled_from([28, 29, 29, 30, 31, 1, 0, 32]))
    clock = draw(st.sampled_from(["00:00:00", "23:59:59", "24:00:00", "00:60:00", "00:00:60"]))
    micro = draw(st.sampled_from(["000000", "999999", "000000", "12345", "1234567", "00000١"]))
    stamp = f"{year:04d}-{month:02d}-{day:02d}T{clock}.{micro}Z"
    # A character replaced now and then: every position of the form is checked.
    if draw(st.integers(0, 5)) == 0:
        at = draw(st.integers(0, len(stamp) - 1))
        stamp = stamp[:at] + draw(st.sampled_from("0a-:.TZtz ١")) + stamp[at + 1 :]
    return stamp


_timestamp = _calendar_timestamp() | st.sampled_from(
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
_bounds = st.sampled_from(
    [0, 1, -1, MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, 2**63 - 1, 2**63, -(2**63), 2**64, True]
)
_digest = st.sampled_from(
    ["sha256:" + "a" * 64, "sha256:" + "A" * 64, "sha256:" + "a" * 64 + "\n", "sha256:" + "a" * 63,
     "sha256:" + "0123456789abcdef" * 4, "sha256:" + "g" * 64, "sha512:" + "a" * 64,
     "sha256:" + "é" * 64, "sha256:" + "a" * 63 + "٣"]
)  # fmt: skip
_field_values = {
    "node_hash": _digest,
    "function_name": _text,
    "probe_type": st.sampled_from([*PROBE_TYPES, "laser", "Uprobe"]),
    "observed_at": _timestamp,
    "first_observed_at": _timestamp,
    "last_observed_at": _timestamp,
    "count": st.integers(-1, 2**54) | _bounds,
    "pid": st.integers(-1, 2**54) | st.none() | _bounds,
    "kind": st.sampled_from([*KINDS, "other"]) | st.integers(0, 1),
    "comm": _text | st.integers(0, 3),
    "purl": _text | st.none(),
    "binary_path": _text,
    "build_id": _text,
    "container_id": _text,
    "pod_name": _text,
    "namespace": _text,
    "host": _text,
    "image_digest": _digest,
    "details": _json,
    "unknown_field": _text,
}


_good_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.text(
    st.characters(max_codepoint=0x7F), max_size=12
)
_good_stamp = st.builds(format_timestamp, st.datetimes()) | _calendar_timestamp()
# Values every field accepts, drawn most of the time, so that most records are valid and the
# accepting paths are compared (the values above, drawn otherwise, test the refusals).
_good_values: dict[str, Any] = {
    "node_hash": st.sampled_from(["sha256:" + "0123456789abcdef" * 4, "sha256:" + "f" * 64]),
    "function_name": _good_text.filter(bool),
    "probe_type": st.sampled_from(PROBE_TYPES),
    "observed_at": _good_stamp,
    "first_observed_at": _good_stamp,
    "last_observed_at": _good_stamp,
    "count": st.integers(1, MAX_SAFE_INTEGER) | st.sampled_from([1, MAX_SAFE_INTEGER]),
    "pid": st.integers(0, MAX_SAFE_INTEGER) | st.sampled_from([0, MAX_SAFE_INTEGER]),
    "kind": st.sampled_from(KINDS),
    "image_digest": st.just("sha256:" + "9" * 64),
    "details": st.dictionaries(_good_text, st.integers(-5, 5) | _good_text, max_size=2),
}


@st.composite
def _records(draw: st.DrawFn) -> dict[str, Any]:
    """Records of any subset of fields (mostly with the required ones), keys in any order,
    mostly valid values."""
    names = [name for name in _field_values if draw(st.integers(0, 2)) == 0]
    if draw(st.integers(0, 4)):
        names += ["node_hash", "function_name", "probe_type", "observed_at"]
        names = [n for n in dict.fromkeys(names) if n != "unknown_field" or draw(st.booleans())]
    names = draw(st.permutations(names))
    record = {}
    for name in names:
        good = _good_values.get(name, _good_text)
        odd = draw(st.integers(0, 9)) == 0
        record[name] = draw(_field_values[name] if odd else good)
    return record


def _outcome(action: Any) -> Any:
    try:
        return action()
    except StellaError as exc:
        return (type(exc), str(exc))


@settings(max_examples=scaled_examples(600), deadline=None)
@given(_records())
def test_fast_paths_equal_reference(record: dict[str, Any]) -> None:
    expected = _outcome(lambda: canonical_bytes(validate_record(copy.deepcopy(record))))
    assert _outcome(lambda: encode_record(copy.deepcopy(record))) == expected
    # Each fast path alone: the reference's bytes whenever it accepts.
    if _fast_accept(copy.deepcopy(record)):
        python = plain_canonical_bytes(copy.deepcopy(record))
        assert python is None or python == expected
    if encoding.compiled_encode is not None:
        compiled = encoding.compiled_encode(copy.deepcopy(record))
        assert compiled is None or compiled == expected


@settings(max_examples=scaled_examples(600), deadline=None)
@given(
    st.sampled_from(["observed_at", "first_observed_at", "last_observed_at"]),
    _calendar_timestamp() | st.none(),
    st.sampled_from(["count", "pid"]),
    _bounds | st.none(),
    st.sampled_from(["function_name", "comm", "host", "node_hash", "image_digest"]),
    _odd | _text | _digest,
)
def test_edges_equal_reference(
    time_field: str,
    stamp: str | None,
    int_field: str,
    number: int | None,
    text_field: str,
    text: str,
) -> None:
    """An edge value in a time, an integer and a string field of a valid record (the first two
    sometimes left valid): the calendar's edges, the integer bound and odd strings meet the
    compiled checks every time."""
    record = make_record(3)
    record[text_field] = text
    if stamp is not None:
        record[time_field] = stamp
    if number is not None:
        record[int_field] = number
    expected = _outcome(lambda: canonical_bytes(validate_record(copy.deepcopy(record))))
    assert _outcome(lambda: encode_record(copy.deepcopy(record))) == expected
    if encoding.compiled_encode is not None:
        compiled = encoding.compiled_encode(copy.deepcopy(record))
        assert compiled is None or compiled == expected


@needs_compiled
@settings(max_examples=scaled_examples(300), deadline=None)
@given(
    st.integers(0, 10**6),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.permutations(list(make_record(0))),
    st.sampled_from([0, 1, MAX_SAFE_INTEGER]),
)
def test_plain_records_take_the_compiled_path(
    index: int, suffix: str, order: list[str], pid: int
) -> None:
    """What the collector writes (no details) never falls back to Python: any strings without
    surrogates, fields in any order, integers up to the bound."""
    base = make_record(index)
    base["comm"] += suffix
    base["pid"] = pid
    record = {name: base[name] for name in order}
    assert encoding.compiled_encode is not None
    assert encoding.compiled_encode(record) == canonical_bytes(validate_record(record))


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


def test_the_compiled_encoder_is_in_use_in_ci() -> None:
    """CI must not measure (or test) the fallback without saying so: setup.sh's editable install
    builds the extension, and a stale or missing build fails here."""
    if not IN_CI:
        pytest.skip(f"outside CI the encoder in use may be the fallback: {encoding.ENCODER_STATUS}")
    assert encoding.ENCODER_STATUS == "compiled"
