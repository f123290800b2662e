"""Validated canonical NDJSON lines for records, fast for the records a collector writes.

`encode_record` is `validate_record` + `canonical_record_bytes` with a fast accept path: a
record whose every field has the expected plain type and form (what the collector produces)
is checked in one pass and serialised with the C JSON encoder. Anything else, including every
invalid record, takes the reference path, so errors and bytes are the reference's. A property
test (tests/evidence/test_evidence_encoding.py) proves both paths give identical bytes and
accept the same records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from ..canonical import canonical_record_bytes
from ..observations.record import (
    _INT_FIELDS,
    _STRING_FIELDS,
    _TIME_FIELDS,
    KINDS,
    NODE_HASH_RE,
    PROBE_TYPES,
    validate_record,
)
from ..timeutil import is_rfc3339_timestamp

# JCS represents integers exactly only up to 2**53 - 1; larger ones take the reference path.
_MAX_SAFE_INTEGER: Final = 2**53 - 1

# Identical to canonical.py's fast serialiser: for float-free data with BMP-only keys its output
# is byte-identical to RFC 8785.
_encode = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode

_STRING, _TIME, _INT, _NODE_HASH, _PROBE, _KIND, _DETAILS = range(7)
_FIELD_CLASS: Final[dict[str, int]] = {
    **dict.fromkeys(_STRING_FIELDS, _STRING),
    **dict.fromkeys(_TIME_FIELDS, _TIME),
    **dict.fromkeys(_INT_FIELDS, _INT),
    "node_hash": _NODE_HASH,
    "probe_type": _PROBE,
    "kind": _KIND,
    "details": _DETAILS,
}
_PROBE_TYPES: Final = frozenset(PROBE_TYPES)
_KINDS: Final = frozenset(KINDS)
_node_hash_match = NODE_HASH_RE.match

# Valid `YYYY-MM-DDTHH:MM:SS` prefixes seen recently: a stream of records shares few seconds,
# so the calendar check runs once per second of observations, not once per record.
_second_cache: dict[str, bool] = {}
_SECOND_CACHE_LIMIT: Final = 65536


def _timestamp_ok(value: Any) -> bool:
    # The toolkit's own form only (`…SS.ffffffZ`); anything else takes the reference path.
    if type(value) is not str or len(value) != 27 or value[19] != "." or value[26] != "Z":
        return False
    fraction = value[20:26]
    if not (fraction.isascii() and fraction.isdigit()):
        return False
    prefix = value[:19]
    known = _second_cache.get(prefix)
    if known is None:
        known = is_rfc3339_timestamp(prefix + ".000000Z")
        if len(_second_cache) >= _SECOND_CACHE_LIMIT:
            _second_cache.clear()
        _second_cache[prefix] = known
    return known


def _plain_json(value: Any) -> bool:
    """No floats, integers JCS-safe, keys in the BMP: the fast serialiser is canonical here."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (not key.isascii() and any(ord(c) > 0xFFFF for c in key)):
                return False
            if not _plain_json(item):
                return False
        return True
    if kind is list:
        return all(_plain_json(item) for item in value)
    return False


def _fast_accept(record: Any) -> bool:
    if type(record) is not dict or "probe_type" not in record:
        return False
    if "node_hash" not in record or "observed_at" not in record:
        return False
    function_name = record.get("function_name")
    if type(function_name) is not str or not function_name:
        return False
    for key, value in record.items():
        field_class = _FIELD_CLASS.get(key)
        if field_class == _STRING:
            if type(value) is not str:
                return False
        elif field_class == _TIME:
            if not _timestamp_ok(value):
                return False
        elif field_class == _INT:
            if type(value) is not int or not 0 <= value <= _MAX_SAFE_INTEGER:
                return False
        elif field_class == _NODE_HASH:
            if type(value) is not str or _node_hash_match(value) is None:
                return False
        elif field_class == _PROBE:
            if type(value) is not str or value not in _PROBE_TYPES:
                return False
        elif field_class == _KIND:
            if type(value) is not str or value not in _KINDS:
                return False
        elif field_class == _DETAILS:
            if type(value) is not dict or not _plain_json(value):
                return False
        else:
            return False  # unknown fields and image_digest: the reference decides
    return record.get("count") != 0


def encode_record(record: Any, source: str | Path | None = None, line: int | None = None) -> bytes:
    """The canonical JSON line (without newline) of a valid record; ObservationError otherwise."""
    if _fast_accept(record):
        try:
            return _encode(record).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: the reference reports it properly
    return canonical_record_bytes(validate_record(record, source, line))
