"""RFC 8785 (JCS) canonical JSON, with a fast path for float-free records.

`canonical_bytes` is the reference (the `rfc8785` package). `canonical_record_bytes` serves
hot paths (observation records, millions per chunk): records carry no floats by design, and
for float-free data whose keys sort the same by UTF-16 code unit as by code point, JCS and
`json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":"))` produce the same bytes.
A hypothesis test (tests/test_canonical.py) proves it; anything outside that domain falls back
to the reference.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

import rfc8785

from .errors import InputError

# RFC 8785 (like JavaScript, and I-JSON, RFC 7493) represents integers exactly only within
# ±(2**53 - 1). The one bound of the project: every integer of every schema stays within it
# (tests/schema keeps the schemas to it) and every integer checked by hand uses this name.
MAX_SAFE_INTEGER: Final = 2**53 - 1


def saturating_sum(*values: int) -> int:
    """A sum that a report can still carry: capped at MAX_SAFE_INTEGER.

    Counters read from signed documents are each within the bound, but their sums (loss over a
    chain, hits of a node over many aggregated records) need not be; a verdict already reached
    must still be written (issue 9 item 5), and "at least 2**53 - 1" is the truth it can carry.
    """
    return min(sum(values), MAX_SAFE_INTEGER)


_fast_encoder = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


def canonical_bytes(document: Any) -> bytes:
    """Serialise any JSON value per RFC 8785."""
    try:
        return rfc8785.dumps(document)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InputError(f"cannot canonicalise JSON: {exc}") from exc
    except RecursionError as exc:
        raise InputError("cannot canonicalise JSON: nested too deeply") from exc


def _fast_path_ok(value: Any) -> bool:
    """True when json.dumps output is guaranteed JCS-identical for this value."""
    if isinstance(value, str):
        return True
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    if isinstance(value, dict):
        for key, item in value.items():
            # Keys outside the BMP sort differently by UTF-16 code unit (JCS) than by code point.
            if not isinstance(key, str) or (not key.isascii() and _has_astral(key)):
                return False
            if not _fast_path_ok(item):
                return False
        return True
    if isinstance(value, list):
        return all(_fast_path_ok(item) for item in value)
    return False  # floats and anything else: let the reference decide


def _has_astral(text: str) -> bool:
    return any(ord(ch) > 0xFFFF for ch in text)


def canonical_record_bytes(record: Any) -> bytes:
    """Canonical JSON of a float-free record; byte-identical to `canonical_bytes`."""
    try:
        if _fast_path_ok(record):
            return _fast_encoder.encode(record).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        # A lone surrogate, or nesting the C encoder refuses: the reference decides and reports.
        pass
    return canonical_bytes(record)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
