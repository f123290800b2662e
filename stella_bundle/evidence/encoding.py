"""Validated canonical NDJSON lines for records, fast for the records a collector writes.

`encode_record` is `validate_record` + `canonical_bytes` with two fast accept paths, tried in
turn:

- the compiled encoder (`_record.c`, built by hatch_build.py; `ENCODER_STATUS` says whether it
  is in use, `STELLA_RECORD_ENCODER=python` turns it off): a record without `details` whose
  fields are all of the toolkit's own forms is checked and written in one C pass (~1 µs);
- a record whose every field has the expected plain type and form (what the collector produces)
  is checked once per key set ("shape") and serialised by canonical.py's fast path, whose
  plainness those per-field checks establish (`details` through `is_plain_json`).

Both only accept; anything else, including every invalid record, takes the reference path, so
errors and bytes are the reference's. The field lists, probe types, kinds and bounds are
formats/record.py's, handed to the C encoder here. A property test
(tests/evidence/test_evidence_encoding.py) proves every path gives the reference's bytes and
accepts only records the reference accepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ..canonical import MAX_SAFE_INTEGER, canonical_bytes, is_plain_json, plain_canonical_bytes
from ..digests import PREFIXED_SHA256_RE
from ..formats.record import (
    INT_FIELDS,
    KINDS,
    MAX_DETAILS_DEPTH,
    PROBE_TYPES,
    STRING_FIELDS,
    TIME_FIELDS,
    validate_record,
)
from ..native import load_compiled
from ..timeutil import is_rfc3339_timestamp

_STRING, _TIME, _INT, _NODE_HASH, _PROBE, _KIND, _DETAILS, _IMAGE = range(8)
_FIELD_CLASS: Final[dict[str, int]] = {
    **dict.fromkeys(STRING_FIELDS, _STRING),
    **dict.fromkeys(TIME_FIELDS, _TIME),
    **dict.fromkeys(INT_FIELDS, _INT),
    "node_hash": _NODE_HASH,
    "probe_type": _PROBE,
    "kind": _KIND,
    "details": _DETAILS,
    "image_digest": _IMAGE,
}
_REQUIRED: Final = frozenset(("node_hash", "function_name", "probe_type", "observed_at"))
_PROBE_TYPES: Final = frozenset(PROBE_TYPES)
_KINDS: Final = frozenset(KINDS)
_node_hash_match = PREFIXED_SHA256_RE.match
_image_digest_match = PREFIXED_SHA256_RE.match

# Valid node hashes seen recently: a function map has few nodes, each observed many times.
_known_node_hashes: set[str] = set()
_NODE_HASH_CACHE_LIMIT: Final = 65536

# Valid `YYYY-MM-DDTHH:MM:SS` prefixes seen recently: a stream of records shares few seconds,
# so the calendar check runs once per second of observations, not once per record.
_second_cache: dict[str, bool] = {}
_SECOND_CACHE_LIMIT: Final = 65536


_fraction_and_zone = re.compile(r"\.[0-9]{6}Z").fullmatch


def _timestamp_ok(value: Any) -> bool:
    # The toolkit's own form only (`…SS.ffffffZ`); anything else takes the reference path.
    if len(value) != 27 or _fraction_and_zone(value, 19) is None:
        return False
    prefix = value[:19]
    known = _second_cache.get(prefix)
    if known is None:
        known = is_rfc3339_timestamp(prefix + ".000000Z")
        if len(_second_cache) >= _SECOND_CACHE_LIMIT:
            _second_cache.clear()
        _second_cache[prefix] = known
    return known


class _Shape:
    """What a record with these keys (in this order) must hold to be accepted quickly.

    A collector emits few distinct key sets, so the per-key decisions are made once per shape
    and a record is checked with one C-level type comparison plus its value checks.
    """

    __slots__ = ("details", "has_count", "has_image", "has_kind", "int_keys", "time_keys", "types")

    def __init__(self, keys: tuple[str, ...]) -> None:
        classes = [_FIELD_CLASS[key] for key in keys]
        self.types = tuple(int if c == _INT else dict if c == _DETAILS else str for c in classes)
        self.time_keys = tuple(k for k, c in zip(keys, classes, strict=True) if c == _TIME)
        self.int_keys = tuple(k for k, c in zip(keys, classes, strict=True) if c == _INT)
        self.has_count = "count" in keys
        self.has_kind = "kind" in keys
        self.has_image = "image_digest" in keys
        self.details = "details" in keys


_UNUSABLE: Final = object()  # a key set the fast path does not handle
_shapes: dict[tuple[str, ...], Any] = {}
_SHAPE_CACHE_LIMIT: Final = 4096


# (keys, shape) of the previous record, replaced as one object so that writers in several
# threads never pair one record's keys with another's shape.
_last_shape: tuple[tuple[str, ...], Any] = ((), _UNUSABLE)


def _shape_for(keys: tuple[str, ...]) -> Any:
    global _last_shape
    shape = _shapes.get(keys) or _learn_shape(keys)
    _last_shape = (keys, shape)
    return shape


def _learn_shape(keys: tuple[str, ...]) -> Any:
    # Unknown fields or a required field missing: the reference decides.
    usable = _REQUIRED.issubset(keys) and all(key in _FIELD_CLASS for key in keys)
    shape = _Shape(keys) if usable else _UNUSABLE
    if len(_shapes) >= _SHAPE_CACHE_LIMIT:
        _shapes.clear()
    _shapes[keys] = shape
    return shape


def _fast_accept(record: Any) -> bool:
    if type(record) is not dict:
        return False
    keys = tuple(record)
    # Consecutive records nearly always share their key set: compare before hashing.
    last_keys, last_shape = _last_shape
    shape = last_shape if keys == last_keys else _shape_for(keys)
    if shape is _UNUSABLE or tuple(map(type, record.values())) != shape.types:
        return False
    node_hash = record["node_hash"]
    if node_hash not in _known_node_hashes:
        if _node_hash_match(node_hash) is None:
            return False
        if len(_known_node_hashes) >= _NODE_HASH_CACHE_LIMIT:
            _known_node_hashes.clear()
        _known_node_hashes.add(node_hash)
    if not record["function_name"]:
        return False
    if record["probe_type"] not in _PROBE_TYPES:
        return False
    for key in shape.time_keys:
        if not _timestamp_ok(record[key]):
            return False
    for key in shape.int_keys:
        value = record[key]
        if value < 0 or value > MAX_SAFE_INTEGER:
            return False
    if shape.has_count and record["count"] == 0:
        return False
    if shape.has_kind and record["kind"] not in _KINDS:
        return False
    if shape.has_image:
        digest = record["image_digest"]
        if digest not in _known_node_hashes:  # the same cache: both are sha256:<64 hex>
            if _image_digest_match(digest) is None:
                return False
            if len(_known_node_hashes) >= _NODE_HASH_CACHE_LIMIT:
                _known_node_hashes.clear()
            _known_node_hashes.add(digest)
    # Nesting within the record format's bound (deeper takes the reference path, which refuses).
    return not shape.details or is_plain_json(record["details"], MAX_DETAILS_DEPTH)


def _compiled_encoder() -> tuple[Callable[[Any], bytes | None] | None, str]:
    """The C encoder's `encode`, configured with the record format's rules, and its status."""
    module, status = load_compiled(
        f"{__package__}._record",
        Path(__file__).with_name("_record.c"),
        "STELLA_RECORD_ENCODER",
        "the C record encoder",
    )
    if module is None:
        return None, status
    fields = tuple(
        (name, _FIELD_CLASS[name], name in _REQUIRED, _LEAST.get(name, 0))
        for name in sorted(_FIELD_CLASS)
    )
    encoder = module.Encoder(fields, _PROBE_TYPES, _KINDS, MAX_SAFE_INTEGER)
    return encoder.encode, status


# The least value of an integer field and the least length of a string field (else 0).
_LEAST: Final = {"count": 1, "function_name": 1}

# The C encoder's `encode(record)`: the canonical line, or None for the Python paths to decide.
compiled_encode, ENCODER_STATUS = _compiled_encoder()


def encode_record(record: Any, source: str | Path | None = None, line: int | None = None) -> bytes:
    """The canonical JSON line (without newline) of a valid record; ObservationError otherwise."""
    if compiled_encode is not None:
        encoded = compiled_encode(record)
        if encoded is not None:
            return encoded
    if _fast_accept(record):
        encoded = plain_canonical_bytes(record)
        if encoded is not None:
            return encoded
        # None: a lone surrogate, which the reference path reports properly.
    return canonical_bytes(validate_record(record, source, line))
