"""The observation record (schemas/observation-record.schema.json): one canonical JSON object
per NDJSON line.

Validation here is hand-written rather than jsonschema because it runs once per record on hot
paths (millions per chunk), which keep records as dicts; `schemas/observation-record.schema.json`
states the same rules and a test checks that both accept and reject the same records.
`ObservationRecord` is the typed view of one record for code that reads its fields by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal, get_args

from ..canonical import MAX_SAFE_INTEGER
from ..digests import PREFIXED_SHA256_RE
from ..errors import MalformedDocumentError
from ..timeutil import is_rfc3339_timestamp

# The probe types and record kinds, once: the literal types serve the typed (msgspec) decoders,
# the tuples the hand validator and its messages.
ProbeType = Literal[
    "uprobe",
    "uretprobe",
    "usdt",
    "fentry",
    "fexit",
    "tracepoint",
    "raw_tracepoint",
    "kprobe",
    "kretprobe",
    "unknown",
]
RecordKind = Literal["function", "file", "exec", "net", "tls"]
PROBE_TYPES: Final[tuple[str, ...]] = get_args(ProbeType)
KINDS: Final[tuple[str, ...]] = get_args(RecordKind)

REQUIRED_FIELDS: Final = ("node_hash", "function_name", "probe_type", "observed_at")

# The record's fields by type, public: the writer's fast path (evidence/encoding.py) classifies
# fields by them.
STRING_FIELDS: Final = (
    "function_name",
    "purl",
    "comm",
    "binary_path",
    "build_id",
    "container_id",
    "pod_name",
    "namespace",
    "host",
)
TIME_FIELDS: Final = ("observed_at", "first_observed_at", "last_observed_at")
INT_FIELDS: Final = ("count", "pid")
ALLOWED_FIELDS: Final = frozenset(
    (
        *REQUIRED_FIELDS,
        *STRING_FIELDS,
        *TIME_FIELDS,
        *INT_FIELDS,
        "kind",
        "details",
        "image_digest",
    )
)


class ObservationError(MalformedDocumentError):
    """An observation record breaks the record format."""


# Levels of objects and arrays allowed in `details`, itself included: kind-specific details are
# shallow (path, argv, address and port), and hostile nesting would exhaust the recursion of the
# canonical serialiser and of the JSON Schema validator. The schema states the same bound as its
# chain of `details_value_<n>` definitions (a test keeps them equal); every fast path of the
# record decides `details` with `details_problem`.
MAX_DETAILS_DEPTH: Final = 8


def details_problem(details: Any) -> str | None:
    """Why a record's `details` value (an object) cannot be in a record, or None."""
    return _details_problem(details, MAX_DETAILS_DEPTH)


def _details_problem(value: Any, levels_left: int) -> str | None:
    """Why a value inside `details` cannot be in a record, or None."""
    if isinstance(value, float):
        return "records must not contain floating-point numbers"
    if isinstance(value, int) and not isinstance(value, bool):
        # Beyond MAX_SAFE_INTEGER JSON parses but cannot be written canonically (RFC 8785):
        # refused here, not at sealing.
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return None
        return "integers must lie within ±(2**53 - 1) (RFC 8785); write larger values as strings"
    if isinstance(value, dict | list):
        if levels_left == 0:
            return f"nested deeper than {MAX_DETAILS_DEPTH} levels of objects and arrays"
        for item in value.values() if isinstance(value, dict) else value:
            reason = _details_problem(item, levels_left - 1)
            if reason is not None:
                return reason
    return None


def validate_record(
    record: Any,
    source: str | Path | None = None,
    line: int | None = None,
    *,
    default_probe_type: bool = True,
) -> dict[str, Any]:
    """Check one record; return it with `probe_type` defaulted to `unknown` when absent.

    Raises ObservationError naming the file, line and field.
    """

    def fail(message: str, field: str | None = None) -> ObservationError:
        return ObservationError(message, path=source, line=line, field=field)

    if not isinstance(record, dict):
        raise fail(f"expected a JSON object, found {type(record).__name__}")
    if default_probe_type and "probe_type" not in record:
        record["probe_type"] = "unknown"
    for name in REQUIRED_FIELDS:
        if name not in record:
            raise fail("required field is missing", name)
    unknown = record.keys() - ALLOWED_FIELDS
    if unknown:
        raise fail(f"unknown field (allowed: {', '.join(sorted(ALLOWED_FIELDS))})", min(unknown))
    node_hash = record["node_hash"]
    if not isinstance(node_hash, str) or not PREFIXED_SHA256_RE.match(node_hash):
        raise fail("expected 'sha256:' followed by 64 lowercase hex digits", "node_hash")
    if record["probe_type"] not in PROBE_TYPES:
        raise fail(
            f"unknown probe type {record['probe_type']!r}; expected one of {', '.join(PROBE_TYPES)}",
            "probe_type",
        )
    # Optional fields are omitted, never null: a null would pass here and break readers later
    # (record_count(None)), so every present field is checked, null or not.
    for name in STRING_FIELDS:
        if name in record and not isinstance(record[name], str):
            raise fail("expected a string", name)
    if not record["function_name"]:
        raise fail("must not be empty", "function_name")
    for name in TIME_FIELDS:
        if name in record and not is_rfc3339_timestamp(record[name]):
            raise fail("expected an RFC 3339 timestamp such as 2026-01-23T00:00:00.000000Z", name)
    for name in INT_FIELDS:
        if name in record:
            value = record[name]
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 0 <= value <= MAX_SAFE_INTEGER
            ):
                raise fail("expected a non-negative integer (at most 2**53 - 1)", name)
    if record.get("count") == 0:
        raise fail("must be at least 1", "count")
    if "kind" in record and record["kind"] not in KINDS:
        raise fail(f"expected one of {', '.join(KINDS)}", "kind")
    if "image_digest" in record:
        digest = record["image_digest"]
        if not isinstance(digest, str) or not PREFIXED_SHA256_RE.match(digest):
            raise fail("expected 'sha256:' followed by 64 lowercase hex digits", "image_digest")
    if "details" in record:
        if not isinstance(record["details"], dict):
            raise fail("expected a JSON object", "details")
        # Every other field has a checked type; only details can hide floats, huge integers and
        # deep nesting.
        reason = details_problem(record["details"])
        if reason is not None:
            raise fail(reason, "details")
    return record


def record_count(record: Mapping[str, Any]) -> int:
    count = record.get("count", 1)
    return int(count)


@dataclass(frozen=True)
class ObservationRecord:
    node_hash: str
    function_name: str
    probe_type: str
    observed_at: str
    first_observed_at: str | None = None
    last_observed_at: str | None = None
    count: int | None = None
    pid: int | None = None
    kind: str | None = None
    purl: str | None = None
    comm: str | None = None
    binary_path: str | None = None
    build_id: str | None = None
    container_id: str | None = None
    pod_name: str | None = None
    namespace: str | None = None
    host: str | None = None
    image_digest: str | None = None
    # Open by design: kind-specific values (path, argv, address), float-free and shallow.
    details: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(
        cls, data: Any, source: str | Path | None = None, line: int | None = None
    ) -> ObservationRecord:
        """A record as the schema states it: `probe_type` required (the NDJSON readers default
        it to `unknown` before this point, as `validate_record` does by default)."""
        record = dict(data) if isinstance(data, dict) else data
        return cls(**validate_record(record, source, line, default_probe_type=False))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None:
                out[item.name] = dict(value) if item.name == "details" else value
        return out
