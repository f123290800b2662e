"""RFC 8785 (JCS) canonical JSON: the one definition every writer and verifier uses.

`canonical_bytes` is the canonical form of any JSON value. Two paths give it, and they give the
same bytes (a hypothesis test, tests/test_canonical.py, compares them on generated documents):

- the fast path, orjson with sorted keys, for *plain* JSON (`is_plain_json`): no floats,
  integers within +-(2**53 - 1), keys in the Basic Multilingual Plane, exact built-in types.
  There orjson's output is JCS: UTF-8, no insignificant space, JCS's string escapes, and keys
  sorted by code point, which for BMP keys is JCS's UTF-16 code-unit order. Observation
  records, manifests and envelopes are plain, millions of records per chunk;
- the exact fallback, the `rfc8785` package (`_reference_bytes`), for everything else: floats,
  keys beyond the BMP, and every value JCS refuses (which it refuses with an InputError).

`plain_canonical_bytes` is the fast path alone, for a caller that has established plainness
with its own per-field checks (the record writer, evidence/encoding.py).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import orjson
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


# Deeper values take the exact fallback (orjson refuses nesting beyond 255 levels).
_PLAIN_DEPTH_LIMIT: Final = 128


def _reference_bytes(document: Any) -> bytes:
    """The exact fallback: any JSON value per RFC 8785; an InputError for what JCS refuses."""
    try:
        return rfc8785.dumps(document)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InputError(f"cannot canonicalise JSON: {exc}") from exc
    except RecursionError as exc:
        raise InputError("cannot canonicalise JSON: nested too deeply") from exc


def is_plain_json(value: Any, levels_left: int = _PLAIN_DEPTH_LIMIT) -> bool:
    """True when the fast path's output is RFC 8785 for `value` (see the module docstring).

    Only exact built-in types: a subclass (an enum, a str subclass) takes the exact fallback.
    Nesting deeper than `levels_left` is not plain (a caller passes its format's bound).
    """
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    if levels_left == 0:
        return False
    if kind is dict:
        for key, item in value.items():
            # Keys outside the BMP sort differently by UTF-16 code unit (JCS) than by code point.
            if type(key) is not str or (not key.isascii() and _has_astral(key)):
                return False
            if not is_plain_json(item, levels_left - 1):
                return False
        return True
    if kind is list:
        return all(is_plain_json(item, levels_left - 1) for item in value)
    return False  # floats, tuples and anything else: the exact fallback decides


def _has_astral(text: str) -> bool:
    return any(ord(ch) > 0xFFFF for ch in text)


def plain_canonical_bytes(value: Any) -> bytes | None:
    """The fast path for a value already shown plain; None when orjson refuses it (a lone
    surrogate), for the caller to take the exact fallback, which reports it."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return None


def canonical_bytes(document: Any) -> bytes:
    """Serialise any JSON value per RFC 8785; an InputError for a value JCS refuses."""
    if is_plain_json(document):
        encoded = plain_canonical_bytes(document)
        if encoded is not None:
            return encoded
    return _reference_bytes(document)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
